"""The example notebooks run end to end (smoke mode: tiny model, few dialogues, offline, CPU)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, SHARED, corpus_dir, tokenizer_dir

EXAMPLES = REPO / "examples"
NOTEBOOKS = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert NOTEBOOKS == [
        "01_quickstart.ipynb",
        "02_finetune_dailydialog.ipynb",
        "03_push_to_hub.ipynb",
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    import nbformat

    nb = nbformat.read(str(EXAMPLES / name), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a cell has outputs"
            assert cell.execution_count is None, f"{name}: a cell has an execution count"
    source = "".join(cell.source for cell in nb.cells)
    assert "GPT2CHAT_NOTEBOOK_SMOKE" in source
    assert str(SHARED.resolve()) not in source and "/work/" not in source  # no absolute paths


def _kernelspec(folder: Path) -> str:
    """A kernelspec running this interpreter (the venv's), found through JUPYTER_PATH."""
    spec = folder / "kernels" / "gpt2chat-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "gpt2chat test", "language": "python"})
    )
    return "gpt2chat-test"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    jupyter = tmp_path / "jupyter"
    kernel_name = _kernelspec(jupyter)
    workdir = tmp_path / "work"
    workdir.mkdir()
    # The kernel inherits this environment: smoke mode, the suite's data and tokenizer, no network,
    # no token.
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.setenv("GPT2CHAT_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("GPT2CHAT_DATA_DIR", str(corpus_dir()))
    monkeypatch.setenv("GPT2CHAT_TOKENIZER_DIR", str(tokenizer_dir()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no logged-in token
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")

    nb = nbformat.read(str(EXAMPLES / name), as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name=kernel_name, resources={"metadata": {"path": str(workdir)}}
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    print(f"{name}: {elapsed:.1f} s")

    outputs = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert any(workdir.iterdir()), "the notebook wrote nothing to its working folder"
    if name.startswith("02"):
        assert (workdir / "dailydialog_model" / "loss_curves.png").is_file()
        assert "eval_perplexity" in outputs
    if name.startswith("03"):
        assert (workdir / "hub_model" / "README.md").is_file()
        assert "skipping the push" in outputs
    assert os.environ["GPT2CHAT_NOTEBOOK_SMOKE"] == "1"
