"""Replies generated for evaluation: the contexts of prepared examples (up to the reply's
speaker token) and the reply the model gives each, ended where chat ends it (``<eos>`` or
``<sp1>``), in left-padded batches.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch

from ..render import IGNORE_INDEX
from ..tokens import get_speaker_tokens

__all__ = ["generate_replies", "reply_contexts", "sample_indices"]


def reply_contexts(features: datasets.Dataset, indices: list[int]) -> list[dict[str, Any]]:
    """For each example: the context (up to and including the reply's speaker token), its
    token types, and the reference reply ids (without ``<eos>``)."""
    out = []
    for i in indices:
        ex = features[int(i)]
        labels = ex["labels"]
        first = next(j for j, v in enumerate(labels) if v != IGNORE_INDEX)
        reference = [v for v in labels[first:] if v != IGNORE_INDEX][:-1]  # drop <eos>
        out.append(
            {
                "input_ids": ex["input_ids"][:first],
                "token_type_ids": ex["token_type_ids"][:first] if "token_type_ids" in ex else None,
                "reference_ids": reference,
            }
        )
    return out


@torch.no_grad()
def generate_replies(
    model,
    tokenizer,
    contexts: list[dict[str, Any]],
    *,
    use_token_type_ids: bool,
    batch_size: int = 8,
    max_new_tokens: int = 40,
    do_sample: bool = False,
    top_p: float = 0.8,
    temperature: float = 1.0,
) -> list[str]:
    """Generate one reply per context (left-padded batches, KV cache), decoded as text.

    ``token_type_ids`` continue with the reply's speaker for the new tokens (``generate``
    repeats the last one).
    """
    tokens = get_speaker_tokens(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    replies: list[str] = []
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start : start + batch_size]
        longest = max(len(c["input_ids"]) for c in chunk)
        ids = torch.full((len(chunk), longest), tokens.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        types = torch.full_like(ids, tokens.sp2_token_id)
        for i, c in enumerate(chunk):
            n = len(c["input_ids"])
            ids[i, longest - n :] = torch.tensor(c["input_ids"])
            mask[i, longest - n :] = 1
            if c.get("token_type_ids") is not None:
                types[i, longest - n :] = torch.tensor(c["token_type_ids"])
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        if use_token_type_ids:
            inputs["token_type_ids"] = types.to(device)
        sampling = (
            {"do_sample": True, "top_p": top_p, "temperature": temperature}
            if do_sample
            else {"do_sample": False}
        )
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(tokens.reply_stop_ids),  # chat's rule: <eos> or <sp1> ends it
            pad_token_id=tokens.pad_token_id,
            **sampling,
        )
        for row in output[:, longest:].tolist():
            ends = [row.index(t) for t in tokens.reply_stop_ids if t in row]
            row = row[: min(ends)] if ends else row
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    model.train(was_training)
    return replies


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(n)`` drawn with ``seed``, sorted (all of them when ``k >= n``)."""
    if k >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())
