"""EmpatheticDialogues: ParlAI's CSV files, the Hugging Face export quirks, and bad inputs."""

from __future__ import annotations

import csv
import io
import logging

import pytest

from gpt2chat import load_dialogues
from gpt2chat.data import empathetic_dialogues as ed
from gpt2chat.data.base import DataFormatError
from gpt2chat.data.empathetic_dialogues import load_empathetic_dialogues

from ..conftest import require_shared

HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"

# ParlAI's original format: unquoted, commas written _comma_, an optional 9th field (label
# candidates), rows of one conversation not always in utterance_idx order.
ORIGINAL = [
    HEADER,
    "hit:0_conv:1,1,sentimental,I remember going to the fireworks with my best friend._comma_ "
    "There was a lot of people,1,I remember going to see the fireworks with my best friend. "
    "It was the first time we ever spent time alone together.,5|5|5_2|2|5,",
    "hit:0_conv:1,2,sentimental,I remember going to the fireworks with my best friend._comma_ "
    "There was a lot of people,0,Was this a friend you were in love with_comma_ or just a best "
    "friend?,5|5|5_2|2|5,",
    "hit:0_conv:1,4,sentimental,I remember going to the fireworks with my best friend._comma_ "
    "There was a lot of people,0,Where has she gone now?,5|5|5_2|2|5,,cand one|cand two",
    "hit:0_conv:1,3,sentimental,I remember going to the fireworks with my best friend._comma_ "
    "There was a lot of people,1,This was a best friend. I miss her.,5|5|5_2|2|5,",
    "hit:0_conv:1,5,sentimental,I remember going to the fireworks with my best friend._comma_ "
    "There was a lot of people,1,We no longer talk.,5|5|5_2|2|5,",
    # Same speaker twice in a row: merged.
    "hit:1_conv:2,1,afraid,i used to scare for darkness,2,it feels like hitting to blank wall "
    "when i see the darkness,4|3|5_4|4|5,",
    "hit:1_conv:2,2,afraid,i used to scare for darkness,3,Oh ya? I don't really see how,,",
    "hit:1_conv:2,3,afraid,i used to scare for darkness,3,Is it scary?,,",
    "hit:1_conv:2,4,afraid,i used to scare for darkness,2,dont you feel so,,",
]

EXPECTED = [
    [
        "I remember going to see the fireworks with my best friend. It was the first time we "
        "ever spent time alone together.",
        "Was this a friend you were in love with, or just a best friend?",
        "This was a best friend. I miss her.",
        "Where has she gone now?",
        "We no longer talk.",
    ],
    [
        "It feels like hitting to blank wall when I see the darkness",
        "Oh ya? I don't really see how Is it scary?",
        "Dont you feel so",
    ],
]


def write(path, lines, newline="\n"):
    path.write_text(newline.join(lines) + newline, encoding="utf-8", newline="")
    return path


def hf_export(lines):
    """What the Hugging Face copy's CSV export does to ParlAI's lines: the csv module reads them
    (a field starting with '"' swallows the following lines) and writes them back quoted, CRLF.
    """
    rows = list(csv.reader(io.StringIO("\n".join(lines) + "\n", newline="")))
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def test_original_parlai_format(tmp_path):
    write(tmp_path / "valid.csv", ORIGINAL)
    ds = load_dialogues("empathetic_dialogues", "validation", tmp_path)
    assert ds["utterances"] == EXPECTED
    assert ds["context"] == ["sentimental", "afraid"]
    assert ds["prompt"] == [
        "I remember going to the fireworks with my best friend., There was a lot of people",
        "I used to scare for darkness",
    ]
    assert set(ds["source"]) == {"empathetic_dialogues"}
    assert ds.column_names == ["utterances", "source", "context", "prompt"]


def test_normalize_false_still_restores_commas(tmp_path):
    write(tmp_path / "train.csv", ORIGINAL)
    ds = load_empathetic_dialogues("train", tmp_path, normalize=False)
    assert (
        ds["utterances"][0][1] == "Was this a friend you were in love with, or just a best friend?"
    )
    assert ds["utterances"][1][0].startswith("it feels like")
    assert ds["prompt"][1] == "i used to scare for darkness"


def test_parlai_archive_folder_and_file_as_data_dir(tmp_path):
    folder = tmp_path / "empatheticdialogues"
    folder.mkdir()
    write(folder / "test.csv", ORIGINAL)
    assert load_empathetic_dialogues("test", tmp_path)["utterances"] == EXPECTED
    assert load_empathetic_dialogues("test", folder / "test.csv")["utterances"] == EXPECTED


def test_hugging_face_export_crlf_quotes_and_swallowed_lines(tmp_path, caplog):
    lines = [
        *ORIGINAL,
        # An utterance that starts with '"': the csv module swallows the next lines into it
        # until the next '"' (here in a candidates field). Only that stray '"' is lost.
        'hit:2_conv:4,1,joyful,My grandpa is coming to visit!,7,"My grandpa is coming!,5|5|5,',
        "hit:2_conv:4,2,joyful,My grandpa is coming to visit!,8,That sounds fun!,5|5|5,,a|b",
        'hit:2_conv:4,3,joyful,My grandpa is coming to visit!,7,He is great,5|5|5,,x|"y|z',
        "hit:2_conv:4,4,joyful,My grandpa is coming to visit!,8,Enjoy!,5|5|5,",
        'hit:3_conv:6,1,proud,My son said "hi",1,My son said his first word.,,',
        'hit:3_conv:6,2,proud,My son said "hi",2,That\'s great!,,',
    ]
    exported = hf_export(lines)
    assert '\r\n"hit:' not in exported and '""hi""' in exported  # quoted fields, CRLF
    (tmp_path / "valid.csv").write_text(exported, encoding="utf-8", newline="")
    with caplog.at_level(logging.INFO, logger="gpt2chat.data"):
        ds = load_empathetic_dialogues("validation", tmp_path)
    assert ds["utterances"][:2] == EXPECTED
    assert ds["utterances"][2] == [
        "My grandpa is coming!",
        "That sounds fun!",
        "He is great",
        "Enjoy!",
    ]
    assert ds["utterances"][3] == ["My son said his first word.", "That's great!"]
    assert ds["prompt"][3] == 'My son said "hi"'
    assert "2 row(s) recovered" in caplog.text
    assert "valid.csv" in caplog.text


@pytest.mark.parametrize(
    ("split", "dialogues", "utterances", "short"),
    [("validation", 2_769, 12_077, 1), ("test", 2_547, 10_973, 0)],
)
@pytest.mark.needs_shared(
    "data", "empathetic_dialogues", reason="checks the real EmpatheticDialogues counts"
)
def test_real_data_counts(split, dialogues, utterances, short):
    root = require_shared("data", "empathetic_dialogues")
    ds = load_dialogues("empathetic_dialogues", split, root)
    assert len(ds) == dialogues
    assert sum(len(u) for u in ds["utterances"]) == utterances
    assert all(len(u) >= 2 for u in ds["utterances"])
    assert not any("_comma_" in u for d in ds["utterances"] for u in d)
    assert not any("_comma_" in p for p in ds["prompt"])
    assert all(ds["context"])
    # Conversations of a single row are counted, not loaded.
    assert (f"{short} dialogues with fewer than 2 utterances" in ds.info.description) == bool(short)


def test_no_data_dir_downloads(tmp_path, monkeypatch):
    folder = tmp_path / "extracted" / "empatheticdialogues"
    folder.mkdir(parents=True)
    write(folder / "train.csv", ORIGINAL)
    monkeypatch.setattr(ed, "download_dataset", lambda name, cache_dir=None: folder)
    assert load_empathetic_dialogues("train")["utterances"] == EXPECTED


def test_missing_file_names_the_path(tmp_path):
    write(tmp_path / "train.csv", ORIGINAL)
    with pytest.raises(FileNotFoundError, match=r"valid\.csv") as err:
        load_empathetic_dialogues("validation", tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_columns(tmp_path):
    write(
        tmp_path / "train.csv",
        ["conv_id,utterance_idx,context,speaker,utterance", "hit:0_conv:1,1,sad,1,Hi"],
    )
    with pytest.raises(
        DataFormatError, match=r"train\.csv, line 1: missing column\(s\) prompt, speaker_idx"
    ):
        load_empathetic_dialogues("train", tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "train.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"train\.csv: the file is empty"):
        load_empathetic_dialogues("train", tmp_path)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    text = "\n".join(ORIGINAL[:3]).encode() + b"\nhit:9_conv:9,1,sad,x,1,caf\xe9,,\n"
    (tmp_path / "train.csv").write_bytes(text)
    with pytest.raises(DataFormatError, match=r"train\.csv, line 4"):
        load_empathetic_dialogues("train", tmp_path)


def test_bad_rows_are_skipped_counted_and_logged(tmp_path, caplog):
    lines = [
        *ORIGINAL,
        "hit:5_conv:9,two,sad,x,1,not an index,,",  # line 11
        "hit:5_conv:9,1,sad,x,1",  # line 12: no utterance field
        "",
        "hit:5_conv:9,,sad,x,1,empty index,,",  # line 14
    ]
    write(tmp_path / "train.csv", lines)
    with caplog.at_level(logging.WARNING, logger="gpt2chat.data"):
        ds = load_empathetic_dialogues("train", tmp_path)
    assert ds["utterances"] == EXPECTED
    assert "skipped 2 rows whose utterance_idx is not an integer, at line(s) 11, 14" in caplog.text
    assert "skipped 1 rows with too few fields, at line(s) 12" in caplog.text
    assert "train.csv" in caplog.text


def test_single_utterance_conversation_is_counted(tmp_path):
    write(tmp_path / "train.csv", [*ORIGINAL, "hit:7_conv:7,1,sad,alone,1,Nobody answered.,,"])
    ds = load_empathetic_dialogues("train", tmp_path)
    assert len(ds) == 2
    assert "1 dialogues with fewer than 2 utterances" in ds.info.description


def test_unknown_split(tmp_path):
    write(tmp_path / "valid.csv", ORIGINAL)
    with pytest.raises(ValueError, match=r"Unknown split 'valid'"):
        load_dialogues("empathetic_dialogues", "valid", tmp_path)


# --- valid quoted CSV: a comma or a line end inside a quoted field is text, kept as it is ------


def test_quoted_fields_with_commas_and_line_ends_are_kept(tmp_path, caplog):
    text = (
        f"{HEADER}\n"
        "c1,1,sad,p,0,Hi,,\n"
        'c1,2,sad,"a, b",1,"Well, I think\nso too",,\n'
        'c2,1,sad,p,0,"multi\nline reply",,\n'
        'c2,2,sad,p,1,"Hello, world",,\n'
        'c2,3,sad,p,0,"one\r\nc2,4,sad,p,1,looks like a row,,\rtwo",,\n'
    )
    (tmp_path / "train.csv").write_text(text, encoding="utf-8", newline="")
    with caplog.at_level(logging.INFO, logger="gpt2chat.data"):
        ds = load_empathetic_dialogues("train", tmp_path, normalize=False)
    assert ds["utterances"] == [
        ["Hi", "Well, I think so too"],
        ["multi line reply", "Hello, world", "one c2,4,sad,p,1,looks like a row,, two"],
    ]
    assert ds["prompt"] == ["p", "p"]
    assert "recovered" not in caplog.text


def test_a_quoted_field_is_split_only_when_its_lines_are_whole_rows(tmp_path):
    # The second line of the field is a whole row, the third is not: kept as one field.
    text = (
        f'{HEADER}\nc1,1,sad,p,0,"First,,\nc1,2,sad,p,1,Second,,\nthird",,\nc1,3,sad,p,1,Fourth,,\n'
    )
    (tmp_path / "train.csv").write_text(text, encoding="utf-8")
    ds = load_empathetic_dialogues("train", tmp_path, normalize=False)
    assert ds["utterances"] == [["First,, c1,2,sad,p,1,Second,, third", "Fourth"]]


def test_parlai_file_with_a_stray_quote_is_recovered(tmp_path, caplog):
    """ParlAI's unquoted file itself (no export): the csv module swallows the lines that follow
    a field starting with '"'; they are whole rows, split back."""
    lines = [
        HEADER,
        'hit:2_conv:4,1,joyful,My grandpa is coming to visit!,7,"My grandpa is coming!,5|5|5,',
        "hit:2_conv:4,2,joyful,My grandpa is coming to visit!,8,That sounds fun!,5|5|5,,a|b",
        'hit:2_conv:4,3,joyful,My grandpa is coming to visit!,7,He is great,5|5|5,,x|"y|z',
        "hit:2_conv:4,4,joyful,My grandpa is coming to visit!,8,Enjoy!,5|5|5,",
    ]
    for newline in ("\n", "\r\n", "\r"):
        write(tmp_path / "train.csv", lines, newline)
        with caplog.at_level(logging.INFO, logger="gpt2chat.data"):
            ds = load_empathetic_dialogues("train", tmp_path)
        assert ds["utterances"] == [
            ["My grandpa is coming!", "That sounds fun!", "He is great", "Enjoy!"]
        ]
        assert "2 row(s) recovered" in caplog.text
        caplog.clear()


def test_cr_only_line_numbers(tmp_path):
    text = "\r".join(ORIGINAL[:3]).encode() + b"\rhit:9_conv:9,1,sad,x,1,caf\xe9,,\r"
    (tmp_path / "train.csv").write_bytes(text)
    with pytest.raises(DataFormatError, match=r"train\.csv, line 4: bytes"):
        load_empathetic_dialogues("train", tmp_path)
