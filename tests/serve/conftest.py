"""Fixtures of the server tests: one saved tiny chat model per test module, and the same model
loaded on its own to compute what ``ChatSession`` replies."""

from __future__ import annotations

import pytest

from . import save_chat_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_chat_model(tmp_path_factory.mktemp("serve") / "tiny-chat")


@pytest.fixture(scope="module")
def reference(model_dir):
    """The model loaded on its own, to compute what ChatSession replies."""
    from gpt2chat.chat.session import ChatSession

    return ChatSession.from_pretrained(model_dir, device="cpu")
