"""Property-based tests: every loader on hostile files (see tests/data/hostile.py).

Dialogue-shaped JSON whose fields may be of a wrong type, text with any code point (lone
surrogates included, as ``\\ud800`` escapes or as raw invalid UTF-8), nesting deeper than
Python's recursion limit, 5000-digit numbers, arbitrary bytes: the loader returns dialogues made
of the input's text or raises a clear error naming the file (and the line or record).
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gpt2chat.data import load_dialogues
from gpt2chat.data.base import DataFormatError
from gpt2chat.data.blended_skill_talk import load_blended_skill_talk
from gpt2chat.data.cache import finalize_dialogues
from gpt2chat.data.chitchat import load_chitchat
from gpt2chat.data.daily_dialog import load_daily_dialog
from gpt2chat.data.empathetic_dialogues import REQUIRED_COLUMNS, load_empathetic_dialogues
from gpt2chat.data.jsonl import load_jsonl
from gpt2chat.data.persona_chat import load_persona_chat

from .hostile import (
    ANY,
    TEXT,
    caching_off,
    check_dialogues,
    check_error,
    load_or_error,
    maybe,
    modes,
    poisoned,
    render,
    strings_in,
    text,
)

FAST = settings(max_examples=150)
SPLITS = ("train", "validation", "test")
BLANK = st.sampled_from([b"", b"  ", b"\r", b"\t"])
BYTES = st.binary(max_size=24)
#: ``ensure_ascii``: mostly lone surrogates as ``\ud800`` escapes, sometimes raw (invalid UTF-8).
ASCII = st.sampled_from([True, True, True, False])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """One folder per module: each example overwrites its file."""
    return tmp_path_factory.mktemp("hostile")


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def _rendered(values: st.SearchStrategy, mode: str) -> st.SearchStrategy:
    """``(value, JSON bytes)``; a hostile file may hold raw lone surrogates (invalid UTF-8)."""
    ascii_ = ASCII if mode == "hostile" else st.just(True)
    return st.tuples(values, ascii_).map(lambda v: (v[0], render(*v)))


def _json_lines(objects: st.SearchStrategy, mode: str) -> st.SearchStrategy:
    """A JSON-lines file (LF or CRLF) of rendered objects and blank lines (a hostile file:
    arbitrary bytes too). Gives ``(texts, bytes)``."""
    rendered = _rendered(poisoned(objects, mode), mode)
    blank = BLANK.map(lambda b: (None, b))
    junk = (rendered, BYTES.map(lambda b: (None, b))) if mode == "hostile" else ()
    line = st.one_of(rendered, rendered, blank, *junk)
    drawn = st.tuples(
        st.lists(line, min_size=int(mode != "hostile"), max_size=4),
        st.sampled_from([b"\n", b"\r\n"]),
    )

    def join(d):
        lines, sep = d
        texts = set().union(*(strings_in(v) for v, _ in lines if v is not None))
        return texts, sep.join(b for _, b in lines)

    return drawn.map(join)


def _json_file(values: st.SearchStrategy, mode: str) -> st.SearchStrategy:
    """One JSON document: ``(texts, bytes)``."""
    return _rendered(poisoned(values, mode), mode).map(lambda v: (strings_in(v[0]), v[1]))


def _load_json(load: Callable, path, texts, normalize: bool, where: str = "") -> None:
    ds = load_or_error(load, path, where)
    if ds is not None:
        check_dialogues(ds, normalize, texts=texts)


# --- jsonl ----------------------------------------------------------------------------------


def _chat(texts: list[str], system: str | None) -> list[dict]:
    """A well-formed ``messages`` list: an optional system message, user and assistant."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": x} for i, x in enumerate(texts)]
    return ([{"role": "system", "content": system}] if system is not None else []) + messages


def jsonl_file(mode: str) -> st.SearchStrategy:
    t = text(mode)
    persona = maybe(st.one_of(st.lists(t, max_size=2), t), mode)
    if mode == "hostile":
        role = maybe(st.sampled_from(["user", "assistant", "system"]))
        message = maybe(st.fixed_dictionaries({"role": role, "content": maybe(t)}))
        utterances, messages = maybe(st.lists(t, max_size=4)), maybe(st.lists(message, max_size=4))
    else:
        utterances = st.lists(t, min_size=2, max_size=4)
        messages = st.builds(_chat, st.lists(t, min_size=2, max_size=4), st.none() | t)
    objects = st.one_of(
        st.fixed_dictionaries({"utterances": utterances}, optional={"persona": persona}),
        st.fixed_dictionaries({"messages": messages}, optional={"persona": persona}),
    )
    return _json_lines(st.one_of(objects, ANY) if mode == "hostile" else objects, mode)


@FAST
@given(drawn=modes(jsonl_file), normalize=st.booleans())
def test_jsonl_property(folder, drawn, normalize):
    texts, data = drawn
    path = write(folder / "hostile.jsonl", data)
    load = lambda: load_jsonl("train", path, normalize=normalize)  # noqa: E731
    _load_json(load, path, texts, normalize, r", line \d+: ")


# --- Persona-Chat JSON ----------------------------------------------------------------------


def persona_chat_json(mode: str) -> st.SearchStrategy:
    t = text(mode)
    turn = st.fixed_dictionaries(
        {
            "history": maybe(st.lists(t, max_size=4), mode),
            "candidates": maybe(st.lists(t, min_size=1, max_size=2), mode),
        }
    )
    dialogue = st.fixed_dictionaries(
        {"utterances": maybe(st.lists(maybe(turn, mode), min_size=1, max_size=2), mode)},
        optional={"personality": maybe(st.lists(t, max_size=2), mode)},
    )
    value = st.fixed_dictionaries(
        {"train": maybe(st.lists(maybe(dialogue, mode), max_size=4), mode)},
        optional={"valid": ANY},
    )
    return _json_file(st.one_of(value, ANY) if mode == "hostile" else value, mode)


@FAST
@given(drawn=modes(persona_chat_json), normalize=st.booleans())
def test_persona_chat_json_property(folder, drawn, normalize):
    texts, data = drawn
    path = write(folder / "personachat_self_original.json", data)
    load = lambda: load_persona_chat("train", path, normalize=normalize, format="json")  # noqa: E731
    _load_json(load, path, texts, normalize)


# --- BlendedSkillTalk -----------------------------------------------------------------------


def bst_item(mode: str) -> st.SearchStrategy:
    t = text(mode)
    speaker = maybe(st.sampled_from([0, 1, "x"]), mode)
    raw = st.fixed_dictionaries(
        {
            "personas": maybe(
                st.lists(maybe(st.lists(t, max_size=2), mode), min_size=2, max_size=2), mode
            ),
            "free_turker_utterance": maybe(t, mode),
            "guided_turker_utterance": maybe(t, mode),
            "dialog": maybe(
                st.lists(maybe(st.tuples(speaker, maybe(t, mode)).map(list), mode), max_size=4),
                mode,
            ),
        },
        optional={"context_dataset": maybe(t, mode)},
    )
    hf = st.fixed_dictionaries(
        {
            "personas": maybe(st.lists(t, max_size=2), mode),
            "previous_utterance": maybe(st.lists(t, max_size=2), mode),
            "free_messages": maybe(st.lists(t, max_size=3), mode),
            "guided_messages": maybe(st.lists(t, max_size=3), mode),
        },
        optional={"context": maybe(t, mode)},
    )
    return st.one_of(raw, hf, ANY) if mode == "hostile" else st.one_of(raw, hf)


def bst_file(mode: str) -> st.SearchStrategy:
    as_list = _json_file(st.lists(bst_item(mode), min_size=1, max_size=3), mode)
    return st.one_of(as_list, _json_lines(bst_item(mode), mode))


@FAST
@given(drawn=modes(bst_file), normalize=st.booleans())
def test_blended_skill_talk_property(folder, drawn, normalize):
    texts, data = drawn
    path = write(folder / "train.json", data)
    load = lambda: load_blended_skill_talk("train", path, normalize=normalize)  # noqa: E731
    _load_json(load, path, texts, normalize, r", (line|item) \d+: ")


# --- chitchat -------------------------------------------------------------------------------


def chitchat_file(mode: str) -> st.SearchStrategy:
    t = text(mode)
    if mode == "hostile":
        sender = maybe(st.sampled_from(["a", "b", "c"]))
        message = maybe(st.fixed_dictionaries({"text": maybe(t), "sender": sender}))
        messages = maybe(st.lists(maybe(st.lists(message, max_size=3)), max_size=4))
    else:  # two senders taking turns
        messages = st.lists(t, min_size=2, max_size=4).map(
            lambda texts: [[{"text": x, "sender": "ab"[i % 2]}] for i, x in enumerate(texts)]
        )
    conversation = st.fixed_dictionaries(
        {"messages": messages}, optional={"prompt": maybe(st.one_of(st.none(), t), mode)}
    )
    value = st.dictionaries(
        TEXT, maybe(conversation, mode), min_size=int(mode != "hostile"), max_size=4
    )
    return _json_file(st.one_of(value, ANY) if mode == "hostile" else value, mode)


@FAST
@given(
    drawn=modes(chitchat_file),
    split_fraction=st.sampled_from([("train", 0.0), ("train", 0.0)] + [(s, 0.4) for s in SPLITS]),
    normalize=st.booleans(),
)
def test_chitchat_property(folder, drawn, split_fraction, normalize):
    texts, data = drawn
    split, fraction = split_fraction
    path = write(folder / "dataset.json", data)
    fractions = {"validation_fraction": fraction, "test_fraction": fraction}
    load = lambda: load_chitchat(split, path, normalize=normalize, **fractions)  # noqa: E731
    _load_json(load, path, texts, normalize)


# --- the text formats -----------------------------------------------------------------------


def _one_line(t: str) -> str:
    return t.replace("\n", " ").replace("\r", " ")


def _text_file(line: Callable[[str], st.SearchStrategy]) -> st.SearchStrategy:
    """Text lines; a hostile file has lone surrogates (invalid UTF-8 once written) and
    arbitrary bytes too."""

    def build(mode: str) -> st.SearchStrategy:
        encoded = line(mode).map(lambda t: t.encode("utf-8", "surrogatepass"))
        junk = (encoded, BYTES) if mode == "hostile" else ()
        lines = st.one_of(encoded, encoded, BLANK, *junk)
        return st.lists(lines, min_size=int(mode != "hostile"), max_size=5).map(b"\n".join)

    return st.one_of(build("clean"), build("hostile"))


def _load_text(load: Callable, path, normalize: bool, raw: str) -> None:
    ds = load_or_error(load, path)
    if ds is not None:
        check_dialogues(ds, normalize, raw=raw)


def _decoded(data: bytes) -> str:
    return data.decode("utf-8-sig", "replace")


def daily_dialog_line(mode: str) -> st.SearchStrategy:
    t = text(mode).map(_one_line)
    clean = mode != "hostile"
    line = st.lists(t, min_size=2 * clean, max_size=4).map(
        lambda parts: " __eou__ ".join(parts) + " __eou__ "
    )
    return line if clean else st.one_of(line, t)


@FAST
@given(data=_text_file(daily_dialog_line), normalize=st.booleans())
def test_daily_dialog_property(folder, data, normalize):
    path = write(folder / "dialogues_train.txt", data)
    load = lambda: load_daily_dialog("train", path, normalize=normalize)  # noqa: E731
    _load_text(load, path, normalize, _decoded(data))


def persona_chat_line(mode: str) -> st.SearchStrategy:
    t = text(mode).map(lambda x: _one_line(x).replace("\t", " "))
    clean = mode != "hostile"
    numbers = st.sampled_from(["1", "2", "3"] if clean else ["1", "2", "x", "\u0661", ""])
    rest = st.one_of(
        t.map(lambda x: "your persona: " + x),
        t.map(lambda x: "partner's persona: " + x),
        st.lists(t, min_size=2 if clean else 1, max_size=4).map("\t".join),
    )
    return st.tuples(numbers, rest).map(" ".join)


@FAST
@given(data=_text_file(persona_chat_line), normalize=st.booleans())
def test_persona_chat_text_property(folder, data, normalize):
    path = write(folder / "train_self_original_no_cands.txt", data)
    load = lambda: load_persona_chat("train", path, normalize=normalize)  # noqa: E731
    _load_text(load, path, normalize, _decoded(data))


HEADER = ",".join(REQUIRED_COLUMNS) + ",selfeval,tags"


def _ed_conversation(conv: str, prompt: str, texts: list[str]) -> str:
    """A conversation's rows, speakers taking turns."""
    rows = [f"{conv},{i + 1},sad,{prompt},{1 + i % 2},{x},|," for i, x in enumerate(texts)]
    return "\n".join(rows)


def ed_row(mode: str) -> st.SearchStrategy:
    """A clean conversation's rows or, in a hostile file, a row of any fields."""
    t = text(mode).map(lambda x: _one_line(x).replace(",", "_comma_").replace('"', "'"))
    conversation = st.builds(
        _ed_conversation,
        st.sampled_from(["hit:1_conv:2", "hit:3_conv:4"]),
        t,
        st.lists(t, min_size=2, max_size=4),
    )
    if mode != "hostile":
        return conversation
    junk = st.lists(st.one_of(TEXT.map(_one_line), st.integers(-2, 5).map(str)), max_size=8)
    return st.one_of(conversation, junk.map(",".join))


@FAST
@given(
    header=st.sampled_from([HEADER, HEADER, HEADER, ",".join(REQUIRED_COLUMNS[:-1]), ""]),
    rows=_text_file(ed_row),
    crlf=st.booleans(),
    normalize=st.booleans(),
)
def test_empathetic_dialogues_property(folder, header, rows, crlf, normalize):
    data = header.encode() + b"\n" + rows
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    path = write(folder / "train.csv", data)
    raw = _decoded(data).replace("_comma_", ",")
    load = lambda: load_empathetic_dialogues("train", path, normalize=normalize)  # noqa: E731
    _load_text(load, path, normalize, raw)


# --- a custom loader: finalize_dialogues and load_dialogues ---------------------------------


def records(mode: str) -> st.SearchStrategy:
    t = text(mode)
    record = st.fixed_dictionaries(
        {"utterances": maybe(st.lists(t, max_size=4), mode)},
        optional={"persona": maybe(st.lists(t, max_size=2), mode)},
    )
    return poisoned(st.lists(maybe(record, mode), max_size=4), mode)


@FAST
@given(records=modes(records), normalize=st.booleans())
def test_custom_records_property(records, normalize):
    """What a custom loader hands to finalize_dialogues is checked the same way: no string is
    split into characters, nothing is stringified, no lone surrogate reaches Arrow."""
    features = {"persona": datasets.Sequence(datasets.Value("string"))}
    if not isinstance(records, list):  # a poisoned root
        records = [records]
    try:
        with caching_off():
            ds = finalize_dialogues(
                records,
                source="custom",
                split="train",
                normalize=normalize,
                extra_features=features,
                files=["my_data.bin"],
            )
    except DataFormatError as err:
        event(type(err).__name__)
        check_error(err, "my_data.bin", r"(, dialogue \d+: | \()")
        return
    event("loaded")
    check_dialogues(ds, normalize, texts=strings_in(records))


def test_custom_loader_without_finalize_dialogues(tmp_path):
    """A registered loader that returns an empty dataset on its own: an EmptyDatasetError from
    load_dialogues, for the split and with train_frac."""
    from gpt2chat.data import _CUSTOM, EmptyDatasetError, register_dataset

    def loader(split, data_dir, normalize=True, **options):
        return datasets.Dataset.from_dict({"utterances": [], "source": []})

    register_dataset("empty_custom", loader)
    try:
        for train_frac in (None, 0.5):
            with pytest.raises(
                EmptyDatasetError, match=r"empty_custom/\w+: the loader returned no"
            ):
                load_dialogues("empty_custom", "train", tmp_path, train_frac=train_frac)
    finally:
        _CUSTOM.pop("empty_custom")
