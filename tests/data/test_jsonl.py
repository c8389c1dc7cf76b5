"""The JSON-lines loader: both line formats, splits, and every bad-input case."""

from __future__ import annotations

import json
import logging

import pytest

from gpt2chat.data import load_dialogues
from gpt2chat.data.base import DataFormatError
from gpt2chat.data.jsonl import load_jsonl


def write_lines(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_utterances_format(tmp_path):
    f = write_lines(
        tmp_path / "my_chats.jsonl",
        [
            {"utterances": ["Hi there.", "Hello! How are you?", "Fine, thanks."]},
            "",
            "   ",
            {"utterances": ["Do you like tea?", "Yes, I do."], "persona": ["I like tea."]},
        ],
    )
    ds = load_jsonl("train", f, normalize=False)
    assert ds["utterances"] == [
        ["Hi there.", "Hello! How are you?", "Fine, thanks."],
        ["Do you like tea?", "Yes, I do."],
    ]
    assert ds["source"] == ["my_chats", "my_chats"]
    assert ds["persona"] == [[], ["I like tea."]]


def test_messages_format_system_becomes_persona(tmp_path):
    f = write_lines(
        tmp_path / "chats.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "I am a friendly barista."},
                    {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello! What can I get you?"},
                    {"role": "user", "content": "A latte."},
                    {"role": "user", "content": "With oat milk."},
                    {"role": "assistant", "content": "Coming right up."},
                ]
            },
            {
                "messages": [
                    {"role": "assistant", "content": "Welcome!"},
                    {"role": "user", "content": "Hello."},
                    {"role": "assistant", "content": ""},
                    {"role": "assistant", "content": "How can I help?"},
                ],
                "persona": ["I work at a bank."],
                "id": 7,
            },
        ],
    )
    ds = load_jsonl(path=f, normalize=False)
    assert ds["utterances"] == [
        ["Hi!", "Hello! What can I get you?", "A latte. With oat milk.", "Coming right up."],
        ["Hello.", "How can I help?"],
    ]
    assert ds["persona"] == [["I am a friendly barista."], ["I work at a bank."]]
    assert ds["source"] == ["chats", "chats"]


def test_opening_assistant_dropped_is_logged(tmp_path, caplog):
    f = write_lines(
        tmp_path / "c.jsonl",
        [
            {
                "messages": [
                    {"role": "assistant", "content": "Welcome!"},
                    {"role": "user", "content": "Hello."},
                    {"role": "assistant", "content": "Hi."},
                ]
            }
        ],
    )
    with caplog.at_level(logging.INFO):
        ds = load_jsonl(data_dir=f, normalize=False)
    assert ds["utterances"] == [["Hello.", "Hi."]]
    assert "1 opening assistant messages dropped" in caplog.text


def test_empty_utterance_keeps_speakers(tmp_path):
    f = write_lines(tmp_path / "c.jsonl", [{"utterances": ["Hi.", "", "Anyone there?", "Yes."]}])
    ds = load_jsonl(data_dir=f, normalize=False)
    # The empty turn of speaker 2 is dropped; speaker 1's two turns merge, speaker 2 keeps "Yes."
    assert ds["utterances"] == [["Hi. Anyone there?", "Yes."]]


def test_short_dialogues_are_skipped(tmp_path):
    f = write_lines(
        tmp_path / "c.jsonl",
        [{"utterances": ["Only one."]}, {"utterances": ["A.", "B."]}, {"messages": []}],
    )
    ds = load_jsonl(data_dir=f, normalize=False)
    assert len(ds) == 1
    assert "2 dialogues with fewer than 2 utterances" in ds.info.description


def test_folder_split_files(tmp_path):
    d = tmp_path / "my_data"
    d.mkdir()
    write_lines(d / "train.jsonl", [{"utterances": ["Train a.", "Train b."]}])
    write_lines(d / "dev.jsonl", [{"utterances": ["Dev a.", "Dev b."]}])
    assert load_jsonl("train", d, normalize=False)["utterances"] == [["Train a.", "Train b."]]
    val = load_jsonl("validation", d, normalize=False)
    assert val["utterances"] == [["Dev a.", "Dev b."]]
    assert val["source"] == ["my_data"]
    with pytest.raises(FileNotFoundError, match=r"test\.jsonl"):
        load_jsonl("test", d)
    (d / "valid.jsonl").write_text(json.dumps({"utterances": ["V a.", "V b."]}) + "\n")
    assert load_jsonl("validation", d, normalize=False)["utterances"] == [["V a.", "V b."]]


def test_a_folder_without_validation_file_points_at_the_single_file_split(tmp_path):
    write_lines(tmp_path / "train.jsonl", [{"utterances": ["Train a.", "Train b."]}])
    with pytest.raises(FileNotFoundError, match=r"give the file .*train\.jsonl itself as"):
        load_jsonl("validation", tmp_path)


def test_through_load_dialogues(tmp_path):
    f = write_lines(tmp_path / "mine.jsonl", [{"utterances": ["Hello there.", "Hi."]}])
    ds = load_dialogues("jsonl", "train", data_dir=f, cache_dir=tmp_path / "unused")
    assert len(ds) == 1
    assert ds["source"] == ["mine"]
    assert load_jsonl(data_dir=f, source="custom")["source"] == ["custom"]


def test_missing_input_and_unknown_option(tmp_path):
    with pytest.raises(ValueError, match="data_dir"):
        load_jsonl("train")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_jsonl("train", tmp_path / "nope.jsonl")
    f = write_lines(tmp_path / "c.jsonl", [{"utterances": ["A.", "B."]}])
    with pytest.raises(ValueError, match="'colour'"):
        load_jsonl("train", f, colour="red")
    with pytest.raises(ValueError, match="Unknown split"):
        load_jsonl("dev", f)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"utterances": ["a", "b"]', r"bad\.jsonl, line 2: invalid JSON"),
        ("[1, 2]", r"bad\.jsonl, line 2: expected a JSON object"),
        (
            '{"text": "hello"}',
            r"bad\.jsonl, line 2: expected exactly one of .*utterances.*messages",
        ),
        (
            '{"utterances": ["a"], "messages": []}',
            r"bad\.jsonl, line 2: expected exactly one .*found both",
        ),
        ('{"utterances": "hello"}', r"bad\.jsonl, line 2: `utterances` must be a list"),
        ('{"utterances": ["a", 3]}', r"bad\.jsonl, line 2: utterances\[1\] must be a string"),
        ('{"utterances": ["a", null]}', r"bad\.jsonl, line 2: utterances\[1\] must be a string"),
        ('{"utterances": ["a", "b"], "persona": 3}', r"bad\.jsonl, line 2: `persona` must be"),
        ('{"messages": {"role": "user"}}', r"bad\.jsonl, line 2: `messages` must be a list"),
        ('{"messages": ["hi"]}', r"bad\.jsonl, line 2: messages\[0\] must be an object"),
        (
            '{"messages": [{"role": "user", "content": ["hi"]}]}',
            r"bad\.jsonl, line 2: messages\[0\]\.content must be a string",
        ),
        (
            '{"messages": [{"role": "human", "content": "hi"}]}',
            r"bad\.jsonl, line 2: messages\[0\] has role 'human'",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}]}',
            r"bad\.jsonl, line 2: messages\[1\] has role 'system'; only the first",
        ),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"utterances": ["Fine.", "Good."]}) + "\n" + line + "\n")
    with pytest.raises(DataFormatError, match=match):
        load_jsonl("train", f)


def test_invalid_utf8_names_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"utterances": ["a", "b"]}\n{"utterances": ["\xff", "b"]}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 2"):
        load_jsonl("train", f)
