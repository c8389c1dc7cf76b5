"""Context guidance: make a reply depend more on the conversation than on the reply's own prior.

A small model fine-tuned briefly tends to open every reply the same way ("Yeah", "Not bad",
"What about you?") whatever was said: its first tokens follow the marginal distribution of
replies more than the message. :class:`ContextGuidanceLogitsProcessor` contrasts, at every
decoding step, the model's distribution for the reply *given the conversation* with its
distribution for the same reply *given no conversation* (``<bos> [persona] <sp2>`` rendered by
the training renderer) — classifier-free guidance (Sanchez et al., 2023, "Stay on topic with
Classifier-Free Guidance"), the decoding-time form of the MMI objective for dialogue (Li et al.,
2016)::

    log p'(t) = g * log p(t | conversation, reply so far) - (g - 1) * log p(t | reply so far)

``g = 1`` is plain decoding; ``g > 1`` favours tokens the conversation makes more likely.

It is a ``LogitsProcessor`` for ``model.generate``: the unconditional branch keeps its own KV
cache (one short extra forward pass per step). It expects the scores *after* the sampling
warpers: :class:`~gpt2chat.ChatSession` builds those itself and puts this processor last
(``generate`` on its own runs user processors before its temperature / top-k / top-p), so under
sampling the candidates are the nucleus (``top_p`` / ``top_k``, after temperature and
repetition penalty) that the conversation gives, and guidance re-weights them; it never brings
in a token the conditional model ruled out. (transformers' own ``guidance_scale`` processor is
not used: it mixes before temperature and top-p, so a large scale can promote tokens outside the
nucleus, and its unconditional branch gets no ``token_type_ids``, which GPT-2 models here take.
With neither difference in play — greedy decoding, no token types — both give the same tokens.)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessor

__all__ = ["ContextGuidanceLogitsProcessor", "check_guidance_scale"]


def check_guidance_scale(value: Any) -> float:
    """Validate ``guidance_scale``: a number >= 0 (1 turns guidance off)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"`guidance_scale` must be a number >= 0 (1 = off; 1.2-1.5 makes replies follow the "
            f"conversation more), got {value!r}."
        )
    return float(value)


class ContextGuidanceLogitsProcessor(LogitsProcessor):
    """Contrast the conditional next-token distribution with a no-conversation one.

    Args:
        model: the model ``generate`` runs (the unconditional branch runs it too).
        guidance_scale: ``g``; 1 leaves the scores unchanged (up to normalisation).
        prompt_length: length of the prompt passed to ``generate``: what follows it in
            ``input_ids`` is the reply so far.
        unconditional_ids: the no-conversation prompt (``<bos> [persona] <sp2>``).
        unconditional_token_type_ids: its token types, for models that take them (GPT-2).
        reply_token_type: the token type of reply tokens (the bot's speaker token).
        temperature: the temperature generate applied to the scores (the unconditional
            distribution is tempered alike, so both sides are on the same scale).
        cache_kwarg: the forward argument that takes the KV cache (default: ``cache`` when the
            model's ``forward`` has it, else ``past_key_values``).
    """

    def __init__(
        self,
        model,
        guidance_scale: float,
        prompt_length: int,
        unconditional_ids: Sequence[int],
        *,
        unconditional_token_type_ids: Sequence[int] | None = None,
        reply_token_type: int | None = None,
        temperature: float = 1.0,
        cache_kwarg: str | None = None,
    ) -> None:
        self.model = model
        self.guidance_scale = check_guidance_scale(guidance_scale)
        self.prompt_length = int(prompt_length)
        self.unconditional_ids = list(unconditional_ids)
        self.unconditional_token_type_ids = (
            list(unconditional_token_type_ids) if unconditional_token_type_ids else None
        )
        if self.unconditional_token_type_ids is not None:
            assert len(self.unconditional_token_type_ids) == len(self.unconditional_ids)
            assert reply_token_type is not None, "token types need the reply's type"
        self.reply_token_type = reply_token_type
        self.temperature = float(temperature) if temperature else 1.0
        if cache_kwarg is None:
            forward = getattr(model, "forward", None)
            params = inspect.signature(forward).parameters if forward is not None else {}
            cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.cache_kwarg = cache_kwarg
        self._cache = None
        self._fed = 0  # reply tokens the unconditional branch has seen
        self._rows: int | None = None  # sequences decoded side by side (fixed once seen)

    def _unconditional_log_probs(self, replies: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of the next token of each row's reply given no conversation."""
        rows = replies.shape[0]
        new = replies[:, self._fed :]
        device = replies.device
        types: torch.Tensor | None = None
        if self._cache is None:
            config = getattr(self.model, "config", None)
            self._cache = DynamicCache(config=config) if config is not None else DynamicCache()
            prompt = torch.tensor([self.unconditional_ids], dtype=torch.long, device=device)
            ids = torch.cat([prompt.expand(rows, -1), new], dim=1)
            if self.unconditional_token_type_ids is not None:
                prompt_types = torch.tensor(
                    [self.unconditional_token_type_ids], dtype=torch.long, device=device
                )
                types = torch.cat(
                    [prompt_types.expand(rows, -1), torch.full_like(new, self.reply_token_type)],
                    dim=1,
                )
        else:
            ids = new
            if self.unconditional_token_type_ids is not None:
                types = torch.full_like(new, self.reply_token_type)
        kwargs: dict[str, Any] = {self.cache_kwarg: self._cache, "use_cache": True}
        if types is not None:
            kwargs["token_type_ids"] = types
        out = self.model(ids, **kwargs)
        self._fed = replies.shape[1]
        logits = out.logits[:, -1].float() / self.temperature
        return torch.log_softmax(logits, dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._rows is None:
            self._rows = input_ids.shape[0]
        elif input_ids.shape[0] != self._rows:
            raise ValueError(
                "Context guidance keeps one unconditional row per sequence, in order: the batch "
                f"changed size ({self._rows} -> {input_ids.shape[0]}). Use a new processor per "
                "generate call, with sampling or greedy decoding (not beam search)."
            )
        conditional = torch.log_softmax(scores.float(), dim=-1)
        if self.guidance_scale == 1.0:
            return conditional.to(scores.dtype)
        unconditional = self._unconditional_log_probs(input_ids[:, self.prompt_length :])
        unconditional = unconditional[:, : conditional.shape[-1]].to(conditional.device)
        mixed = self.guidance_scale * conditional - (self.guidance_scale - 1.0) * unconditional
        # Tokens the processors before this one ruled out stay out (also for g = 0).
        mixed = torch.where(torch.isneginf(conditional), conditional, mixed)
        return mixed.to(scores.dtype)
