"""Checkpoints cut short or damaged: ``--resume_from_checkpoint last`` resumes from the newest
complete one and says which it passed over; a damaged one named explicitly is an error naming
it; the tied LM head is not reported missing on resume, real missing keys still are."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
from transformers import Trainer, TrainerState

from gpt2chat.cli import main
from gpt2chat.training.checkpoints import (
    MANIFEST_NAME,
    checkpoint_problems,
    resolve_checkpoint,
    write_manifest,
)

from .helpers import daily_dialog_dir, save_tiny_model
from .test_resume import make_trainer

STATE = "trainer_state.json"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 4-step run with checkpoint-2 and checkpoint-4, and what each checkpoint folder held
    when ``trainer_state.json`` was written."""
    out = tmp_path_factory.mktemp("saved") / "run"
    before_state: dict[str, list[str]] = {}
    save_to_json = TrainerState.save_to_json

    def spy(self, json_path):
        before_state[Path(json_path).parent.name] = sorted(os.listdir(Path(json_path).parent))
        return save_to_json(self, json_path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TrainerState, "save_to_json", spy)
        make_trainer(out, max_steps=4).train()
    return out, before_state


def listed_files(checkpoint: Path) -> list[str]:
    return sorted(json.loads((checkpoint / MANIFEST_NAME).read_text())["files"])


def copy_run(out: Path, run: Path, *, damaged: str | None = None, link: bool = True) -> Path:
    """``run/checkpoint-4`` (complete) and ``run/<damaged>`` (a copy to damage). Hard links
    (``link``) when nothing will write into ``run``: a save would write through them."""
    copy = os.link if link else shutil.copy2
    shutil.copytree(out / "checkpoint-4", run / "checkpoint-4", copy_function=copy)
    if damaged:
        shutil.copytree(out / "checkpoint-4", run / damaged, copy_function=copy)
    return run / (damaged or "checkpoint-4")


def cut(path: Path, keep: float = 0.5) -> None:
    """Replace the (hard-linked) file by its first ``keep`` part, as a save cut short leaves it."""
    data = path.read_bytes()
    path.unlink()
    if keep:
        path.write_bytes(data[: int(len(data) * keep)])


def test_a_save_writes_trainer_state_last_then_the_list_of_its_files(saved):
    out, before_state = saved
    for name in ("checkpoint-2", "checkpoint-4"):
        files = listed_files(out / name)
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= set(files)
        assert before_state[name] == [f for f in files if f != STATE], name
        assert checkpoint_problems(out / name) == []
    assert resolve_checkpoint("last", str(out)) == str(out / "checkpoint-4")
    assert resolve_checkpoint("checkpoint-2", str(out)) == str(out / "checkpoint-2")


@pytest.mark.parametrize("how", ["missing", "truncated"])
def test_last_passes_over_a_checkpoint_cut_short_at_each_file(saved, tmp_path, caplog, how):
    out, _ = saved
    names = listed_files(out / "checkpoint-4") + ([MANIFEST_NAME] if how == "truncated" else [])
    for name in names:
        run = tmp_path / f"{how}-{name}"
        damaged = copy_run(out, run, damaged="checkpoint-6")
        cut(damaged / name, keep=0.5 if how == "truncated" else 0)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="gpt2chat"):
            assert resolve_checkpoint("last", str(run)) == str(run / "checkpoint-4"), name
        said = caplog.text
        assert f"resuming from {run / 'checkpoint-4'}, the newest complete checkpoint" in said
        assert re.search(rf"passed over checkpoint-6 \([^)]*{re.escape(name)}", said), said
        message = rf"{damaged} is damaged or incomplete: .*{re.escape(name)}.* resume from {run}/"
        with pytest.raises(ValueError, match=message):
            resolve_checkpoint("checkpoint-6", str(run))


def test_a_checkpoint_without_the_list_is_judged_by_its_files(saved, tmp_path):
    """A checkpoint of plain transformers (or a save cut just before the list) still resumes
    when its weights and states are there and whole; not when its weights are truncated."""
    out, _ = saved
    run = tmp_path / "run"
    plain = copy_run(out, run, damaged="checkpoint-6")
    (plain / MANIFEST_NAME).unlink()
    assert resolve_checkpoint("last", str(run)) == str(plain)
    cut(plain / "model.safetensors", keep=0.9)
    assert checkpoint_problems(plain) == [
        f"model.safetensors is truncated ({(plain / 'model.safetensors').stat().st_size} of "
        f"{(out / 'checkpoint-4' / 'model.safetensors').stat().st_size} bytes)"
    ]
    assert resolve_checkpoint("last", str(run)) == str(run / "checkpoint-4")
    for name in ("optimizer.pt", "rng_state.pth"):
        cut(plain / name, keep=0.9)
    problems = checkpoint_problems(plain)
    assert "optimizer.pt is truncated or damaged" in problems
    assert "rng_state.pth is truncated or damaged" in problems
    (plain / STATE).unlink()
    assert checkpoint_problems(plain)[0] == "no trainer_state.json (the save was cut short)"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (plain / name).unlink()
    assert {"no optimizer.pt", "no scheduler.pt", "no rng_state.pth"} <= set(
        checkpoint_problems(plain)
    )
    # save_only_model: no optimizer, scheduler or RNG states to expect
    assert checkpoint_problems(plain, full_state=False) == checkpoint_problems(plain)[:2]


@pytest.mark.parametrize("stage", ["optimizer", "rng", "trainer_state", "list"])
def test_resume_last_after_a_save_cut_short_at_each_stage(saved, tmp_path, caplog, stage):
    """A save of step 4 interrupted at each of its stages; "last" resumes from checkpoint-2
    (from checkpoint-4 when only the list is missing), trains to the end and saves checkpoint-4
    whole."""

    class CutError(Exception):
        pass

    def interrupt(owner, method, step_of):
        original = getattr(owner, method)

        def wrapper(self, *args, **kwargs):
            if step_of(self) == 4:
                raise CutError(stage)
            return original(self, *args, **kwargs)

        return owner, method, wrapper

    trainer_step = lambda self: self.state.global_step  # noqa: E731
    patch = {
        "optimizer": interrupt(Trainer, "_save_optimizer_and_scheduler", trainer_step),
        "rng": interrupt(Trainer, "_save_rng_state", trainer_step),
        "trainer_state": interrupt(TrainerState, "save_to_json", lambda self: self.global_step),
        "list": interrupt(
            __import__("gpt2chat.training.checkpoints").training.checkpoints,
            "write_manifest",
            lambda folder: 4 if str(folder).endswith("checkpoint-4") else 0,
        ),
    }[stage]
    out = tmp_path / "run"
    shutil.copytree(saved[0] / "checkpoint-2", out / "checkpoint-2")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(CutError):
        mp.setattr(*patch)
        make_trainer(out, max_steps=6, resume_from_checkpoint="checkpoint-2").train()
    assert (out / "checkpoint-4").is_dir()

    resumed = make_trainer(out, max_steps=6, resume_from_checkpoint="last")
    with caplog.at_level(logging.INFO, logger="gpt2chat"):
        resumed.train()
    assert resumed.state.global_step == 6
    if stage == "list":
        assert "last: " + str(out / "checkpoint-4") + ", the newest checkpoint" in caplog.text
    else:
        assert f"resuming from {out / 'checkpoint-2'}" in caplog.text
        assert re.search(r"passed over checkpoint-4 \(.*no (trainer_state|rng_state)", caplog.text)
        assert checkpoint_problems(out / "checkpoint-4") == []


def test_saving_a_step_again_unmarks_its_old_folder_first(saved, tmp_path):
    """Resumed from checkpoint-2 with a complete checkpoint-4 present, and cut short while
    saving step 4 again: the folder mixes old and new files, so it must not count as complete."""
    out = tmp_path / "run"
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(saved[0] / name, out / name)

    def interrupted(self, output_dir):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(Trainer, "_save_rng_state", interrupted)
        make_trainer(out, max_steps=4, resume_from_checkpoint="checkpoint-2").train()
    assert (
        checkpoint_problems(out / "checkpoint-4")[0]
        == "no trainer_state.json (the save was cut short)"
    )
    assert resolve_checkpoint("last", str(out)) == str(out / "checkpoint-2")


def test_a_damaged_checkpoint_named_explicitly_is_an_error_naming_it(saved, tmp_path):
    out, _ = saved
    run = tmp_path / "run"
    damaged = copy_run(out, run, damaged="checkpoint-6", link=False)
    cut(damaged / "model.safetensors")
    with pytest.raises(ValueError, match=rf"{damaged} is damaged or incomplete: model\.safetens"):
        make_trainer(run, max_steps=8, resume_from_checkpoint=str(damaged)).train()

    # Whole by size and headers, but its contents do not load: the error still names it.
    shutil.rmtree(damaged)
    damaged = copy_run(out, tmp_path / "run2", damaged="checkpoint-6", link=False)
    data = bytearray((damaged / "optimizer.pt").read_bytes())
    data[100:400] = bytes(300)  # inside the pickled optimizer state; the zip's end record stays
    (damaged / "optimizer.pt").unlink()
    (damaged / "optimizer.pt").write_bytes(bytes(data))
    assert checkpoint_problems(damaged) == []
    with pytest.raises(ValueError, match=rf"Cannot resume from {damaged}: its optimizer and sch"):
        make_trainer(damaged.parent, max_steps=8, resume_from_checkpoint="checkpoint-6").train()


def test_the_cli_reports_a_damaged_checkpoint_in_one_line(saved, tmp_path, capsys):
    out, _ = saved
    damaged = copy_run(out, tmp_path / "out", damaged="checkpoint-6", link=False)
    cut(damaged / STATE)
    model_dir = save_tiny_model(tmp_path / "tiny")
    code = main(
        ["train", "--model_name_or_path", str(model_dir), "--datasets", "daily_dialog",
         "--data_dir", str(daily_dialog_dir()), "--train_split", "test", "--eval_split", "test",
         "--max_len", "48", "--ckpt_dir", str(damaged.parent), "--use_cpu", "--report_to", "none",
         "--resume_from_checkpoint", str(damaged)]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith(
        f"gpt2chat train: error: --resume_from_checkpoint {damaged}: {damaged} is damaged or "
        "incomplete: trainer_state.json is truncated"
    ), err


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def resume_warnings(run: Path, checkpoint: str) -> str:
    """The transformers warnings of a resume from ``checkpoint`` (no step left to train)."""
    records = _Records()
    hf_logger = logging.getLogger("transformers.trainer")
    level = (
        hf_logger.level
    )  # an earlier test (a CLI run in-process) may have quietened transformers
    hf_logger.addHandler(records)
    hf_logger.setLevel(logging.WARNING)
    try:
        make_trainer(run, max_steps=4, resume_from_checkpoint=checkpoint).train()
    finally:
        hf_logger.removeHandler(records)
        hf_logger.setLevel(level)
    return "\n".join(records.messages)


def test_the_tied_lm_head_is_not_reported_missing_but_real_missing_keys_are(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    out, _ = saved
    checkpoint = copy_run(out, tmp_path / "run", link=False)
    assert "missing keys" not in resume_warnings(tmp_path / "run", "checkpoint-4")

    weights = load_file(str(checkpoint / "model.safetensors"))
    assert "lm_head.weight" not in weights  # save_pretrained leaves the tied head out
    del weights["transformer.h.0.ln_1.bias"]
    (checkpoint / "model.safetensors").unlink()
    save_file(weights, str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    write_manifest(checkpoint)
    warned = resume_warnings(tmp_path / "run", "checkpoint-4")
    assert "missing keys in the checkpoint model loaded: ['transformer.h.0.ln_1.bias']" in warned


# --------------------------------------------------------------------------- damaged model folders
@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_model_folder_with_damaged_weights_is_one_line_in_every_command(tmp_path, capsys, damage):
    """Not only resuming: chat, export, eval and train load the folder and say what is wrong."""
    from gpt2chat import ChatSession, add_speaker_tokens

    from ..fixtures import load_tokenizer
    from .helpers import tiny_model

    folder = tmp_path / "model"
    tokenizer = load_tokenizer()
    model = tiny_model()
    add_speaker_tokens(tokenizer, model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        cut(weights)
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a json header at all")
    with pytest.raises(ValueError, match=r"model\.safetensors is (truncated|damaged)"):
        ChatSession.from_pretrained(folder, device="cpu")
    data = str(daily_dialog_dir())
    commands = {
        "chat": ["chat", "--model_path", str(folder)],
        "serve": ["serve", "--model", str(folder), "--device", "cpu"],
        "export": ["export", "--model_path", str(folder), "--output_dir", str(tmp_path / "x")],
        "eval": ["eval", "--model", str(folder), "--datasets", "daily_dialog", "--data_dir", data],
        "train": ["train", "--model_name_or_path", str(folder), "--datasets", "daily_dialog",
                  "--data_dir", data, "--output_dir", str(tmp_path / "t"), "--use_cpu"],
    }  # fmt: skip
    for name, argv in commands.items():
        code = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith(f"gpt2chat {name}: error:")]
        assert code == 1 and len(lines) == 1, (name, err[-2000:])
        assert "model.safetensors is" in lines[0] and "Traceback" not in err, (name, err)
