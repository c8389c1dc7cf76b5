"""Resuming: a run killed with SIGKILL right after a checkpoint, resumed with the seed's
``--ckpt_name``, ends with the weights of the same run left uninterrupted."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from gpt2chat import DialogueTrainer
from gpt2chat.training import DataArguments

from ..conftest import REPO
from .helpers import daily_dialogues, gpt2_tokenizer, tiny_model, training_args

STEPS, SAVE_EVERY, KILL_AT = 6, 2, 4


def make_trainer(output_dir, **overrides):
    """2 epochs of 3 steps with dropout (so the RNG state matters), a checkpoint every 2 steps."""
    values = {"max_steps": STEPS, "save_strategy": "steps", "save_steps": SAVE_EVERY,
              "save_total_limit": None, "learning_rate": 1e-2}  # fmt: skip
    return DialogueTrainer(
        tiny_model(dropout=0.1),
        training_args(output_dir, **{**values, **overrides}),
        train_dataset=daily_dialogues("validation", n=6),
        processing_class=gpt2_tokenizer(),
        data_args=DataArguments(datasets="daily_dialog", max_len=48, max_train_samples=12),
    )


KILLED_RUN = textwrap.dedent(
    f"""
    import os, signal, sys
    import torch
    from transformers import TrainerCallback
    from tests.training.test_resume import make_trainer

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == {KILL_AT}:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(int(sys.argv[2]))  # the parent's: same float reductions
    trainer = make_trainer(sys.argv[1])
    trainer.add_callback(Kill())
    trainer.train()
    """
)


KILLED_IN_SAVE = textwrap.dedent(
    f"""
    import os, signal, sys
    import torch
    from transformers import Trainer
    from tests.training.test_resume import make_trainer

    save_rng_state = Trainer._save_rng_state

    def killed(self, output_dir):  # model, optimizer and scheduler written; RNG and state not
        if self.state.global_step == {KILL_AT}:
            os.kill(os.getpid(), signal.SIGKILL)
        return save_rng_state(self, output_dir)

    Trainer._save_rng_state = killed
    torch.set_num_threads(int(sys.argv[2]))
    make_trainer(sys.argv[1]).train()
    """
)


def run_killed(script: str, out) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out), str(torch.get_num_threads())],
        env=env, cwd=str(REPO),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


def assert_same_as_uninterrupted(resumed, tmp_path) -> None:
    full = make_trainer(tmp_path / "full")
    full.train()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)
    full_losses = [h["loss"] for h in full.state.log_history if "loss" in h]
    resumed_losses = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert resumed_losses == pytest.approx(full_losses, rel=1e-6)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    out = tmp_path / "killed"
    run_killed(KILLED_RUN, out)
    resumed = make_trainer(out, ckpt_name=f"checkpoint-{KILL_AT}")  # the seed's --ckpt_name
    result = resumed.train()
    assert resumed.state.global_step == STEPS and result.global_step == STEPS
    assert_same_as_uninterrupted(resumed, tmp_path)


@pytest.mark.slow
def test_sigkill_during_a_save_resumes_last_from_the_previous_checkpoint(tmp_path, caplog):
    from gpt2chat.training.checkpoints import checkpoint_problems

    out = tmp_path / "killed"
    run_killed(KILLED_IN_SAVE, out)
    assert "no trainer_state.json (the save was cut short)" in checkpoint_problems(
        out / "checkpoint-4"
    )
    resumed = make_trainer(out, resume_from_checkpoint="last")
    with caplog.at_level(logging.INFO, logger="gpt2chat"):
        resumed.train()
    assert f"resuming from {out / 'checkpoint-2'}, the newest complete checkpoint" in caplog.text
    assert "passed over checkpoint-4 (no trainer_state.json" in caplog.text
    assert resumed.state.global_step == STEPS
    assert checkpoint_problems(out / "checkpoint-4") == []  # saved again, whole this time
    assert_same_as_uninterrupted(resumed, tmp_path)


def test_unknown_or_incomplete_checkpoint_is_a_clear_error(tmp_path):
    from gpt2chat.training.trainer import resolve_checkpoint

    (tmp_path / "checkpoint-3").mkdir()  # a folder, but not a checkpoint (nothing was saved)
    assert resolve_checkpoint(None, str(tmp_path)) is None
    with pytest.raises(ValueError, match=r"checkpoint-3 is damaged or incomplete: no trainer_st"):
        resolve_checkpoint("checkpoint-3", str(tmp_path))
    with pytest.raises(
        ValueError, match=r"no complete checkpoint in .*: checkpoint-3 \(no trainer_state\.json"
    ):
        resolve_checkpoint("last", str(tmp_path))
    with pytest.raises(
        ValueError, match=r"no such checkpoint folder\. Checkpoints in .*: checkpoint-3"
    ):
        resolve_checkpoint("checkpoint-9", str(tmp_path))
    with pytest.raises(ValueError, match=r"seed.s \.ckpt files"):
        resolve_checkpoint("best_ckpt_epoch=3.ckpt", str(tmp_path))
    with pytest.raises(ValueError, match=r"no checkpoint-\* folder"):
        resolve_checkpoint("last", str(tmp_path / "empty"))
