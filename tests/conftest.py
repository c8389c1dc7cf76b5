"""Shared fixtures: the real GPT-2 tokenizer and data in ``$GPT2CHAT_SHARED`` (default ``../shared``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPT2CHAT_SHARED", REPO.parent / "shared"))
TOKENIZER_DIR = SHARED / "assets" / "gpt2-tokenizer"
DATA_DIR = SHARED / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_loader_cache(tmp_path_factory):
    """Loader caches (``GPT2CHAT_CACHE``) go to a temporary folder, inherited by subprocesses."""
    old = os.environ.get("GPT2CHAT_CACHE")
    os.environ["GPT2CHAT_CACHE"] = str(tmp_path_factory.mktemp("gpt2chat-cache"))
    yield
    if old is None:
        os.environ.pop("GPT2CHAT_CACHE", None)
    else:
        os.environ["GPT2CHAT_CACHE"] = old


def require_shared(*parts: str) -> Path:
    """Path under the shared folder, or skip the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (set GPT2CHAT_SHARED to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    return require_shared("data")


@pytest.fixture
def gpt2_tokenizer():
    """A fresh real GPT-2 tokenizer (not extended)."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(require_shared("assets", "gpt2-tokenizer")))


@pytest.fixture
def chat_tokenizer(gpt2_tokenizer):
    """The real GPT-2 tokenizer extended with the speaker tokens."""
    from gpt2chat import add_speaker_tokens

    add_speaker_tokens(gpt2_tokenizer)
    return gpt2_tokenizer


def tiny_gpt2(vocab_size: int = 50257, n_positions: int = 256, seed: int = 0):
    """A tiny random GPT-2 (2 layers, 64 wide)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_layer=2, n_head=2, n_embd=64
    )
    return GPT2LMHeadModel(config)


@pytest.fixture
def tiny_model():
    return tiny_gpt2()
