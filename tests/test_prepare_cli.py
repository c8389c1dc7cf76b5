"""``gpt2chat prepare`` end to end: real files in, saved features and a statistics table out."""

import json

import datasets
import pytest

from gpt2chat.cli import main

from .conftest import require_shared, tokenizer_dir


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_prepare_jsonl(tmp_path, capsys):
    data = tmp_path / "chats"
    data.mkdir()
    rows = [{"utterances": ["Hi there.", "Hello!", "How are you?", "Great, thanks."]}] * 3
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "validation.jsonl", rows[:1])
    out = tmp_path / "prepared"
    code = main(
        [
            "prepare",
            "--tokenizer_name_or_path", str(tokenizer_dir()),
            "--datasets", "jsonl",
            "--data_dir", str(data),
            "--max_len", "64",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "dialogues" in printed and "skipped" in printed
    train = datasets.load_from_disk(out / "train")
    assert len(train) == 6 and set(train.column_names) >= {"input_ids", "token_type_ids", "labels"}
    assert len(datasets.load_from_disk(out / "validation")) == 2
    stats = json.loads((out / "prepare_stats.json").read_text())["stats"]
    assert [(r["split"], r["examples"]) for r in stats] == [("train", 6), ("validation", 2)]
    assert (out / "tokenizer" / "tokenizer_config.json").is_file()


@pytest.mark.needs_shared("data", "dailydialog", reason="checks the real DailyDialog split sizes")
def test_prepare_real_daily_dialog(tmp_path, capsys):
    data = require_shared("data")
    out = tmp_path / "prepared"
    code = main(
        [
            "prepare",
            "--tokenizer_name_or_path", str(tokenizer_dir()),
            "--datasets", "daily_dialog",
            "--data_dir", str(data / "dailydialog"),
            "--splits", "validation,test",
            "--max_len", "128",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert "daily_dialog" in table and "1000" in table and "8069" in table
    assert len(datasets.load_from_disk(out / "test")) > 3000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--datasets", "nope"], "unknown dataset"),
        (["--datasets", "daily_dialog", "--data_dir", "/does/not/exist"], "does not exist"),
        (["--max_turns", "0"], "max_turns"),
    ],
)
def test_prepare_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit):
        main(["prepare", *args])
    assert message in capsys.readouterr().err
