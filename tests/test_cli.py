"""The ``gpt2chat`` command line: every command's --help, clear errors for bad arguments, and a
training run followed by an evaluation, end to end."""

from __future__ import annotations

import json

import pytest

from gpt2chat.cli import COMMANDS, main

from .training.helpers import daily_dialog_dir, save_tiny_model


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"gpt2chat {command}" in out and "--config" in out


def test_train_help_lists_the_seed_argument_names(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in ("--model_type", "--lr", "--batch_size", "--num_epochs", "--ckpt_dir", "--ckpt_name",
                 "--gpu", "--num_workers", "--warmup_ratio", "--train_prefix", "--valid_prefix",
                 "--bos_token", "--sp1_token", "--sp2_token", "--max_len", "--max_turns", "--use_peft",
                 "--lora_r", "--from_scratch_config", "--use_token_type_ids", "--prepared_dir"):  # fmt: skip
        assert name in out, name


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--datasets", "daily_dialog,twitter"], "unknown dataset(s) ['twitter']"),
        (["--data_dir", "/no/such/data"], "--data_dir /no/such/data does not exist"),
        (["--lr", "-1"], "--learning_rate (--lr) must be > 0"),
        (["--reply_speakers", "all"], "--reply_speakers must be one of"),
    ],
)
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_max_len_larger_than_the_model_context(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "tiny", n_positions=64)
    code = main(
        ["train", "--model_name_or_path", str(model_dir), "--datasets", "daily_dialog",
         "--data_dir", str(daily_dialog_dir()), "--train_split", "test", "--eval_split", "test",
         "--max_len", "128", "--ckpt_dir", str(tmp_path / "out"), "--use_cpu", "--report_to", "none"]
    )  # fmt: skip
    assert code == 1
    assert (
        "--max_len 128 is larger than the model's context (64 positions)" in capsys.readouterr().err
    )


def test_train_then_eval_end_to_end(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model_name_or_path: {model_dir}\ndatasets: daily_dialog\ndata_dir: {daily_dialog_dir()}\n"
        "train_split: validation\neval_split: test\nmax_train_samples: 8\nmax_eval_samples: 4\n"
        "max_len: 48\nnum_epochs: 1\nbatch_size: 4\nlr: 0.01\n"
    )
    code = main(["train", "--config", str(config), "--ckpt_dir", str(out), "--use_cpu",
                 "--disable_tqdm", "true"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Training finished." in printed and f"best checkpoint:  {out}/checkpoint-2" in printed
    assert f"gpt2chat chat --model_path {out}" in printed
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert list((out / "runs").rglob("events.out.tfevents*"))  # TensorBoard by default
    eval_results = json.loads((out / "eval_results.json").read_text())
    assert {"eval_loss", "eval_perplexity", "eval_tokens"} <= set(eval_results)

    report = tmp_path / "eval.json"
    code = main(
        ["eval", "--model", str(out), "--datasets", "daily_dialog", "--data_dir", str(daily_dialog_dir()),
         "--split", "test", "--max_len", "48", "--max_eval_samples", "4", "--num_samples", "2",
         "--max_new_tokens", "4", "--use_cpu", "--output_file", str(report)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "distinct-2" in printed and str(report) in printed
    results = json.loads(report.read_text())
    rows = {r["dataset"]: r for r in results["results"]}
    assert set(rows) == {"daily_dialog", "all"} and rows["all"]["samples"] == 2
    assert rows["daily_dialog"]["perplexity"] == pytest.approx(
        eval_results["eval_perplexity"], rel=1e-5
    )
    assert results["split"] == "test" and len(results["examples"]) == 2


def test_prepare_then_train_on_the_prepared_dir(tmp_path, capsys):
    from .training.helpers import daily_dialogues, write_jsonl

    model_dir = save_tiny_model(tmp_path / "tiny")
    data = tmp_path / "chats"
    write_jsonl(data / "train.jsonl", daily_dialogues("validation", n=4))
    write_jsonl(data / "validation.jsonl", daily_dialogues("validation", n=2, start=4))
    prepared = tmp_path / "prepared"
    assert main(["prepare", "--model_name_or_path", str(model_dir), "--datasets", "jsonl",
                 "--data_dir", str(data), "--max_len", "48", "--output_dir", str(prepared)]) == 0  # fmt: skip
    out = tmp_path / "out"
    code = main(
        ["train", "--model_name_or_path", str(model_dir), "--prepared_dir", str(prepared),
         "--max_len", "48", "--num_epochs", "1", "--ckpt_dir", str(out), "--use_cpu",
         "--report_to", "none", "--disable_tqdm", "true"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "Training finished." in printed
    assert "chats" in (out / "README.md").read_text()  # the jsonl source name, from the features
    # the printed eval command names the prepared features (no test split was prepared)
    command = f"gpt2chat eval --model {out} --prepared_dir {prepared} --split validation"
    assert command in printed
    report = tmp_path / "eval.json"
    argv = [*command.split()[1:], "--max_len", "48", "--num_samples", "0", "--use_cpu"]
    assert main([*argv, "--output_file", str(report)]) == 0
    eval_results = json.loads((out / "eval_results.json").read_text())
    rows = {r["dataset"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["all"]["perplexity"] == pytest.approx(eval_results["eval_perplexity"], rel=1e-5)


def test_training_on_one_file_holds_out_validation_and_prints_the_eval_command(tmp_path, capsys):
    """The demo's "train on your own data" command names one .jsonl: training evaluates on its
    last 5 % of dialogues, not on those it learns from, and the printed `gpt2chat eval` command
    evaluates on exactly those."""
    import shlex

    from .training.helpers import daily_dialogues, write_jsonl

    model_dir = save_tiny_model(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "my_dialogues.jsonl", daily_dialogues("validation", n=40))
    out = tmp_path / "bot"
    code = main(
        ["train", "--model_name_or_path", str(model_dir), "--datasets", "jsonl", "--data_dir",
         str(data), "--max_len", "48", "--max_steps", "2", "--batch_size", "4",
         "--ckpt_dir", str(out), "--use_cpu", "--report_to", "none", "--disable_tqdm", "true"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    command = next(line for line in printed.splitlines() if line.startswith("Evaluate it:"))
    argv = shlex.split(command.split(":", 1)[1])
    assert argv[:2] == ["gpt2chat", "eval"]
    assert argv[2:] == ["--model", str(out), "--datasets", "jsonl", "--data_dir", str(data),
                        "--max_len", "48", "--split", "validation"]  # fmt: skip
    eval_results = json.loads((out / "eval_results.json").read_text())

    report = tmp_path / "eval.json"
    assert main([*argv[1:], "--num_samples", "0", "--use_cpu", "--output_file", str(report)]) == 0
    rows = {r["dataset"]: r for r in json.loads(report.read_text())["results"]}
    assert rows["all"]["perplexity"] == pytest.approx(eval_results["eval_perplexity"], rel=1e-5)

    from gpt2chat import load_dialogues

    held_out = load_dialogues("jsonl", "validation", data_dir=str(data), train_frac=0.95)
    trained = load_dialogues("jsonl", "train", data_dir=str(data), train_frac=0.95)
    assert (len(trained), len(held_out)) == (38, 2)
    assert not {tuple(u) for u in held_out["utterances"]} & {
        tuple(u) for u in trained["utterances"]
    }


def test_one_file_too_small_to_hold_out_is_a_clear_error(tmp_path, capsys):
    from .training.helpers import daily_dialogues, write_jsonl

    model_dir = save_tiny_model(tmp_path / "tiny")
    data = write_jsonl(tmp_path / "one.jsonl", daily_dialogues("validation", n=1))
    code = main(
        ["train", "--model_name_or_path", str(model_dir), "--datasets", "jsonl", "--data_dir",
         str(data), "--max_len", "48", "--ckpt_dir", str(tmp_path / "out"), "--use_cpu",
         "--report_to", "none"]
    )  # fmt: skip
    assert code == 1
    assert f"--data_dir {data} has too few dialogues to hold out 5 %" in capsys.readouterr().err
