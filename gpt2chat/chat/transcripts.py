"""Conversation transcripts: the JSON file :meth:`ChatSession.save_transcript` writes and
:meth:`~gpt2chat.ChatSession.load_transcript` reads, and the check of a list of messages."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TRANSCRIPT_FORMAT", "read_transcript", "validate_messages", "write_transcript"]

TRANSCRIPT_FORMAT = "gpt2chat-transcript"
TRANSCRIPT_VERSION = 1


def validate_messages(messages: Any, arg: str) -> list[dict[str, str]]:
    """The history's messages as plain ``{"role", "content"}`` dicts; a ``ValueError`` naming
    ``arg`` and the message for anything else."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise ValueError(f"`{arg}` must be a list of {{'role', 'content'}} messages.")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"`{arg}`[{i}] must be a dict with 'role' and 'content', got {m!r}.")
        if m["role"] not in ("user", "assistant"):
            raise ValueError(
                f"`{arg}`[{i}] has role {m['role']!r}: the history holds 'user' and 'assistant' "
                "messages (pass the persona / system text as `persona`)."
            )
        if not isinstance(m["content"], str):
            raise ValueError(f"`{arg}`[{i}]['content'] must be a string, got {m['content']!r}.")
        clean.append({"role": m["role"], "content": m["content"]})
    return clean


def write_transcript(
    path: str | Path, persona: str | None, max_turns: int, messages: list[dict[str, str]]
) -> Path:
    """Write a conversation (persona and messages) to a JSON file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": TRANSCRIPT_FORMAT,
        "version": TRANSCRIPT_VERSION,
        "persona": persona,
        "max_turns": max_turns,
        "messages": messages,
    }
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def read_transcript(path: str | Path) -> tuple[str | None, list[dict[str, str]]]:
    """``(persona, messages)`` of a transcript, or of a plain JSON list of messages (an optional
    first ``system`` message is the persona)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"No transcript at {path}.") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a JSON transcript: {err}") from None
    if isinstance(data, list):
        messages: Any = list(data)
        persona = None
        if messages and isinstance(messages[0], Mapping) and messages[0].get("role") == "system":
            persona = messages.pop(0).get("content")
    elif isinstance(data, Mapping) and "messages" in data:
        messages, persona = data["messages"], data.get("persona")
    else:
        raise ValueError(
            f"{path} is not a gpt2chat transcript: expected {{'messages': [...]}} or a list "
            "of messages."
        )
    return persona, validate_messages(messages, "messages")
