"""Issue #15, data part: each reported example, as a regression test.

7. empty or fully skipped data is an ``EmptyDatasetError`` naming the file and the skip counts
   (every loader, custom ones, the Python API and the ``gpt2chat`` commands);
8. JSON nested deeper than the recursion limit is an error naming the file and the line;
9. values of the wrong type are never converted (a string split into characters, a dict
   stringified): an error naming the file and the record, or (Persona-Chat's JSON, whose bad
   dialogues are skipped) a counted skip;
3. a lone UTF-16 surrogate (``"\\ud800"``) is treated like any other invalid text of the loader.
"""

from __future__ import annotations

import json
import logging

import datasets
import pytest

from gpt2chat.data import (
    _CUSTOM,
    DataFormatError,
    EmptyDatasetError,
    finalize_dialogues,
    load_dialogues,
    register_dataset,
)
from gpt2chat.data.blended_skill_talk import load_blended_skill_talk
from gpt2chat.data.chitchat import load_chitchat, split_of
from gpt2chat.data.daily_dialog import load_daily_dialog
from gpt2chat.data.empathetic_dialogues import REQUIRED_COLUMNS, load_empathetic_dialogues
from gpt2chat.data.jsonl import load_jsonl
from gpt2chat.data.persona_chat import load_persona_chat

DEEP = "[" * 100_000 + "]" * 100_000
GOOD = {"utterances": ["Hello there.", "Hi!"]}


def lines(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- 7. no dialogue at all ------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n", "   \n\t\n"])
def test_empty_jsonl(tmp_path, content):
    path = tmp_path / "chats.jsonl"
    path.write_text(content)
    with pytest.raises(EmptyDatasetError, match=r"chats/train: no dialogues in .*chats\.jsonl \("):
        load_jsonl("train", path)
    with pytest.raises(ValueError, match=r"chats\.jsonl"):  # the Python API, any split
        load_dialogues("jsonl", "validation", path)


def test_jsonl_whose_dialogues_are_all_skipped_counts_why(tmp_path):
    path = lines(tmp_path / "c.jsonl", {"utterances": ["Only one."]}, {"utterances": ["", "  "]})
    pattern = (
        r"no dialogues in .*c\.jsonl \(skipped: 2 empty messages dropped, 2 dialogues with fewer "
        r"than 2 utterances\)"
    )
    with pytest.raises(EmptyDatasetError, match=pattern):
        load_jsonl("train", path)


def test_daily_dialog_without_eou(tmp_path):
    path = tmp_path / "dialogues_train.txt"
    path.write_text("Hello , how are you ?\nFine , thanks .\n")
    with pytest.raises(
        EmptyDatasetError,
        match=r"daily_dialog/train: no dialogues in .*dialogues_train\.txt \(skipped: 2 lines "
        r"without '__eou__'",
    ):
        load_daily_dialog("train", path)


def test_persona_chat_text_without_tabs_or_numbers(tmp_path):
    path = tmp_path / "train_self_original_no_cands.txt"
    path.write_text("hello there\nno tab on this line either\n3 no tab\n")
    with pytest.raises(
        EmptyDatasetError,
        match=r"persona_chat/train: no dialogues in .*no_cands\.txt \(skipped: 3 lines not in "
        r"Persona-Chat's format",
    ):
        load_persona_chat("train", path)


def test_empathetic_dialogues_header_only(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n")
    with pytest.raises(EmptyDatasetError, match=r"train\.csv \(it is empty"):
        load_empathetic_dialogues("train", path)
    path.write_text(",".join(REQUIRED_COLUMNS) + "\nhit:1,x,sad,p,1,hi\nhit:1,1\n")
    with pytest.raises(
        EmptyDatasetError,
        match=r"skipped: 1 rows whose utterance_idx is not an integer, 1 rows with too few",
    ):
        load_empathetic_dialogues("train", path)


@pytest.mark.parametrize(("text", "name"), [("[]", "train.json"), ("", "train.jsonl")])
def test_blended_skill_talk_empty(tmp_path, text, name):
    (tmp_path / name).write_text(text)
    with pytest.raises(EmptyDatasetError, match=rf"blended_skill_talk/train: .*{name} \("):
        load_blended_skill_talk("train", tmp_path)


def test_chitchat_empty_and_other_splits_only(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text("{}")
    with pytest.raises(EmptyDatasetError, match=r"dataset\.json \(it is empty"):
        load_chitchat("train", path)
    conv = {"messages": [[{"text": "Hi", "sender": "a"}], [{"text": "Hey", "sender": "b"}]]}
    path.write_text(json.dumps({"x": conv}))
    other = next(s for s in ("train", "validation", "test") if s != split_of("x", 0.3, 0.3))
    with pytest.raises(EmptyDatasetError, match=r"skipped: 1 conversations of the other splits"):
        load_chitchat(other, path, validation_fraction=0.3, test_fraction=0.3)


def test_skip_counts_of_the_loader_are_in_the_description(tmp_path):
    path = tmp_path / "dialogues_train.txt"
    path.write_text("Hi . __eou__ Hello . __eou__\nnot a dialogue\n")
    ds = load_daily_dialog("train", path)
    assert ds.info.description == (
        "daily_dialog/train: 1 dialogues, 2 utterances; skipped: 1 lines without '__eou__' "
        "(not DailyDialog dialogues)"
    )


def test_empty_data_is_not_cached(tmp_path):
    """The cached path raises the same error and leaves no cache entry behind."""
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    cache = tmp_path / "cache"
    for _ in range(2):
        with pytest.raises(EmptyDatasetError, match=r"empty\.jsonl"):
            load_dialogues("jsonl", "train", path, cache_dir=cache)
    assert not list(cache.rglob("*.arrow")) and not list(cache.rglob("*.tmp"))


def test_custom_loaders_get_the_check(tmp_path):
    def with_finalize(split, data_dir, normalize=True, **options):
        return finalize_dialogues([], source="mine", split=split, files=[data_dir])

    def without(split, data_dir, normalize=True, **options):
        return datasets.Dataset.from_dict({"utterances": [], "source": []})

    register_dataset("mine_finalize", with_finalize)
    register_dataset("mine_plain", without)
    try:
        with pytest.raises(EmptyDatasetError, match=rf"mine/test: no dialogues in {tmp_path}"):
            load_dialogues("mine_finalize", "test", tmp_path)
        with pytest.raises(EmptyDatasetError, match=r"mine_plain/test: the loader returned no"):
            load_dialogues("mine_plain", "test", tmp_path)
    finally:
        _CUSTOM.pop("mine_finalize")
        _CUSTOM.pop("mine_plain")


def test_train_frac_uses_the_splits_that_have_dialogues(tmp_path, caplog):
    lines(tmp_path / "train.jsonl", GOOD, GOOD, GOOD, GOOD)
    (tmp_path / "validation.jsonl").write_text("")
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_dialogues("jsonl", "train", tmp_path, train_frac=0.5)
    assert len(ds) == 2
    assert "no dialogue in its 'validation' split" in caplog.text


# --- 8. nesting deeper than the recursion limit, and other undecodable JSON -----------------


def test_deep_jsonl_line(tmp_path):
    path = lines(tmp_path / "deep.jsonl", GOOD, '{"utterances": ' + DEEP + "}")
    with pytest.raises(DataFormatError, match=r"deep\.jsonl, line 2: JSON nested too deeply"):
        load_jsonl("train", path)


def test_nesting_just_under_the_limit_is_a_type_error_not_a_crash(tmp_path):
    """A value deep enough to decode but not to ``repr`` is described in 3 levels."""
    path = lines(tmp_path / "d.jsonl", '{"utterances": ["a", ' + "[" * 900 + "]" * 900 + "]}")
    with pytest.raises(
        DataFormatError, match=r"d\.jsonl, line 1: utterances\[1\] .*\[\[\[\.\.\.\]"
    ):
        load_jsonl("train", path)


def test_long_integer(tmp_path):
    path = lines(tmp_path / "n.jsonl", GOOD, '{"utterances": ["a", "b"], "id": ' + "7" * 5000 + "}")
    with pytest.raises(DataFormatError, match=r"n\.jsonl, line 2: invalid JSON \(an integer of"):
        load_jsonl("train", path)


def test_deep_persona_chat_json_names_the_line(tmp_path):
    path = tmp_path / "personachat_self_original.json"
    path.write_text('{"train": [\n  {"personality": []},\n  ' + DEEP + "\n]}")
    with pytest.raises(DataFormatError, match=r"original\.json, line 3: JSON nested too deeply"):
        load_persona_chat("train", path)


@pytest.mark.parametrize("as_list", [True, False])
def test_deep_blended_skill_talk(tmp_path, as_list):
    path = tmp_path / "train.json"
    path.write_text(("[\n" + DEEP + "\n]") if as_list else ("\n" + DEEP + "\n"))
    with pytest.raises(DataFormatError, match=r"train\.json, line 2: JSON nested too deeply"):
        load_blended_skill_talk("train", path)


def test_deep_chitchat(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{\n"a": {"messages": []},\n"b": ' + DEEP + "\n}")
    with pytest.raises(DataFormatError, match=r"dataset\.json, line 3: JSON nested too deeply"):
        load_chitchat("train", path)


def test_chitchat_key_that_is_not_a_string(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{\n[1]: {"messages": []}}')
    with pytest.raises(DataFormatError, match=r"dataset\.json, line 2: invalid JSON"):
        load_chitchat("train", path)


# --- 9. wrong types: never converted --------------------------------------------------------


def persona_chat_json(tmp_path, *dialogues):
    path = tmp_path / "personachat_self_original.json"
    path.write_text(json.dumps({"train": list(dialogues)}))
    return path


def pc_dialogue(history, reply="I'm fine.", personality=("I like tea.",)):
    utterances = [{"history": history, "candidates": ["no", reply]}]
    return {"personality": list(personality), "utterances": utterances}


def test_persona_chat_json_history_string_is_skipped_not_split(tmp_path, caplog):
    path = persona_chat_json(
        tmp_path, pc_dialogue("hello world"), pc_dialogue(["Hi!", "Hello.", "How are you?"])
    )
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_persona_chat("train", path, normalize=False)
    assert ds["utterances"] == [["Hi!", "Hello.", "How are you?", "I'm fine."]]
    assert "1 dialogues whose last `utterances` item has no `history` list" in ds.info.description
    assert "data['train'][0]" in caplog.text


@pytest.mark.parametrize(
    ("dialogue", "reason"),
    [
        (pc_dialogue("hello world"), "no `history` list of strings"),
        (pc_dialogue(["Hi", 3]), "no `history` list of strings"),
        (pc_dialogue(["Hi"], reply={"a": 1}), "no `candidates` list ending with a string"),
        (pc_dialogue(["Hi"], personality=[{"a": 1}]), "`personality` is not a list of strings"),
        ({"personality": "x", "utterances": "hello"}, "without a non-empty `utterances` list"),
        ("a string", "that are not JSON objects"),
    ],
)
def test_persona_chat_json_wrong_types_are_counted_skips(tmp_path, dialogue, reason):
    path = persona_chat_json(tmp_path, dialogue)
    with pytest.raises(
        EmptyDatasetError, match=rf"original\.json \(skipped: 1 dialogues .*{reason}"
    ):
        load_persona_chat("train", path)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"utterances": ["a", "b"], "persona": {"a": 1}}, r"`persona` must be a list"),
        ({"utterances": ["a", "b"], "persona": [{"a": 1}]}, r"`persona` must be a list"),
        ({"messages": [{"role": ["user"], "content": "hi"}]}, r"has role \['user'\]; expected"),
        ({"messages": [{"role": {}, "content": "hi"}]}, r"has role \{\}; expected"),
        ({"utterances": "hello world"}, r"`utterances` must be a list"),
    ],
)
def test_jsonl_wrong_types(tmp_path, row, match):
    path = lines(tmp_path / "bad.jsonl", GOOD, row)
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 2: .*" + match):
        load_jsonl("train", path)


def test_blended_skill_talk_wrong_types(tmp_path):
    item = {
        "personas": [["I ski."], [{"a": 1}]],
        "free_turker_utterance": "Hi.",
        "guided_turker_utterance": "Hello.",
        "dialog": [[0, "How are you?"], [1, "Fine."]],
    }
    path = lines(tmp_path / "train.jsonl", item)
    with pytest.raises(DataFormatError, match=r"line 1: `personas\[1\]` must be a list of str"):
        load_blended_skill_talk("train", path)
    item["personas"][1] = ["I nurse."]
    item["dialog"][0][0] = [[0]]
    lines(path, item)
    with pytest.raises(DataFormatError, match=r"line 1: `dialog\[0\]` must be a \[speaker, text\]"):
        load_blended_skill_talk("train", path)


def test_chitchat_prompt_is_not_stringified(tmp_path):
    conv = {
        "messages": [[{"text": "Hi", "sender": "a"}], [{"text": "Hey", "sender": "b"}]],
        "prompt": {"a": 1},
    }
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"c1": conv}))
    fractions = {"validation_fraction": 0.0, "test_fraction": 0.0}
    with pytest.raises(DataFormatError, match=r"conversation 'c1': `prompt` must be a string"):
        load_chitchat("train", path, **fractions)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"utterances": "hello world"}, r"`utterances` must be a list of strings, got 'hello"),
        ({"utterances": ["a", 1]}, r"`utterances` must be a list of strings"),
        ({"utterances": ["a", "b"], "persona": [{"a": 1}]}, r"`persona` must be a list"),
        ({"utterances": ["a", "b"], "prompt": 3}, r"`prompt` must be a string, got 3"),
        ("hello", r"`utterances` must be a list of strings, got None"),
    ],
)
def test_finalize_never_converts(record, match):
    features = {
        "persona": datasets.Sequence(datasets.Value("string")),
        "prompt": datasets.Value("string"),
    }
    with pytest.raises(DataFormatError, match=r"^mine/train, dialogue 1: " + match):
        finalize_dialogues(
            [{"utterances": ["x", "y"]}, record],
            source="mine",
            split="train",
            extra_features=features,
        )


# --- 3. lone UTF-16 surrogates --------------------------------------------------------------


@pytest.mark.parametrize(
    "row",
    [
        '{"utterances": ["Hi", "\\ud800"]}',
        '{"utterances": ["Hi", "ok"], "persona": ["I \\udfff"]}',
        '{"messages": [{"role": "user", "content": "a\\ud83d"}, '
        '{"role": "assistant", "content": "b"}]}',
        '{"messages": [{"role": "system", "content": "\\ud800"}]}',
    ],
)
def test_jsonl_lone_surrogate_names_file_and_line(tmp_path, row):
    path = lines(tmp_path / "s.jsonl", GOOD, row)
    with pytest.raises(DataFormatError, match=r"s\.jsonl, line 2: .*unpaired UTF-16 surrogate"):
        load_jsonl("train", path)


def test_a_surrogate_pair_is_one_character(tmp_path):
    path = lines(tmp_path / "ok.jsonl", '{"utterances": ["Hi \\ud83d\\ude00", "Yo"]}')
    assert load_jsonl("train", path, normalize=False)["utterances"] == [["Hi \U0001f600", "Yo"]]


def test_raw_surrogate_bytes_are_invalid_utf8(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"utterances": ["\xed\xa0\x80", "b"]}\n')
    with pytest.raises(DataFormatError, match=r"raw\.jsonl, line 2: bytes that are not valid"):
        load_jsonl("train", path)


def test_blended_skill_talk_lone_surrogate(tmp_path):
    item = {
        "personas": ["I ski."],
        "previous_utterance": ["Hi.", "Hello."],
        "free_messages": ["How are you?"],
        "guided_messages": ["Fine \ud800"],
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps([item]))
    with pytest.raises(DataFormatError, match=r"train\.json, item 0: `guided_messages\[0\]` hol"):
        load_blended_skill_talk("train", path)


def test_chitchat_lone_surrogate(tmp_path):
    messages = [[{"text": "Hi \udc00", "sender": "a"}], [{"text": "Hey", "sender": "b"}]]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"c1": {"messages": messages}}))
    with pytest.raises(DataFormatError, match=r"conversation 'c1': a message's `text` holds"):
        load_chitchat("train", path)
    # An id is not text of the dataset: one with a lone surrogate still has its split.
    messages[0][0]["text"] = "Hi"
    path.write_text(json.dumps({"c\ud800": {"messages": messages}}))
    ds = load_chitchat("train", path, validation_fraction=0.0, test_fraction=0.0)
    assert ds["utterances"] == [["Hi", "Hey"]]


def test_persona_chat_json_lone_surrogate_is_a_counted_skip(tmp_path):
    path = persona_chat_json(
        tmp_path, pc_dialogue(["Hi \ud800", "Hello."]), pc_dialogue(["Hi", "Hello", "Yo"])
    )
    ds = load_persona_chat("train", path, normalize=False)
    assert ds["utterances"] == [["Hi", "Hello", "Yo", "I'm fine."]]
    assert "1 dialogues with a text holding an unpaired UTF-16 surrogate" in ds.info.description


def test_custom_loader_lone_surrogate():
    with pytest.raises(DataFormatError, match=r"a\.txt, dialogue 0: `utterances\[1\]` holds an"):
        finalize_dialogues(
            [{"utterances": ["Hi", "\ud800"]}], source="mine", split="train", files=["a.txt"]
        )


def test_prepare_dataset_on_no_dialogue_is_a_clear_error(chat_tokenizer):
    """The Python API below load_dialogues: an empty Dataset (a re-split's empty part, a
    filter that kept nothing) is an error, not a KeyError from the statistics."""
    from gpt2chat import prepare_dataset

    empty = datasets.Dataset.from_dict({"utterances": [["a", "b"]], "source": ["x"]}).select([])
    with pytest.raises(EmptyDatasetError, match=r"`dialogues` is empty"):
        prepare_dataset(empty, chat_tokenizer, max_len=64)
