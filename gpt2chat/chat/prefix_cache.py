"""The prefix cache: the KV cache an :class:`~gpt2chat.chat.engine.Engine` keeps between calls.

The next prompt is compared token by token with what the cache holds and only the part after the
longest common prefix is encoded. In a conversation whose window has not slid, that is just the
new user turn, so the time to the first token of a reply does not grow with the conversation.
When the window slides, the prompt's beginning changes and (with GPT-2's absolute positions)
everything is encoded again. Reuse never changes the result: the cached keys and values of a
position depend only on the tokens (and token types) up to that position, and those are
compared exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..loading import unwrap_peft

__all__ = ["PrefixCache"]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Hands out the KV cache a call starts from and keeps the one it ends with.

    Args:
        model: the model whose cache this is.
        enabled: keep the cache between calls (``False``: every call starts empty).
        implementation: ``"dynamic"`` (transformers' ``DynamicCache``) or
            ``"static"`` (one preallocated ``StaticCache`` of ``max_len`` positions, reused).
        max_len: the static cache's size.
    """

    def __init__(self, model, *, enabled: bool, implementation: str, max_len: int) -> None:
        self.model = model
        self.enabled = enabled
        self.implementation = implementation
        self.max_len = max_len
        self._cache: Any = None
        self._static: Any = None
        self._ids: list[int] = []
        self._types: list[int] = []

    def forget(self) -> None:
        """Drop the kept cache (the next call encodes its whole prompt)."""
        self._cache = None
        self._ids, self._types = [], []

    def take(
        self, input_ids: list[int], token_type_ids: list[int] | None, *, beam_search: bool
    ) -> tuple[Any, int]:
        """The cache to start from (cropped to the reusable prefix) and how many tokens it holds
        (call in ``torch.inference_mode``). Until :meth:`keep`, no cache is kept."""
        from transformers import DynamicCache, StaticCache

        cache, cached_ids, cached_types = self._cache, self._ids, self._types
        self.forget()
        if beam_search:
            return None, 0  # beam search reorders the cache by beam: never reused
        keep = 0
        if self.enabled and cache is not None:
            keep = _common_prefix(cached_ids, input_ids)
            if token_type_ids is not None:
                keep = min(keep, _common_prefix(cached_types, token_type_ids))
            keep = min(keep, len(input_ids) - 1)  # at least one token to run
        if keep > 0:
            held = int(cache.get_seq_length())
            if held > keep:
                cache.crop(keep - held)  # negative: remove that many tokens
            return cache, keep
        config = unwrap_peft(self.model).config
        if self.implementation == "static":
            if self._static is None:
                self._static = StaticCache(config=config, max_cache_len=self.max_len)
            self._static.reset()
            return self._static, 0
        return DynamicCache(config=config), 0

    def keep(self, cache: Any, sequence: list[int], token_type_ids: list[int] | None) -> None:
        """Keep ``cache`` after a call that ended with ``sequence`` (prompt + reply) and those
        token types (``None``: not compared)."""
        if cache is None or not self.enabled:
            return
        held = int(cache.get_seq_length())
        if 0 < held <= len(sequence):
            self._cache = cache
            self._ids = sequence[:held]
            self._types = token_type_ids[:held] if token_type_ids is not None else []
