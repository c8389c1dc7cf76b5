"""A turn's prompts, rendered from the conversation by the training renderer.

The user's message checked and, when it alone cannot fit the context, cut; the windowed prompt
of the turn (:func:`gpt2chat.render.render_messages`, as training renders examples); and the
generic one-message prompts reranking can score replies against. :class:`~gpt2chat.ChatSession`
calls these with its history and persona; the engine gets the ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..render import encode_texts, render_messages
from ..tokens import SpeakerTokens
from .stream import Prompt

logger = logging.getLogger(__name__)

__all__ = ["Turn", "check_text", "fit_user_text", "reference_prompts", "render_turn"]


@dataclass
class Turn:
    """A rendered turn, ready for the engine."""

    user_message: dict[str, str]
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool


def check_text(text: Any) -> str:
    """The user's message, refused when it is not a string or has no text."""
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise ValueError("The message is empty: type some text to send.")
    return text


def fit_user_text(tokenizer, text: str, budget: int, max_len: int) -> tuple[str, bool]:
    """Cut ``text`` (keeping its beginning) to at most ``budget`` tokens; whether it was cut."""
    if len(encode_texts(tokenizer, [text])[0]) <= budget:
        return text, False
    lo, hi = 0, len(text)  # longest prefix that fits: binary search on characters
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode_texts(tokenizer, [text[:mid]])[0]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    logger.warning(
        "The message (%d characters) is too long for the context of %d tokens: cut to its "
        "first %d characters.",
        len(text),
        max_len,
        lo,
    )
    if not text[:lo].strip():
        raise ValueError("The message has no text that fits the context: send a shorter one.")
    return text[:lo], True


def render_turn(
    tokenizer,
    tokens: SpeakerTokens,
    messages: list[dict[str, str]],
    *,
    truncated: bool,
    max_turns: int,
    max_len: int,
    reserve: int,
) -> Turn:
    """The prompt of the turn whose last message is the user's: the last ``max_turns``
    messages (the persona kept), whole ones dropped until ``max_len - reserve`` tokens fit."""
    rendered = render_messages(
        messages,
        tokenizer,
        tokens=tokens,
        add_generation_prompt=True,
        max_turns=max_turns,
        max_len=max_len,
        reserve=reserve,
    )
    return Turn(messages[-1], rendered["input_ids"], rendered["token_type_ids"], truncated)


def reference_prompts(
    tokenizer, tokens: SpeakerTokens, persona: str | None, contexts: Sequence[str]
) -> list[Prompt]:
    """One generic one-message conversation per text of ``contexts`` (with the persona), as
    reranking's reference prompts ``(ids, token types)``."""
    system = [{"role": "system", "content": persona}] if persona else []
    prompts = []
    for text in contexts:
        rendered = render_messages(
            [*system, {"role": "user", "content": text}],
            tokenizer,
            tokens=tokens,
            add_generation_prompt=True,
        )
        prompts.append((rendered["input_ids"], rendered["token_type_ids"]))
    return prompts
