"""Persona-Chat: ParlAI's text files (with and without candidates), the JSON file, bad inputs."""

from __future__ import annotations

import json
import logging

import pytest

from gpt2chat import load_dialogues
from gpt2chat.data import persona_chat as pc
from gpt2chat.data.base import DataFormatError
from gpt2chat.data.persona_chat import load_persona_chat

from ..conftest import require_shared

# ParlAI's valid_self_original_no_cands.txt: numbered lines, "1" starts a dialogue.
NO_CANDS = [
    "1 your persona: i like to ski.",
    "2 your persona: i have two dogs.",
    "3 hi , how are you ?\ti'm great , just back from skiing .",
    "4 cool ! where ?\tin the alps . do you ski ?",
    "1 your persona: i am a nurse.",
    "2 __ SILENCE __\thello , anyone there ?",
    "3 yes , hi !\thi ! i work nights at the hospital .",
]
EXPECTED_NO_CANDS = [
    [
        "Hi, how are you?",
        "I'm great, just back from skiing.",
        "Cool! Where?",
        "In the alps. Do you ski?",
    ],
    ["Hello, anyone there?", "Yes, hi!", "Hi! I work nights at the hospital."],
]
PERSONAS = [["I like to ski.", "I have two dogs."], ["I am a nurse."]]

# ParlAI's <split>_self_original.txt: two more tab fields, an empty reward and candidates.
WITH_CANDS = [
    "1 your persona: i like cats.",
    "2 what pets do you have ?\ti have three cats .\t\ti like dogs|i have three cats .",
    "3 wow , names ?\ttom , tim and tam .\t\tno|tom , tim and tam .",
]
EXPECTED_WITH_CANDS = [
    ["What pets do you have?", "I have three cats.", "Wow, names?", "Tom, tim and tam."]
]

# Hugging Face's personachat_self_original.json: the gold reply is the last candidate.
JSON_DATA = {
    "train": [
        {
            "personality": ["i like to ski.", "i have two dogs."],
            "utterances": [
                {"candidates": ["no", "i'm great ."], "history": ["hi , how are you ?"]},
                {
                    "candidates": ["maybe", "in the alps ."],
                    "history": ["hi , how are you ?", "i'm great .", "where do you ski ?"],
                },
            ],
        },
        {
            "personality": ["i am a nurse."],
            "utterances": [
                {"candidates": ["x", "hello !"], "history": ["__ SILENCE __"]},
                {
                    "candidates": ["x", "i work nights ."],
                    "history": ["__ SILENCE __", "hello !", "hi , what do you do ?"],
                },
            ],
        },
    ],
    "valid": [
        {
            "personality": ["i read a lot."],
            "utterances": [
                {
                    "candidates": ["a", "b", "last reply ."],
                    "history": ["first .", "second .", "third ."],
                }
            ],
        }
    ],
}


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_no_cands_text_file(tmp_path):
    write_lines(tmp_path / "valid_self_original_no_cands.txt", NO_CANDS)
    ds = load_dialogues("persona_chat", "validation", tmp_path)
    assert ds["utterances"] == EXPECTED_NO_CANDS
    assert ds["persona"] == PERSONAS
    assert set(ds["source"]) == {"persona_chat"}
    assert ds.column_names == ["utterances", "source", "persona"]


def test_silence_is_dropped_and_counted(tmp_path, caplog):
    write_lines(tmp_path / "train_self_original_no_cands.txt", NO_CANDS)
    with caplog.at_level(logging.INFO, logger="gpt2chat.data"):
        ds = load_persona_chat("train", tmp_path)
    assert not any("SILENCE" in u for d in ds["utterances"] for u in d)
    assert "dropped 1 '__ SILENCE __' turn(s)" in caplog.text


def test_silence_in_the_middle_merges_the_neighbours(tmp_path, caplog):
    lines = ["1 your persona: i am shy.", "2 hi .\thello .", "3 __ SILENCE __\tare you there ?"]
    write_lines(tmp_path / "train_self_original_no_cands.txt", lines)
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_persona_chat("train", tmp_path)
    assert ds["utterances"] == [["Hi.", "Hello. Are you there?"]]
    assert "1 utterance(s) merged" in caplog.text


def test_with_candidates_text_file(tmp_path):
    write_lines(tmp_path / "test_self_original.txt", WITH_CANDS)
    ds = load_persona_chat("test", tmp_path)
    assert ds["utterances"] == EXPECTED_WITH_CANDS
    assert ds["persona"] == [["I like cats."]]


def test_no_cands_file_is_preferred_and_personachat_folder(tmp_path):
    folder = tmp_path / "personachat"
    write_lines(folder / "train_self_original.txt", WITH_CANDS)
    write_lines(folder / "train_self_original_no_cands.txt", NO_CANDS)
    assert load_persona_chat("train", tmp_path)["utterances"] == EXPECTED_NO_CANDS
    # A file as data_dir.
    ds = load_persona_chat("train", folder / "train_self_original.txt")
    assert ds["utterances"] == EXPECTED_WITH_CANDS


def test_partner_persona_lines_are_ignored(tmp_path):
    lines = [
        "1 your persona: i like to ski.",
        "2 partner's persona: i like to swim.",
        "3 hi !\thello !",
    ]
    write_lines(tmp_path / "train_self_original_no_cands.txt", lines)
    ds = load_persona_chat("train", tmp_path)
    assert ds["persona"] == [["I like to ski."]]
    assert ds["utterances"] == [["Hi!", "Hello!"]]


def test_json_keeps_the_last_reply(tmp_path):
    write_json(tmp_path / "personachat_self_original.json", JSON_DATA)
    ds = load_dialogues("persona_chat", "train", tmp_path)
    assert ds["utterances"] == [
        ["Hi, how are you?", "I'm great.", "Where do you ski?", "In the alps."],
        ["Hello!", "Hi, what do you do?", "I work nights."],
    ]
    assert ds["persona"] == [["I like to ski.", "I have two dogs."], ["I am a nurse."]]
    valid = load_persona_chat("validation", tmp_path)
    assert valid["utterances"] == [["First.", "Second.", "Third.", "Last reply."]]


def test_json_has_no_test_split(tmp_path):
    write_json(tmp_path / "personachat_self_original.json", JSON_DATA)
    with pytest.raises(FileNotFoundError, match=r"no 'test' split .*'train' and 'valid' only"):
        load_persona_chat("test", tmp_path)


def test_format_option(tmp_path):
    write_json(tmp_path / "personachat_self_original.json", JSON_DATA)
    write_lines(tmp_path / "train_self_original_no_cands.txt", NO_CANDS)
    assert load_persona_chat("train", tmp_path)["utterances"] == EXPECTED_NO_CANDS  # txt first
    assert len(load_persona_chat("train", tmp_path, format="json")["utterances"][0]) == 4
    assert load_persona_chat("train", tmp_path, format="txt")["utterances"] == EXPECTED_NO_CANDS
    with pytest.raises(ValueError, match=r"`format` must be 'txt', 'json'"):
        load_persona_chat("train", tmp_path, format="xml")
    (tmp_path / "train_self_original_no_cands.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_self_original_no_cands\.txt"):
        load_persona_chat("train", tmp_path, format="txt")


def test_no_data_dir_downloads(tmp_path, monkeypatch):
    folder = write_lines(tmp_path / "personachat" / "valid_self_original_no_cands.txt", NO_CANDS)
    monkeypatch.setattr(pc, "download_dataset", lambda name, cache_dir=None: folder.parent)
    assert load_persona_chat("validation")["utterances"] == EXPECTED_NO_CANDS


def test_missing_file_names_the_paths(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dialogues("persona_chat", "validation", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "valid_self_original_no_cands.txt") in message
    assert "personachat_self_original.json" in message


def test_malformed_lines_are_skipped_counted_and_logged(tmp_path, caplog):
    lines = [*NO_CANDS[:3], "4 a turn without a tab", "no number here\tat all", *NO_CANDS[3:]]
    write_lines(tmp_path / "train_self_original_no_cands.txt", lines)
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_persona_chat("train", tmp_path)
    assert ds["utterances"] == EXPECTED_NO_CANDS
    assert "skipped 2 line(s)" in caplog.text
    assert "line 4, line 5" in caplog.text
    assert "train_self_original_no_cands.txt" in caplog.text


def test_dialogue_with_fewer_than_two_utterances_is_counted(tmp_path):
    lines = [*NO_CANDS, "1 your persona: i am quiet.", "2 __ SILENCE __\thi ."]
    write_lines(tmp_path / "train_self_original_no_cands.txt", lines)
    ds = load_persona_chat("train", tmp_path)
    assert len(ds) == 2
    assert "1 dialogues with fewer than 2 utterances" in ds.info.description


def test_undecodable_bytes_name_file_and_line(tmp_path):
    path = tmp_path / "train_self_original_no_cands.txt"
    path.write_bytes("\n".join(NO_CANDS[:3]).encode() + b"\n4 caf\xe9\tok\n")
    with pytest.raises(DataFormatError, match=r"train_self_original_no_cands\.txt, line 4"):
        load_persona_chat("train", tmp_path)


def test_invalid_json_names_file_and_line(tmp_path):
    (tmp_path / "personachat_self_original.json").write_text('{"train": [\n  {"x": 1},\n  oops\n]}')
    with pytest.raises(DataFormatError, match=r"personachat_self_original\.json, line 3"):
        load_persona_chat("train", tmp_path)


def test_json_layout_errors(tmp_path, caplog):
    path = tmp_path / "personachat_self_original.json"
    write_json(path, [1, 2])
    with pytest.raises(DataFormatError, match="expected a JSON object"):
        load_persona_chat("train", tmp_path)
    write_json(path, {"train": {"not": "a list"}})
    with pytest.raises(DataFormatError, match=r"data\['train'\] must be a list"):
        load_persona_chat("train", tmp_path)
    write_json(path, {"train": [{"personality": []}, JSON_DATA["train"][0], {"utterances": []}]})
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_persona_chat("train", tmp_path)
    assert len(ds) == 1
    assert "skipped 2 dialogue(s)" in caplog.text
    assert "data['train'][0], data['train'][2]" in caplog.text


def test_unknown_split(tmp_path):
    write_lines(tmp_path / "valid_self_original_no_cands.txt", NO_CANDS)
    with pytest.raises(ValueError, match=r"Unknown split 'valid'"):
        load_dialogues("persona_chat", "valid", tmp_path)


@pytest.mark.needs_shared("data", "persona_chat", reason="reads the real Persona-Chat file")
def test_real_validation_file():
    root = require_shared("data", "persona_chat")
    ds = load_dialogues("persona_chat", "validation", root)
    assert len(ds) == 1_000
    assert sum(len(u) for u in ds["utterances"]) == 15_602
    assert all(len(u) >= 2 for u in ds["utterances"])
    assert all(3 <= len(p) <= 5 for p in ds["persona"])
    assert not any(s.startswith("your persona") for p in ds["persona"] for s in p)
    assert ds["persona"][0][0] == "I read twenty books a year."
    assert ds["utterances"][0][:2] == [
        "Hello what are doing today?",
        "I am good, I just got off work and tired, I have two jobs.",
    ]


@pytest.mark.parametrize("end", ["\r", "\r\n", "\n"])
def test_cr_only_and_crlf_line_ends(tmp_path, end):
    """Old Mac OS files end their lines with a lone "\\r": the same dialogues as with "\\n"."""
    path = tmp_path / "train_self_original_no_cands.txt"
    path.write_bytes((end.join(NO_CANDS) + end).encode())
    ds = load_persona_chat("train", tmp_path)
    assert ds["utterances"] == EXPECTED_NO_CANDS
    assert ds["persona"] == PERSONAS


def test_cr_only_line_numbers_in_warnings_and_errors(tmp_path, caplog):
    path = tmp_path / "train_self_original_no_cands.txt"
    lines = [*NO_CANDS[:3], "4 a turn without a tab", *NO_CANDS[3:]]
    path.write_bytes(("\r".join(lines) + "\r").encode())
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_persona_chat("train", tmp_path)
    assert ds["utterances"] == EXPECTED_NO_CANDS
    assert "skipped 1 line(s) that are not in Persona-Chat's format: line 4" in caplog.text
    path.write_bytes("\r".join(NO_CANDS[:2]).encode() + b"\r\n3 caf\xe9\tok\r")
    with pytest.raises(DataFormatError, match=r"train_self_original_no_cands\.txt, line 3: bytes"):
        load_persona_chat("train", tmp_path)
