"""BlendedSkillTalk: ParlAI's raw JSON and the Hugging Face schema (tiny fixtures)."""

from __future__ import annotations

import copy
import json
import logging

import pytest

from gpt2chat.data import blended_skill_talk as bst
from gpt2chat.data import load_dialogues
from gpt2chat.data.base import DataFormatError
from gpt2chat.data.blended_skill_talk import load_blended_skill_talk

# ParlAI's raw schema (train.json / valid.json / test.json of blended_skill_talk.tar.gz).
RAW = {
    "personas": [
        ["I like to ski.", "I have two dogs."],
        ["My favorite color is blue.", "I work as a nurse."],
    ],
    "context_dataset": "empathetic_dialogues",
    "free_turker_utterance": "I am so excited about my trip next week.",
    "guided_turker_utterance": "Oh nice, where are you going?",
    "additional_context": "excited",
    "dialog": [
        [0, "To the mountains, I want to ski."],
        [1, "That sounds fun. I prefer the beach myself."],
        [0, "Why the beach?"],
        [1, "I love the blue water."],
    ],
    "suggestions": [{}, {"convai2": "a", "empathetic_dialogues": "b", "wizard_of_wikipedia": "c"}],
    "chosen_suggestions": ["", "convai2"],
    "workers": ["w1", "w2"],
}

# The Hugging Face `blended_skill_talk` schema (personas = the guided worker's persona).
HF = {
    "personas": ["I have a cat.", "I love to bake."],
    "additional_context": "Baking",
    "previous_utterance": ["I baked bread today.", "What kind of bread?"],
    "context": "wizard_of_wikipedia",
    "free_messages": ["Sourdough, it took all day.", "Do you bake?"],
    "guided_messages": ["Sourdough is delicious.", "Yes, cakes mostly."],
    "suggestions": {"convai2": ["x", "y"], "empathetic_dialogues": ["x", "y"]},
    "guided_chosen_suggestions": ["", ""],
    "label_candidates": [],
}


def write_json(path, items):
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path


def write_jsonl(path, items):
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")
    return path


def test_raw_parlai_schema(tmp_path):
    write_json(tmp_path / "train.json", [RAW])
    ds = load_blended_skill_talk("train", tmp_path, normalize=False)
    assert ds["utterances"] == [
        [
            "I am so excited about my trip next week.",
            "Oh nice, where are you going?",
            "To the mountains, I want to ski.",
            "That sounds fun. I prefer the beach myself.",
            "Why the beach?",
            "I love the blue water.",
        ]
    ]
    # <sp2> is the guided worker: personas[1].
    assert ds["persona"] == [["My favorite color is blue.", "I work as a nurse."]]
    assert ds["context_dataset"] == ["empathetic_dialogues"]
    assert ds["source"] == ["blended_skill_talk"]


def test_hf_schema_json_lines_validation_file(tmp_path):
    odd = copy.deepcopy(HF)
    odd["free_messages"].append("Then let's swap recipes.")  # a final free message is kept
    write_jsonl(tmp_path / "valid.json", [HF, odd])
    ds = load_blended_skill_talk("validation", tmp_path, normalize=False)
    expected = [
        "I baked bread today.",
        "What kind of bread?",
        "Sourdough, it took all day.",
        "Sourdough is delicious.",
        "Do you bake?",
        "Yes, cakes mostly.",
    ]
    assert ds["utterances"] == [expected, [*expected, "Then let's swap recipes."]]
    assert ds["persona"] == [["I have a cat.", "I love to bake."]] * 2
    assert ds["context_dataset"] == ["wizard_of_wikipedia"] * 2


def test_hf_schema_json_list_and_file_data_dir(tmp_path):
    f = write_json(tmp_path / "anything.json", [HF])
    ds = load_blended_skill_talk("test", f)
    assert len(ds) == 1
    assert len(ds[0]["utterances"]) == 6


def test_through_load_dialogues_and_validation_name(tmp_path):
    write_json(tmp_path / "validation.json", [RAW, HF])
    ds = load_dialogues("blended_skill_talk", "validation", data_dir=tmp_path)
    assert len(ds) == 2
    assert set(ds.column_names) >= {"utterances", "source", "persona", "context_dataset"}


def test_recoverable_problems_are_skipped_and_counted(tmp_path, caplog):
    same_speaker = copy.deepcopy(RAW)
    same_speaker["dialog"][1][0] = 0
    uneven = copy.deepcopy(HF)
    uneven["guided_messages"].append("Extra.")
    empty_seed = copy.deepcopy(RAW)
    empty_seed["free_turker_utterance"] = ""
    empty_middle = copy.deepcopy(HF)
    empty_middle["guided_messages"][1] = "  "
    write_json(tmp_path / "train.json", [same_speaker, uneven, empty_seed, empty_middle, RAW])
    with caplog.at_level(logging.WARNING):
        ds = load_blended_skill_talk("train", tmp_path, normalize=False)
    assert len(ds) == 3
    # The seed pair is dropped as a whole, so the free worker still speaks first.
    assert ds[0]["utterances"][0] == "To the mountains, I want to ski."
    assert len(ds[0]["utterances"]) == 4
    # Cut before the empty guided message.
    assert ds[1]["utterances"] == [
        "I baked bread today.",
        "What kind of bread?",
        "Sourdough, it took all day.",
        "Sourdough is delicious.",
        "Do you bake?",
    ]
    for reason in (
        "1 conversations skipped because their speakers do not alternate",
        "1 conversations skipped because free/guided message counts do not interleave",
        "1 seed utterance pairs dropped",
        "1 conversations cut before an empty message",
    ):
        assert reason in caplog.text


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("not a dict", r"train\.json, item 1: expected a JSON object"),
        ({"text": "hi"}, r"train\.json, item 1: not a BlendedSkillTalk conversation"),
        (
            {k: v for k, v in RAW.items() if k != "personas"},
            r"train\.json, item 1: missing key\(s\) personas",
        ),
        ({**RAW, "personas": [["a"]]}, r"train\.json, item 1: `personas` must be a list of 2"),
        ({**RAW, "dialog": [[0]]}, r"train\.json, item 1: `dialog\[0\]` must be a \[speaker"),
        ({**RAW, "dialog": "hi"}, r"train\.json, item 1: `dialog` must be a list"),
        (
            {**RAW, "free_turker_utterance": 3},
            r"train\.json, item 1: `free_turker_utterance` must be a string",
        ),
        ({**HF, "free_messages": "hi"}, r"train\.json, item 1: `free_messages` must be a list"),
        ({**HF, "personas": [1, 2]}, r"train\.json, item 1: `personas` must be a list of str"),
    ],
)
def test_bad_items_name_file_and_item(tmp_path, item, match):
    write_json(tmp_path / "train.json", [RAW, item])
    with pytest.raises(DataFormatError, match=match):
        load_blended_skill_talk("train", tmp_path)


def test_bad_json_names_line(tmp_path):
    (tmp_path / "train.json").write_text('[\n{"personas": [}\n]\n')
    with pytest.raises(DataFormatError, match=r"train\.json, line 2: invalid JSON"):
        load_blended_skill_talk("train", tmp_path)
    (tmp_path / "train.json").write_text(json.dumps(HF) + "\n{oops\n")
    with pytest.raises(DataFormatError, match=r"train\.json, line 2: invalid JSON"):
        load_blended_skill_talk("train", tmp_path)


def test_missing_split_file_and_unknown_option(tmp_path):
    write_json(tmp_path / "train.json", [RAW])
    with pytest.raises(FileNotFoundError, match=r"valid\.json"):
        load_blended_skill_talk("validation", tmp_path)
    with pytest.raises(ValueError, match="'max_turns'"):
        load_blended_skill_talk("train", tmp_path, max_turns=3)


def test_without_data_dir_downloads(tmp_path, monkeypatch):
    write_json(tmp_path / "test.json", [RAW])
    calls = []

    def fake_download(name, cache_dir=None):
        calls.append((name, cache_dir))
        return tmp_path

    monkeypatch.setattr(bst, "download_dataset", fake_download)
    ds = load_blended_skill_talk("test", cache_dir="/some/cache")
    assert len(ds) == 1
    assert calls == [("blended_skill_talk", "/some/cache")]
