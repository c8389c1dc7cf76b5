"""Hostile inputs for the loaders' property tests: strategies and the invariant they check.

Every loader, given any file, either returns dialogues whose every utterance is a non-empty
``str`` made of the input's own text (after the documented normalisation), or raises a clear
error: a ``ValueError`` (or, for a missing split, ``FileNotFoundError``) whose one-line,
printable message names the file. Never another exception, never silently changed text.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import datasets
from hypothesis import event
from hypothesis import strategies as st

from gpt2chat.data.base import EmptyDatasetError

# Every code point, lone surrogates included, plus texts chosen to hit the loaders' rules.
CHARS = st.characters(exclude_categories=())
TEXT = st.one_of(
    st.text(CHARS, max_size=8),
    st.sampled_from(
        ["Hi.", "hello world", "", " ", "\t", "x\ny", "\ud800", "a\udfffb", "__ SILENCE __"]
    ),
)
#: Valid text (no surrogate), mostly not blank: files that load.
CLEAN_TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8),
    st.sampled_from(["Hi.", "hello world", "Fine , thanks .", "i ' m ok"]),
)
#: Placeholders replaced in the written text by a nesting this deep, or a 5000-digit integer.
MARKS = st.sampled_from(["@@deep3@@", "@@deep850@@", "@@deep990@@", "@@deep20000@@", "@@long@@"])
_MARK = re.compile(r'"@@(deep(\d+)|long)@@"')
#: A lone surrogate, as JSON writes it (``"\\ud800"``) or raw (invalid UTF-8 once written).
SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800 x"])
LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, MARKS)
ANY = st.recursive(
    LEAF,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(TEXT, kids, max_size=3),
    max_leaves=8,
)
#: What replaces a well-typed value in a hostile file.
HAZARD = st.one_of(MARKS, SURROGATES, ANY)


#: How hostile a generated file is: well-formed (it mostly loads), well-formed but for one
#: value replaced by a hazard, or hazards anywhere (wrong types, junk lines, raw bytes).
MODES = ("clean", "poisoned", "hostile")


def modes(build: Callable[[str], st.SearchStrategy]) -> st.SearchStrategy:
    """``build(mode)`` for each of :data:`MODES`."""
    return st.one_of(*(build(mode) for mode in MODES))


def text(mode: str) -> st.SearchStrategy:
    return TEXT if mode == "hostile" else CLEAN_TEXT


def maybe(strategy: st.SearchStrategy, mode: str = "hostile") -> st.SearchStrategy:
    """``strategy``; in a hostile file, sometimes a hazard instead."""
    return st.one_of(strategy, strategy, strategy, HAZARD) if mode == "hostile" else strategy


def poisoned(values: st.SearchStrategy, mode: str) -> st.SearchStrategy:
    """``values``; for a ``"poisoned"`` file, with one of its nodes (the whole value, a list
    item or a dict value) replaced by a hazard."""
    if mode != "poisoned":
        return values
    return st.tuples(values, st.integers(0, 1 << 16), HAZARD).map(lambda v: _replace(*v))


def _replace(value, n: int, hazard):
    value = copy.deepcopy(value)
    paths, todo = [], [((), value)]
    while todo:
        path, node = todo.pop()
        paths.append(path)
        if isinstance(node, dict):
            todo.extend(((*path, k), v) for k, v in node.items())
        elif isinstance(node, list):
            todo.extend(((*path, i), v) for i, v in enumerate(node))
    path = paths[n % len(paths)]
    if not path:
        return hazard
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = hazard
    return value


def render(value, ensure_ascii: bool = True) -> bytes:
    """``value`` as JSON bytes (UTF-8; a raw lone surrogate gives invalid UTF-8 bytes)."""

    def expand(m: re.Match) -> str:
        if m.group(1) == "long":
            return "1" * 5000
        depth = int(m.group(2))
        return "[" * depth + "]" * depth

    text = _MARK.sub(expand, json.dumps(value, ensure_ascii=ensure_ascii))
    return text.encode("utf-8", "surrogatepass")


def strings_in(value) -> set[str]:
    """Every string in a JSON value (keys included), without recursion."""
    found, todo = set(), [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            found.add(v)
        elif isinstance(v, dict):
            todo.extend(v)
            todo.extend(v.values())
        elif isinstance(v, (list, tuple)):
            todo.extend(v)
    return found


@contextlib.contextmanager
def caching_off():
    """Build datasets in memory (fast); the cached path is covered by the regression tests."""
    was = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was:
            datasets.enable_caching()


def check_error(err: BaseException, path: Path | str, where: str = "") -> None:
    """A clear error: one printable line naming ``path`` (followed by ``where``, a regex, for
    the errors about one line or record)."""
    message = str(err)
    assert str(path) in message, message
    assert "\n" not in message and "\r" not in message, message
    message.encode("utf-8")  # printable: no lone surrogate in the message itself
    if where and not isinstance(err, EmptyDatasetError):
        assert re.search(re.escape(str(path)) + where, message), message


def load_or_error(load: Callable[[], datasets.Dataset], path, where: str = ""):
    """``load()``'s dataset, or ``None`` once its error is checked; any other exception fails."""
    try:
        with caching_off():
            ds = load()
    except (ValueError, FileNotFoundError) as err:
        event(type(err).__name__)
        check_error(err, path, where)
        return None
    event("loaded")
    return ds


def _concatenation(tokens: list[str], pieces: set[tuple[str, ...]]) -> bool:
    """Whether ``tokens`` is a concatenation of ``pieces`` (the input texts' tokens)."""
    reach = [True] + [False] * len(tokens)
    for i in range(len(tokens)):
        if reach[i]:
            for j in range(i + 1, len(tokens) + 1):
                if tuple(tokens[i:j]) in pieces:
                    reach[j] = True
    return reach[-1]


def check_dialogues(
    ds: datasets.Dataset,
    normalize: bool,
    *,
    texts: Iterable[str] | None = None,
    raw: str | None = None,
) -> None:
    """Every dialogue has >= 2 non-empty ``str`` utterances; with ``normalize=False`` each
    utterance is input text with its whitespace collapsed: a concatenation of the JSON input's
    ``texts`` (consecutive messages of one speaker are merged), or made of the tokens of the
    ``raw`` text of a text file. Persona sentences are input strings, verbatim."""
    assert len(ds) > 0
    texts = set(texts or ())
    pieces = {tuple(t.split()) for t in texts if t.split()}
    for utterances in ds["utterances"]:
        assert len(utterances) >= 2
        for u in utterances:
            assert isinstance(u, str) and u.strip(), utterances
            u.encode("utf-8")
            if normalize:
                continue
            assert u == " ".join(u.split())
            if raw is not None:
                assert all(token in raw for token in u.split()), (u, raw)
            else:
                assert _concatenation(u.split(), pieces), (u, texts)
    if "persona" in ds.column_names and not normalize:
        for persona in ds["persona"]:
            for sentence in persona or ():
                assert isinstance(sentence, str)
                assert (sentence in texts) if raw is None else (sentence in raw), sentence
