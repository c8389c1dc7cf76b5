"""gpt2chat.tokens: the tokenizer facts (the speaker tokens read back from a tokenizer), and
the module order: tokens.py below render.py (the format) below extend.py, no import circle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from gpt2chat import add_speaker_tokens, get_speaker_tokens
from gpt2chat.tokens import SpeakerTokens, load_tokenizer

PACKAGE = Path(__file__).resolve().parents[1] / "gpt2chat"


def test_get_speaker_tokens_on_plain_tokenizer(gpt2_tokenizer):
    with pytest.raises(ValueError, match="add_speaker_tokens"):
        get_speaker_tokens(gpt2_tokenizer)


def test_speaker_tokens_read_back_from_a_reloaded_tokenizer(gpt2_tokenizer, tmp_path):
    tokens = add_speaker_tokens(gpt2_tokenizer)
    gpt2_tokenizer.save_pretrained(tmp_path)
    for reloaded in (AutoTokenizer.from_pretrained(tmp_path), load_tokenizer(str(tmp_path))):
        assert get_speaker_tokens(reloaded) == tokens
    assert isinstance(tokens, SpeakerTokens)
    assert tokens.reply_stop_ids == (tokens.eos_token_id, tokens.sp1_token_id)
    assert tokens.to_dict()["sp2_token"] == "<sp2>"


def test_an_unknown_recorded_token_is_an_error(chat_tokenizer):
    chat_tokenizer.init_kwargs["gpt2chat_speaker_tokens"] = {
        "bos_token": "<bos>",
        "sp1_token": "<nope>",
        "sp2_token": "<sp2>",
    }
    with pytest.raises(ValueError, match="sp1_token='<nope>'"):
        get_speaker_tokens(chat_tokenizer)


def _gpt2chat_imports(module: str) -> set[str]:
    """The gpt2chat modules ``gpt2chat/<module>.py`` imports (at any depth: lazy ones too)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gpt2chat."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("gpt2chat."))
    return found


def test_tokens_render_extend_layering():
    """tokens.py (tokenizer facts) imports no gpt2chat module, not even lazily; render.py (the
    format) imports only tokens.py; extend.py (the extension helper) sits on both."""
    assert _gpt2chat_imports("tokens") == set()
    assert _gpt2chat_imports("render") == {"tokens"}
    assert _gpt2chat_imports("extend") == {"render", "tokens"}


def test_each_module_imports_first():
    """No import circle: each of tokens, render and extend imports first in a fresh interpreter."""
    modules = ("gpt2chat.tokens", "gpt2chat.render", "gpt2chat.extend")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", f"import {m}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in modules
    ]
    for module, proc in zip(modules, procs):
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"import {module} failed:\n{err}"
