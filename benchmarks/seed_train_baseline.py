"""The baseline of ``benchmarks.train``: the original recipe's training step, as a hand loop.

What the seed did, kept here: the examples (one per reply turn) in a shuffled ``DataLoader``,
each batch padded to its longest example (``input_ids`` and ``token_type_ids`` with the pad /
eos id, ``labels`` with -100), fp32, ``token_type_ids`` fed to GPT-2, and one plain
``torch.optim.AdamW`` step per batch (``zero_grad`` / ``backward`` / ``step``). No length
grouping, no mixed precision, no Trainer. The features come from
:func:`gpt2chat.prepare_dataset`, so the baseline trains on exactly the examples ours does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

IGNORE_INDEX = -100


class SeedPadCollate:
    """The seed's ``pad_collate``: pad to the batch maximum (``input_ids``/``token_type_ids``
    with ``pad_id``, ``labels`` with -100)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: Sequence[dict]) -> tuple[torch.Tensor, ...]:
        def pad(key: str, value: int) -> torch.Tensor:
            seqs = [torch.as_tensor(ex[key], dtype=torch.long) for ex in batch]
            return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)

        return (
            pad("input_ids", self.pad_id),
            pad("token_type_ids", self.pad_id),
            pad("labels", IGNORE_INDEX),
        )


def train_seed(
    model,
    features,
    *,
    pad_id: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 0,
    max_steps: int | None = None,
    time_budget: float | None = None,
) -> dict:
    """Train ``model`` on ``features`` with the seed's loop; stop after ``max_steps`` steps,
    after ``time_budget`` seconds, or after one epoch. Returns ``steps``, ``reply_tokens`` (label
    tokens != -100 of the batches trained) and ``seconds`` (the loop's wall time)."""
    rows = features.select_columns(["input_ids", "token_type_ids", "labels"])
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        rows,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=SeedPadCollate(pad_id),
        generator=generator,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    steps = tokens = 0
    start = time.perf_counter()
    for input_ids, token_type_ids, labels in loader:
        outputs = model(input_ids=input_ids, token_type_ids=token_type_ids, labels=labels)
        optimizer.zero_grad()
        outputs.loss.backward()
        optimizer.step()
        steps += 1
        tokens += int((labels != IGNORE_INDEX).sum())
        if max_steps is not None and steps >= max_steps:
            break
        if time_budget is not None and time.perf_counter() - start >= time_budget:
            break
    return {"steps": steps, "reply_tokens": tokens, "seconds": time.perf_counter() - start}
