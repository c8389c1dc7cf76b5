"""Several processes: ``accelerate launch`` (with the shipped 2-CPU-process config) and
``torchrun`` running ``python -m gpt2chat train`` over gloo on a tiny model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpt2chat.cli import main
from gpt2chat.training.checkpoints import MANIFEST_NAME, checkpoint_problems

from ..conftest import REPO
from .helpers import daily_dialog_dir, save_tiny_model

BIN = Path(sys.executable).parent


def common_args(model_dir, output_dir, batch_size):
    return [
        "train",
        "--model_name_or_path", str(model_dir),
        "--datasets", "daily_dialog",
        "--data_dir", str(daily_dialog_dir()),
        "--train_split", "validation",
        "--eval_split", "test",
        "--max_train_samples", "16",
        "--max_eval_samples", "7",  # odd: the last eval batch of a process is padded
        "--per_device_eval_batch_size", "2",
        "--max_len", "48",
        "--num_epochs", "1",
        "--batch_size", str(batch_size),
        "--optim", "sgd",  # compares gradients without Adam's sign-like first steps
        "--lr", "1.0",
        "--warmup_ratio", "0",
        "--ckpt_dir", str(output_dir),
        "--use_cpu",
        "--disable_tqdm", "true",
        "--logging_steps", "1",
        "--save_total_limit", "1",
    ]  # fmt: skip


def free_port() -> int:
    """A free TCP port for the rendezvous (29500, the default, may be taken on a shared host)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_marked(marker: str) -> None:
    """SIGKILL every process started with ``marker`` in its environment (the launcher's workers
    run in sessions of their own, out of reach of its process group)."""
    needle = f"GPT2CHAT_TEST_LAUNCH={marker}".encode()
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc_dir.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def launch(cmd, tmp_path, timeout: int = 240) -> str:
    """Run a launcher, its output to a file; on timeout every process it started is killed."""
    marker = uuid.uuid4().hex
    env = {
        **os.environ,
        "DATASETS_VERBOSITY": "info",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "GPT2CHAT_TEST_LAUNCH": marker,
    }
    log_path = tmp_path / "launch.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_marked(marker)
            proc.wait()
            pytest.fail(f"{cmd[:3]} did not finish in {timeout} s:\n{log_path.read_text()[-6000:]}")
    output = log_path.read_text()
    assert proc.returncode == 0, output[-6000:]
    return output


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny")
    two, one = tmp_path / "two", tmp_path / "one"
    config = REPO / "examples" / "accelerate" / "cpu_2proc.yaml"
    log = launch(
        [str(BIN / "accelerate"), "launch", "--config_file", str(config),
         "--main_process_port", str(free_port()), "-m", "gpt2chat",
         *common_args(model_dir, two, batch_size=2), "--report_to", "tensorboard"],
        tmp_path,
    )  # fmt: skip

    # Two ranks trained, each on half of every global batch of 4: 16 examples -> 4 steps.
    state = json.loads((two / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert "| `processes` | 2 |" in (two / "README.md").read_text()
    assert log.count("Training finished.") == 1  # the summary: main process only
    # Only the main process writes: TensorBoard files of one process id, one set of checkpoints.
    events = list((two / "runs").rglob("events.out.tfevents*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1
    assert sorted(p.name for p in two.glob("checkpoint-*")) == ["checkpoint-4"]
    # ... complete: both ranks' RNG states in it and in its list of files, written last
    listed = json.loads((two / "checkpoint-4" / MANIFEST_NAME).read_text())["files"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(listed)
    assert checkpoint_problems(two / "checkpoint-4") == []
    # The main process rendered the examples once; the other one loaded its cache file.
    # (records of the datasets logger, as formatted by the CLI's logging setup)
    assert log.count("datasets.arrow_dataset: Caching processed dataset at") == 2  # train, eval
    assert log.count("datasets.arrow_dataset: Loading cached processed dataset at") == 2

    assert main([*common_args(model_dir, one, batch_size=4), "--report_to", "none"]) == 0
    assert json.loads((one / "trainer_state.json").read_text())["global_step"] == 4
    w2, w1 = load_file(str(two / "model.safetensors")), load_file(str(one / "model.safetensors"))
    initial = load_file(str(model_dir / "model.safetensors"))
    moved = (
        (w1["transformer.h.0.mlp.c_fc.weight"] - initial["transformer.h.0.mlp.c_fc.weight"])
        .abs()
        .max()
    )
    assert moved > 1e-3  # training changed the weights well beyond the tolerance below
    for name, value in w1.items():
        torch.testing.assert_close(w2[name], value, rtol=1e-4, atol=2e-6, msg=name)
    r2 = json.loads((two / "eval_results.json").read_text())
    r1 = json.loads((one / "eval_results.json").read_text())
    assert r2["eval_tokens"] == r1["eval_tokens"]  # duplicated padding examples not counted
    assert r2["eval_perplexity"] == pytest.approx(r1["eval_perplexity"], rel=1e-4)


@pytest.mark.slow
def test_torchrun_starts_two_training_processes(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    args = common_args(model_dir, out, batch_size=2)
    args[args.index("--max_train_samples") + 1] = "8"
    launch(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), "-m", "gpt2chat",
         *args, "--eval_strategy", "no", "--load_best_model_at_end", "false", "--report_to", "none"],
        tmp_path,
    )  # fmt: skip
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2  # 8 / (2 x 2)
    assert "| `processes` | 2 |" in (out / "README.md").read_text()
