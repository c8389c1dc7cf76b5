"""The Chit-Chat Challenge loader: the real installed package and a small fixture."""

from __future__ import annotations

import json
import logging

import pytest

from gpt2chat.data import load_dialogues
from gpt2chat.data.base import DataFormatError, EmptyDatasetError
from gpt2chat.data.chitchat import load_chitchat, split_of

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def real_splits():
    pytest.importorskip("chitchat_dataset")
    return {s: load_chitchat(s, normalize=False) for s in SPLITS}


def test_real_package_counts(real_splits):
    sizes = {s: len(ds) for s, ds in real_splits.items()}
    # chitchat-dataset 0.9.0: 7,168 conversations, 4,017 with two speakers.
    assert sizes == {"train": 3579, "validation": 222, "test": 216}
    assert "3579 dialogues" in real_splits["train"].info.description


def test_real_splits_are_disjoint_and_valid(real_splits):
    seen = {s: {tuple(u) for u in ds["utterances"]} for s, ds in real_splits.items()}
    assert not seen["train"] & seen["validation"]
    assert not seen["train"] & seen["test"]
    assert not seen["validation"] & seen["test"]
    for ds in real_splits.values():
        assert set(ds["source"]) == {"chitchat"}
        assert all(len(u) >= 2 and all(x.strip() for x in u) for u in ds["utterances"])
        assert "prompt" in ds.column_names


def test_split_rule_is_stable():
    # sha256 of the id: the same on every machine and Python process (no PYTHONHASHSEED).
    assert split_of("a07edb12-6b91-4138-b11e-02421888d699") == "train"
    assert split_of("b081fda7-d422-432c-82b4-003377df5103") == "validation"
    assert split_of("6ee2a2e4-8a27-407c-b38f-fa60102d98aa") == "test"
    assert split_of("b081fda7-d422-432c-82b4-003377df5103", 0.0, 0.0) == "train"


def msg(sender, text):
    return {"text": text, "sender": sender, "timestamp": "2018-05-02T19:38:15Z"}


def fixture_conversations():
    return {
        "conv-two": {
            "messages": [
                [msg("a", "Hello"), msg("a", "How are you doing today?")],
                [msg("b", "im doing good"), msg("b", "")],
                [msg("b", "and you?")],  # same sender again: merged into the previous turn
                [msg("a", "Great, thanks!")],
            ],
            "prompt": "What would you do with a million dollars?",
            "start": "2018-05-02T19:38:01Z",
        },
        "conv-three": {
            "messages": [[msg("a", "Hi")], [msg("b", "Hey")], [msg("c", "Hello all")]],
            "start": "2018-05-02T19:38:01Z",
        },
        "conv-one-turn": {
            "messages": [[msg("a", "hi there"), msg("a", "are you there?")]],
            "prompt": None,
        },
        "conv-mixed-group": {
            "messages": [[msg("x", "Ping"), msg("y", "Pong")], [msg("x", "Ping again")]],
        },
    }


def write_fixture(folder, conversations):
    folder.mkdir(exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(conversations), encoding="utf-8")
    return folder


def load_all(data_dir, **kw):
    # Put every conversation in "train" so the fixture does not depend on the id hashes.
    return load_chitchat(
        "train", data_dir, normalize=False, validation_fraction=0.0, test_fraction=0.0, **kw
    )


def test_fixture_merges_and_skips(tmp_path, caplog):
    d = write_fixture(tmp_path / "cc", fixture_conversations())
    with caplog.at_level(logging.INFO, logger="gpt2chat.data.chitchat"):
        ds = load_all(d)
    assert ds["utterances"] == [
        ["Hello How are you doing today?", "im doing good and you?", "Great, thanks!"],
        ["Ping", "Pong", "Ping again"],
    ]
    assert ds["prompt"] == ["What would you do with a million dollars?", ""]
    assert "1 conversations with more than 2 speakers" in caplog.text
    assert "1 conversations with fewer than 2 turns" in caplog.text
    assert "1 empty messages" in caplog.text


def test_fixture_file_path_and_split_fractions(tmp_path):
    d = write_fixture(tmp_path / "cc", fixture_conversations())
    assert len(load_all(d / "dataset.json")) == 2
    expected = {s: sum(split_of(i) == s for i in ("conv-two", "conv-mixed-group")) for s in SPLITS}
    assert sum(expected.values()) == 2
    for s in SPLITS:
        if expected[s]:
            assert len(load_chitchat(s, d, normalize=False)) == expected[s]
        else:  # a split without any conversation is an error naming the file and why
            with pytest.raises(EmptyDatasetError, match=r"dataset\.json \(skipped: .*other splits"):
                load_chitchat(s, d, normalize=False)


def test_through_load_dialogues(tmp_path):
    d = write_fixture(tmp_path / "cc", fixture_conversations())
    ds = load_dialogues(
        "chitchat", "train", data_dir=d, validation_fraction=0.0, test_fraction=0.0, cache_dir="x"
    )
    assert len(ds) == 2


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset\.json"):
        load_chitchat("train", tmp_path)
    with pytest.raises(ValueError, match="validation_fraction"):
        load_chitchat("train", validation_fraction=1.5)
    with pytest.raises(ValueError, match="< 1"):
        load_chitchat("train", validation_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="'seed'"):
        load_chitchat("train", seed=3)
    bad = write_fixture(tmp_path / "bad", {"c1": {"messages": [[{"text": 3, "sender": "a"}]]}})
    with pytest.raises(DataFormatError, match=r"dataset\.json, conversation 'c1'"):
        load_all(bad)
    (bad / "dataset.json").write_text("[1, 2]")
    with pytest.raises(DataFormatError, match="expected a JSON object"):
        load_all(bad)
    (bad / "dataset.json").write_text('{"c1": \n{')
    with pytest.raises(DataFormatError, match=r"dataset\.json, line 2: invalid JSON"):
        load_all(bad)


def test_missing_package_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "chitchat_dataset" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install chitchat-dataset"):
        load_chitchat("train")


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1 << 20])
def test_streamed_json_matches_json_loads(tmp_path, chunk_size):
    from gpt2chat.data.chitchat import _json_object_items

    data = {
        "a": {"messages": [[{"text": "hé ☕", "sender": "x", "timestamp": 12345}]], "n": -1.5e3},
        "b": [True, False, None, 'q"uote', {"nested": []}],
        "c": 1234567890123,
    }
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    assert list(_json_object_items(path, chunk_size)) == list(data.items())
    path.write_text(" { } ")
    assert list(_json_object_items(path, chunk_size)) == []
    path.write_text('{"a": 1 "b": 2}')
    with pytest.raises(ValueError):
        list(_json_object_items(path, chunk_size))


TWO = {"c1": {"messages": [[msg("a", "hi")], [msg("b", "yo")]]}}


@pytest.mark.parametrize(
    ("after", "line"),
    [
        (' {"extra": "garbage" ] trailing', 1),
        (json.dumps(TWO), 1),  # a second object
        ("\n\n  x", 3),
        ("\n,", 2),
        ("\x00", 1),
    ],
)
def test_anything_but_whitespace_after_the_object_is_an_error(tmp_path, after, line):
    d = write_fixture(tmp_path / "cc", TWO)
    path = d / "dataset.json"
    path.write_text(json.dumps(TWO) + after, encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"dataset\.json, line {line}: invalid JSON \(Extra"):
        load_all(d)
    path.write_text("{}" + after, encoding="utf-8")  # after an empty object too
    with pytest.raises(DataFormatError, match=rf"dataset\.json, line {line}: invalid JSON \(Extra"):
        load_all(d)


def test_whitespace_after_the_object_is_fine(tmp_path):
    d = write_fixture(tmp_path / "cc", TWO)
    (d / "dataset.json").write_text(json.dumps(TWO) + " \r\n\t\n", encoding="utf-8")
    assert load_all(d)["utterances"] == [["hi", "yo"]]


def test_a_duplicate_conversation_id_is_an_error(tmp_path):
    """json.loads would keep only the last conversation of the id: an error naming it."""
    other = {"messages": [[msg("a", "other")], [msg("b", "text")]]}
    d = write_fixture(tmp_path / "cc", TWO)
    items = [("c1", TWO["c1"]), ("c2", other), ("c1", other)]
    text = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in items)
    (d / "dataset.json").write_text("{\n" + text + "\n}", encoding="utf-8")
    with pytest.raises(
        DataFormatError,
        match=r"dataset\.json, line 4: the conversation id 'c1' appears twice \(first at line 2\)",
    ):
        load_all(d)


@pytest.mark.parametrize("chunk_size", [1, 3, 1 << 20])
def test_streamed_json_rejects_trailing_data_and_counts_lines(tmp_path, chunk_size):
    from gpt2chat.data.chitchat import _json_object_items

    path = tmp_path / "d.json"
    path.write_text('{"a": 1}\r\n \n{"b": 2}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"d\.json, line 3: more than one JSON value"):
        list(_json_object_items(path, chunk_size))
    path.write_text('{"a": 1,\r\n"b": [\n2],\n\n"a": 3}', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"line 5: the conversation id 'a' .*at line 1\)"):
        list(_json_object_items(path, chunk_size))
