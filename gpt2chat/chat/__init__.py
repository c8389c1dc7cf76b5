"""Chat with a fine-tuned model: :class:`ChatSession` (the conversation), :class:`Engine` (its
decoding: token ids in, tokens out) and :func:`run_repl` (terminal)."""

from ..loading import resolve_dtype
from .engine import Engine
from .repl import run_repl
from .session import DEFAULT_GENERATION_OPTIONS, Candidate, ChatSession, TurnStats
from .settings import CHAT_CONFIG_NAME, ChatSettings

__all__ = [
    "CHAT_CONFIG_NAME",
    "DEFAULT_GENERATION_OPTIONS",
    "Candidate",
    "ChatSession",
    "ChatSettings",
    "Engine",
    "TurnStats",
    "resolve_dtype",
    "run_repl",
]
