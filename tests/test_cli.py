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


# --------------------------------------------------------------------------- model paths
MODEL_FLAG = {"train": "--model_name_or_path", "eval": "--model", "prepare": "--model_name_or_path",
              "export": "--model"}  # fmt: skip


def model_command(command: str, model: str, tmp_path) -> list[str]:
    """``command`` with ``model`` as its model and whatever else it needs to reach loading it."""
    data = ["--datasets", "daily_dialog", "--data_dir", str(daily_dialog_dir())]
    rest = {
        "train": [*data, "--ckpt_dir", str(tmp_path / "out"), "--use_cpu", "--report_to", "none"],
        "eval": [*data, "--use_cpu"],
        "prepare": [*data, "--output_dir", str(tmp_path / "prepared")],
        "export": ["--output_dir", str(tmp_path / "exported")],
    }[command]
    return [command, MODEL_FLAG[command], model, *rest]


@pytest.mark.parametrize("kind", ["missing", "empty folder", "not a model folder", "a file",
                                  "relative typo"])  # fmt: skip
@pytest.mark.parametrize("command", sorted(MODEL_FLAG))
def test_a_model_path_that_is_no_model_is_one_clear_line(
    command, kind, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    model = {
        "missing": str(tmp_path / "no" / "such" / "model"),
        "empty folder": str(tmp_path / "models"),
        "not a model folder": str(tmp_path / "notes"),
        "a file": str(tmp_path / "notes" / "readme.txt"),
        "relative typo": "models/gpt2-finetuned",  # models/ exists: a path, not a Hub id
    }[kind]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    code = main(model_command(command, model, tmp_path))
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    what = {
        "missing": ": no such model folder or file; pass a folder written by `gpt2chat train`",
        "empty folder": " is not a model folder (no config.json, adapter_config.json or "
        "tokenizer files in it): pass a folder written by `gpt2chat train`",
        "a file": " is a file, not a model folder: pass a folder written by `gpt2chat train`",
    }
    what["not a model folder"], what["relative typo"] = what["empty folder"], what["missing"]
    assert err[0].startswith(
        f"gpt2chat {command}: error: {MODEL_FLAG[command]} {model}{what[kind]}"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "prepared").exists()


# --------------------------------------------------------------------------- --config
#: a typed argument of each command and a value its type refuses
BAD_VALUE = {"train": ("lr", "fast"), "eval": ("batch_size", "many"),
             "prepare": ("max_turns", "all"), "export": ("torch_dtype", "float8"),
             "chat": ("seed", "random"), "serve": ("port", "http"), "demo": ("max_steps", "lots")}  # fmt: skip


@pytest.mark.parametrize("form", ["--config=FILE", "--config FILE"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_reads_its_config_file_in_both_forms(command, form, tmp_path, capsys):
    key, value = BAD_VALUE[command]
    config = tmp_path / "bad.yaml"
    config.write_text(f"{key}: {value}\n")
    args = [f"--config={config}"] if form == "--config=FILE" else ["--config", str(config)]
    with pytest.raises(SystemExit) as exit_:
        main([command, *args])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"gpt2chat {command}: error: argument --") and value in last, last
    assert last.endswith(f"({key} set by --config {config}).")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_config_file_that_is_not_utf8_is_one_line_naming_it(command, tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("persona: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SystemExit) as exit_:
        main([command, f"--config={config}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"gpt2chat {command}: error: --config {config} is not UTF-8 text (byte 0xe9 at offset "
        "12): save it as UTF-8"
    ]


@pytest.mark.parametrize(
    ("content", "argv", "message"),
    [
        ("lr: [\n", ["--config=FILE"], "--config FILE is not valid YAML (line 2, column 1): "),
        ("- lr\n", ["--config=FILE"], "--config FILE must hold a mapping of argument: value"),
        ("config: other.yaml\n", ["--config=FILE"], "--config FILE names another config file"),
        ("lr: 0.1\n", ["--config=FILE", "--config", "FILE"], "--config is given 2 times"),
        ("", ["--config=/no/such.yaml"], "--config /no/such.yaml: no such file"),
        ("", ["--config"], "--config needs a YAML file path"),
        ("", ["--config="], "--config needs a YAML file path"),
        ("lr: {a: 1}\n", ["--config=FILE"], "--config FILE: 'lr' must be a value or a list"),
        ("lr: [[1]]\n", ["--config=FILE"], "--config FILE: 'lr' must be a value or a list"),
        ("model_name_or_path: " + "[" * 5000 + "]" * 5000, ["--config=FILE"], "nests deeper"),
        (  # aliases that would expand to 10**9 values
            "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
            + "model_name_or_path: *a8\n",
            ["--config=FILE"],
            "--config FILE: 'a1' must be a value or a list of values",
        ),
    ],
)
def test_config_file_errors_are_one_line_naming_the_file(content, argv, message, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main(["train", *(a.replace("FILE", str(config)) for a in argv)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpt2chat train: error: "), err
    assert message.replace("FILE", str(config)) in err[0]


def test_config_values_yield_to_flags_and_unknown_keys_are_named(tmp_path, capsys):
    from gpt2chat.cli import parse
    from gpt2chat.cli.eval import EvalArguments

    config = tmp_path / "eval.yaml"
    config.write_text("batch_size: 3\nnum_samples: 5\nmodel: from-file\n")
    (args,) = parse((EvalArguments,), [f"--config={config}", "--num_samples", "7"], "t", "")
    assert (args.batch_size, args.num_samples, args.model) == (3, 7, "from-file")

    config.write_text("model: m\nno_such_option: 1\n")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", f"--config={config}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "gpt2chat eval: error: unrecognized arguments: --no_such_option 1 (no_such_option set "
        f"by --config {config})."
    )
    with pytest.raises(SystemExit):  # an abbreviation argparse accepts is read as well
        main(["eval", "--conf", str(config)])
    assert f"(no_such_option set by --config {config})." in capsys.readouterr().err
