"""Chat with a fine-tuned model: :class:`ChatSession` (library) and :func:`run_repl` (terminal)."""

from ..loading import resolve_dtype
from .repl import run_repl
from .session import DEFAULT_GENERATION_OPTIONS, Candidate, ChatSession, TurnStats
from .settings import CHAT_CONFIG_NAME, ChatSettings

__all__ = [
    "CHAT_CONFIG_NAME",
    "DEFAULT_GENERATION_OPTIONS",
    "Candidate",
    "ChatSession",
    "ChatSettings",
    "TurnStats",
    "resolve_dtype",
    "run_repl",
]
