"""Your own dialogues: a JSON-lines file, one dialogue per line.

Each non-blank line is one JSON object in either format::

    {"utterances": ["Hi!", "Hello, how are you?", "Fine, thanks."], "persona": ["I like tea."]}
    {"messages": [{"role": "system", "content": "You are a friendly barista."},
                  {"role": "user", "content": "Hi!"},
                  {"role": "assistant", "content": "Hello! What can I get you?"}]}

``utterances``: the speakers alternate and the first one is ``<sp1>``.

``messages`` (the chat format of OpenAI and of ``transformers`` chat templates): ``user`` is
``<sp1>`` and ``assistant`` is ``<sp2>``, the bot side. A first ``system`` message becomes the
``persona`` column (a one-sentence list, after the sentences of a ``persona`` key if the line
has one); a ``system`` message anywhere else, or any other role, is an error. Consecutive
messages of the same role are merged into one utterance (joined with a space), and a dialogue
that opens with ``assistant`` messages loses them, so that ``assistant`` always stays ``<sp2>``;
both are counted and logged.

In both formats empty messages are dropped before merging (dropping one would otherwise swap
the speakers of all the following ones), an optional ``persona`` key (a list of strings, or one
string: a one-sentence persona) is kept, and other keys are ignored.

A line that is not a dialogue in one of these formats is an error naming the file and the line:
invalid JSON (nesting too deep included), a value of the wrong type (text is never converted: a
string where a list is expected is not split into characters), a text holding an unpaired UTF-16
surrogate (``"\\ud800"``, which is not valid Unicode). A file without any dialogue is an error too.

The ``source`` column is the file's stem (``my_chats`` for ``my_chats.jsonl``), or the folder's
name when ``data_dir`` is a folder holding ``train.jsonl``..., so that per-source statistics tell
your files apart; the ``source`` argument overrides it.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from .base import (
    DataFormatError,
    check_split,
    check_text,
    describe,
    read_text,
    where,
)
from .cache import cached_dialogues
from .download import pop_cache_dir
from .json_input import parse_json

logger = logging.getLogger(__name__)

_SPLIT_FILES = {
    "train": ("train.jsonl",),
    "validation": ("validation.jsonl", "valid.jsonl", "dev.jsonl"),
    "test": ("test.jsonl",),
}
_ROLES = {"user": 0, "assistant": 1}
_EXTRA_FEATURES = {"persona": datasets.Sequence(datasets.Value("string"))}


def load_jsonl(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    normalize: bool = True,
    path: str | Path | None = None,
    source: str | None = None,
    **options: Any,
) -> datasets.Dataset:
    """Load dialogues from a JSON-lines file (see the module docstring for the line format).

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_dir: a ``.jsonl`` file, which is the data of the requested ``split``, or a folder
            holding ``train.jsonl``, ``validation.jsonl`` (or ``valid.jsonl``/``dev.jsonl``)
            and ``test.jsonl``.
        normalize: normalise the text (see :func:`gpt2chat.data.load_dialogues`).
        path: the ``.jsonl`` file to read; takes precedence over ``data_dir``.
        source: the value of the ``source`` column (default: the file stem, or the folder name
            when ``data_dir`` is a folder).
        **options: only ``cache_dir`` (accepted for :func:`gpt2chat.data.load_dialogues`,
            unused: nothing is downloaded).

    Returns:
        A ``datasets.Dataset`` with the columns ``utterances``, ``source`` and ``persona``
        (a list of sentences, empty when the line has none).

    Raises:
        ValueError: neither ``data_dir`` nor ``path`` is given.
        FileNotFoundError: the file (or the split's file in the folder) does not exist.
        DataFormatError: a line is not valid JSON or not a dialogue; the message names the
            file and the line. Its subclass ``EmptyDatasetError``: the file has no dialogue.
    """
    check_split(split)
    pop_cache_dir(options, "load_jsonl")
    file, default_source = _resolve_file(split, data_dir, path)
    skipped: Counter = Counter()
    return cached_dialogues(
        lambda: _read_records(file, skipped),
        source=source or default_source,
        split=split,
        files=[file],
        normalize=normalize,
        extra_features=_EXTRA_FEATURES,
        skipped=skipped,
    )


def _read_records(file: Path, skipped: Counter) -> list[dict[str, Any]]:
    """The file's dialogues; the messages it drops are counted in ``skipped``, by reason."""
    counts: Counter = Counter()
    records = []
    text = read_text(file)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        records.append(_parse_line(line, file, lineno, counts))
    dropped = {k: n for k, n in counts.items() if "dropped" in k}
    skipped.update(dropped)
    if dropped:
        logger.warning("%s: %s", file, ", ".join(f"{n} {why}" for why, n in dropped.items()))
    merged = {k: n for k, n in counts.items() if k not in dropped}
    if merged:
        logger.info("%s: %s", file, ", ".join(f"{n} {why}" for why, n in merged.items()))
    return records


def _resolve_file(
    split: str, data_dir: str | Path | None, path: str | Path | None
) -> tuple[Path, str]:
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"jsonl: `path` {file} is not a file.")
        return file, file.stem
    if data_dir is None:
        raise ValueError(
            "The 'jsonl' dataset reads your own file: pass `data_dir` (a .jsonl file, or a "
            "folder with train.jsonl, validation.jsonl, test.jsonl) or `path`."
        )
    root = Path(data_dir)
    if root.is_file():
        return root, root.stem
    if not root.is_dir():
        raise FileNotFoundError(
            f"jsonl: `data_dir` {root} does not exist (expected a .jsonl file or a folder)."
        )
    for name in _SPLIT_FILES[split]:
        if (root / name).is_file():
            return root / name, root.name
    raise FileNotFoundError(
        f"jsonl: no {split} file in {root}: expected {' or '.join(_SPLIT_FILES[split])}"
        + (
            f", or give the file {root / 'train.jsonl'} itself as `data_dir` (`gpt2chat train` "
            "then holds out the last --validation_split_percentage of its dialogues)."
            if split == "validation" and (root / "train.jsonl").is_file()
            else "."
        )
    )


def _parse_line(line: str, file: Path, lineno: int, counts: Counter) -> dict[str, Any]:
    loc = where(file, lineno)
    obj = parse_json(
        line,
        file,
        line=lineno,
        hint='Each line must be one JSON object such as {"utterances": [...]} or '
        '{"messages": [...]}.',
    )
    if not isinstance(obj, dict):
        raise DataFormatError(
            f"{loc}: expected a JSON object with `utterances` or `messages`, got "
            f"{type(obj).__name__}."
        )
    has_utts, has_msgs = "utterances" in obj, "messages" in obj
    if has_utts == has_msgs:
        found = describe(sorted(obj)) if obj else "no keys"
        what = "both" if has_utts else "neither"
        raise DataFormatError(
            f"{loc}: expected exactly one of the keys `utterances` (a list of strings) or "
            f"`messages` (a list of {{role, content}} objects); found {what} (keys: {found})."
        )
    persona = obj.get("persona", [])
    if isinstance(persona, str):
        persona = [persona]
    if not (isinstance(persona, list) and all(isinstance(p, str) for p in persona)):
        raise DataFormatError(
            f"{loc}: `persona` must be a list of strings, got {describe(persona)}."
        )
    persona = [check_text(p, loc, f"persona[{i}]") for i, p in enumerate(persona)]

    if has_utts:
        utts = obj["utterances"]
        if not isinstance(utts, list):
            raise DataFormatError(
                f"{loc}: `utterances` must be a list of strings, got {type(utts).__name__}."
            )
        turns = []
        for i, u in enumerate(utts):
            if not isinstance(u, str):
                raise DataFormatError(
                    f"{loc}: utterances[{i}] must be a string, got {type(u).__name__} "
                    f"({describe(u, 40)})."
                )
            turns.append((i % 2, check_text(u, loc, f"utterances[{i}]")))
        return {"utterances": _merge(turns, counts), "persona": persona}

    msgs = obj["messages"]
    if not isinstance(msgs, list):
        raise DataFormatError(
            f"{loc}: `messages` must be a list of {{role, content}} objects, got "
            f"{type(msgs).__name__}."
        )
    turns = []
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and "role" in m and "content" in m):
            raise DataFormatError(
                f"{loc}: messages[{i}] must be an object with `role` and `content`, got "
                f"{describe(m)}."
            )
        role, content = m["role"], m["content"]
        if not isinstance(content, str):
            raise DataFormatError(
                f"{loc}: messages[{i}].content must be a string, got {type(content).__name__}."
            )
        check_text(content, loc, f"messages[{i}].content")
        if role == "system":
            if i != 0:
                raise DataFormatError(
                    f"{loc}: messages[{i}] has role 'system'; only the first message may be a "
                    "system message (it becomes the persona)."
                )
            if content.strip():
                persona.append(content)
            continue
        if not isinstance(role, str) or role not in _ROLES:
            raise DataFormatError(
                f"{loc}: messages[{i}] has role {describe(role)}; expected 'user', 'assistant' or "
                "(first message only) 'system'."
            )
        turns.append((_ROLES[role], content))
    utterances = _merge(turns, counts, leading_speaker=0)
    return {"utterances": utterances, "persona": persona}


def _merge(
    turns: list[tuple[int, str]], counts: Counter, leading_speaker: int | None = None
) -> list[str]:
    """Drop empty texts, merge consecutive texts of one speaker, optionally force who starts."""
    merged: list[tuple[int, list[str]]] = []
    for speaker, text in turns:
        if not text.strip():
            counts["empty messages dropped"] += 1
            continue
        if merged and merged[-1][0] == speaker:
            merged[-1][1].append(text)
            counts["consecutive messages of one speaker merged"] += 1
        else:
            merged.append((speaker, [text]))
    if leading_speaker is not None and merged and merged[0][0] != leading_speaker:
        counts["opening assistant messages dropped (the user must speak first)"] += len(
            merged[0][1]
        )
        merged = merged[1:]
    return [" ".join(texts) for _, texts in merged]
