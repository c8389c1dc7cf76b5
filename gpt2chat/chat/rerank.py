"""Maximum-mutual-information reranking of sampled replies (``num_candidates=N``): the scores.

A briefly fine-tuned small model often answers a statement with a reply that would fit any
message ("What about you?"). Sampling several replies and keeping the one the conversation
explains best — ``log p(reply | conversation) - mmi_weight * log p(reply | no conversation)``,
the MMI-antiLM objective of Li et al. (2016), as in DialoGPT's reranking step — prefers replies
about what was said. The conditional term comes from ``generate``'s raw logits; the
no-conversation term from one batched forward pass over ``<bos> [persona] <sp2> reply``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Candidate", "EnoughEnded", "best_candidate", "cut_at_stop", "score_candidates"]


@dataclass
class Candidate:
    """One sampled reply of a turn decoded with ``num_candidates > 1``, with its scores.

    ``log_prob`` is ``log p(reply | conversation)`` and ``unconditional_log_prob`` is
    ``log p(reply | no conversation)`` (the model's own distributions, temperature 1, summed over
    the reply's tokens and its end token); ``score = log_prob - mmi_weight *
    unconditional_log_prob``. ``ended``: the reply stopped by itself (``<eos>`` or a ``<sp1>``
    turn) rather than at ``max_new_tokens``. The reply is the highest-scoring candidate that
    ended (the highest of all when none did).
    """

    text: str
    token_ids: list[int]
    log_prob: float
    unconditional_log_prob: float
    score: float
    ended: bool


class EnoughEnded:
    """A ``StoppingCriteria`` for reranking: end the batch once ``needed`` candidates have ended
    (the others would be longer replies, which are only chosen when none ended)."""

    def __init__(self, prompt_length: int, stop_ids: Sequence[int], needed: int) -> None:
        self.prompt_length = prompt_length
        self.stop_ids = list(stop_ids)
        self.needed = needed

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        stops = torch.tensor(self.stop_ids, device=input_ids.device)
        ended = torch.isin(input_ids[:, self.prompt_length :], stops).any(dim=1)
        done = int(ended.sum()) >= self.needed
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class DistinctFirstTokens:
    """A ``LogitsProcessor`` for reranking: at the reply's first step, give every candidate row a
    different first token, drawn without replacement from the final next-token distribution
    (after temperature, top-p and guidance: place it last). All rows share the prompt, so they
    share that distribution; sampling each row on its own mostly opens every candidate with the
    same most likely word ("Yeah, ..."), and reranking then has little to choose from. Drawn
    without replacement, the candidates start as the distribution's most likely *different*
    words, each with its own chance, and the rest of each reply is sampled as usual. When the
    nucleus holds fewer tokens than there are rows, tokens repeat. Later steps are untouched.
    The draw uses ``generator`` (the call's own; ``None``: torch's global one).
    """

    def __init__(self, prompt_length: int, generator: torch.Generator | None = None) -> None:
        self.prompt_length = prompt_length
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows = scores.shape[0]
        if input_ids.shape[1] != self.prompt_length or rows == 1:
            return scores
        probs = torch.softmax(scores[0].float(), dim=-1)
        available = int((probs > 0).sum())
        picks = torch.multinomial(
            probs, min(rows, available), replacement=False, generator=self.generator
        )
        if len(picks) < rows:
            picks = picks[torch.arange(rows, device=picks.device) % len(picks)]
        index = torch.arange(rows, device=scores.device)
        kept = torch.full_like(scores, -float("inf"))
        kept[index, picks] = scores[index, picks]
        return kept


def valid_mmi_contexts(value: Any) -> bool:
    """Whether ``value`` is a usable ``mmi_contexts``: a list of 1 to 16 non-empty messages."""
    return (
        isinstance(value, (list, tuple))
        and 1 <= len(value) <= 16
        and all(isinstance(text, str) and text.strip() for text in value)
    )


def cut_at_stop(generated: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """A batch row's reply: up to and including its first stop token (padding follows it)."""
    for i, token in enumerate(generated):
        if token in stop_ids:
            return list(generated[: i + 1])
    return list(generated)


def score_candidates(
    model,
    sequences: torch.Tensor,
    logits: Sequence[torch.Tensor],
    *,
    prompt_length: int,
    unconditional_prompts: Sequence[tuple[Sequence[int], Sequence[int] | None]],
    reply_token_type: int,
    stop_ids: Sequence[int],
    pad_token_id: int,
    mmi_weight: float,
    decode: Callable[[list[int]], str],
) -> list[Candidate]:
    """Score the rows ``generate`` sampled from one prompt.

    Args:
        model: the model that generated them (runs the no-conversation passes).
        sequences: ``(rows, prompt_length + steps)``, generate's output sequences.
        logits: generate's raw logits, one ``(rows, vocab)`` tensor per step.
        prompt_length: length of the (shared) prompt.
        unconditional_prompts: the prompts of the reference side, each ``(ids, token types or
            None)``: the no-conversation prompt ``<bos> [persona] <sp2>``, or several generic
            one-message conversations; a reply's ``unconditional_log_prob`` is the log of its
            mean probability over them.
        reply_token_type: the token type of reply tokens.
        stop_ids: tokens that end a reply (``<eos>``, ``<sp1>``).
        pad_token_id: what generate put after a finished row.
        mmi_weight: ``λ`` in ``log p(r | c) - λ log p(r | reference)``.
        decode: turns a reply's ids into its text.
    """
    replies = [cut_at_stop(row[prompt_length:].tolist(), stop_ids) for row in sequences]
    steps = sequences[:, prompt_length:]
    conditional = torch.stack(
        [
            torch.log_softmax(step.float(), dim=-1).gather(1, steps[:, i : i + 1]).squeeze(1)
            for i, step in enumerate(logits)
        ],
        dim=1,
    )
    references = torch.stack(
        [
            _reply_log_probs(model, ids, types, replies, reply_token_type, pad_token_id)
            for ids, types in unconditional_prompts
        ]
    )  # (prompts, rows)
    unconditional = torch.logsumexp(references, dim=0) - math.log(len(unconditional_prompts))
    candidates = []
    for row, reply in enumerate(replies):
        cond = float(conditional[row, : len(reply)].sum())
        uncond = float(unconditional[row])
        candidates.append(
            Candidate(
                text=decode(reply),
                token_ids=reply,
                log_prob=cond,
                unconditional_log_prob=uncond,
                score=cond - mmi_weight * uncond,
                ended=bool(reply) and reply[-1] in stop_ids,
            )
        )
    return candidates


def _reply_log_probs(
    model,
    prompt_ids: Sequence[int],
    prompt_types: Sequence[int] | None,
    replies: Sequence[list[int]],
    reply_token_type: int,
    pad_token_id: int,
) -> torch.Tensor:
    """``log p(reply | prompt)`` of every reply, from one batched forward pass."""
    device = next(model.parameters()).device
    # Replies right-padded: causal attention keeps a reply's positions independent of the padding.
    start = len(prompt_ids)
    width = max(len(r) for r in replies)
    ids = torch.tensor(
        [list(prompt_ids) + r + [pad_token_id] * (width - len(r)) for r in replies], device=device
    )
    kwargs: dict[str, Any] = {"use_cache": False}
    if prompt_types is not None:
        types = list(prompt_types) + [reply_token_type] * width
        kwargs["token_type_ids"] = torch.tensor([types] * len(replies), device=device)
    out = model(ids, **kwargs).logits[:, start - 1 : -1].float()
    per_token = torch.log_softmax(out, dim=-1).gather(2, ids[:, start:, None]).squeeze(2)
    lengths = torch.tensor([len(r) for r in replies], device=device)
    mask = torch.arange(width, device=device)[None, :] < lengths[:, None]
    return (per_token * mask).sum(dim=1)


def best_candidate(candidates: Sequence[Candidate]) -> int:
    """The index of the reply: the best score among those that ended (of all when none did)."""
    return max(range(len(candidates)), key=lambda i: (candidates[i].ended, candidates[i].score))
