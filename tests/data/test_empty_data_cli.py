"""Issue #15, item 7 at the command line: ``gpt2chat prepare``, ``train`` and ``eval`` on data
with no dialogue (or a lone surrogate) exit with status 1 and one clean error line naming the
file, not a ``KeyError`` traceback from deep inside ``datasets``."""

from __future__ import annotations

import pytest

from gpt2chat.cli import main

from ..fixtures import tokenizer_dir


def prepare(data_dir, out, *extra: str) -> int:
    """``gpt2chat prepare`` with the suite's tokenizer (``--datasets jsonl`` unless ``extra``
    names other datasets)."""
    datasets = [] if "--datasets" in extra else ["--datasets", "jsonl"]
    return main(
        ["prepare", "--tokenizer_name_or_path", str(tokenizer_dir()), *datasets,
         "--data_dir", str(data_dir), "--output_dir", str(out), *extra]
    )  # fmt: skip


def error_lines(err: str, command: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith(f"gpt2chat {command}: error:")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"no dialogues in {path} \(it is empty"),
        ("  \n\n", r"no dialogues in {path} \(it is empty"),
        ('{"utterances": ["only one"]}\n', r"no dialogues in {path} \(skipped: 1 dialogues with"),
        (
            '{"utterances": ["a", "\\ud800"]}\n',
            r"{path}, line 1: utterances\[1\] holds an unpaired",
        ),
    ],
)
def test_prepare_on_data_without_dialogues(tmp_path, capsys, content, message):
    import re

    path = tmp_path / "chats.jsonl"
    path.write_text(content)
    code = prepare(str(path), str(tmp_path / "out"))
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err, "prepare")
    assert re.search(message.format(path=re.escape(str(path))), line), line
    assert not (tmp_path / "out" / "train").exists()


def test_prepare_on_a_folder_with_an_empty_split_file(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text('{"utterances": ["Hi.", "Hello."]}\n')
    (tmp_path / "validation.jsonl").write_text("\n")
    code = prepare(str(tmp_path), str(tmp_path / "out"))
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err, "prepare")
    assert f"no dialogues in {tmp_path / 'validation.jsonl'}" in line


def test_prepare_daily_dialog_without_eou(tmp_path, capsys):
    path = tmp_path / "dialogues_train.txt"
    path.write_text("no end of utterance marks here\n")
    code = prepare(
        str(path), str(tmp_path / "out"), "--datasets", "daily_dialog", "--splits", "train"
    )
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err, "prepare")
    assert f"no dialogues in {path} (skipped: 1 lines without '__eou__'" in line


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from ..training.helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_train_and_eval_on_an_empty_file(tmp_path, capsys, tiny_model_dir):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    code = main(
        [
            "train",
            "--model_name_or_path", str(tiny_model_dir),
            "--datasets", "jsonl",
            "--data_dir", str(path),
            "--ckpt_dir", str(tmp_path / "out"),
            "--use_cpu",
            "--report_to", "none",
        ]
    )  # fmt: skip
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err, "train")
    assert f"no dialogues in {path}" in line
    code = main(
        ["eval", "--model", str(tiny_model_dir), "--datasets", "jsonl", "--data_dir", str(path)]
    )
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err, "eval")
    assert f"no dialogues in {path}" in line


def test_prepare_when_the_held_out_part_leaves_no_train_dialogue(tmp_path, capsys):
    path = tmp_path / "one.jsonl"
    path.write_text('{"utterances": ["Hi.", "Hello."]}\n')
    code = prepare(str(path), str(tmp_path / "out"))
    assert code == 1
    (line,) = error_lines(capsys.readouterr().err, "prepare")
    assert f"train: no dialogues in {path}: with train_frac=0.95, the train part" in line
