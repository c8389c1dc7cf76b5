"""``DialogueCollator``: pads a batch of rendered examples. It builds no labels: they come
from the map step, and padding never touches the mask (GPT-2's pad is its eos, which must
be learned)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .render import IGNORE_INDEX

__all__ = ["DialogueCollator"]


@dataclass
class DialogueCollator:
    """Pad ``input_ids`` / ``token_type_ids`` / ``labels`` to the longest example of the batch.

    Args:
        pad_token_id: id used to pad ``input_ids`` (and ``token_type_ids``).
        pad_to_multiple_of: round the padded length up to a multiple of this (e.g. 8 for
            tensor cores).
        return_token_type_ids: include ``token_type_ids``; switch off for models whose forward
            does not take them (Llama-style).
        padding_side: ``"right"`` (training) or ``"left"``.
        max_length: optional hard cap; longer examples are an error (they should have been
            cropped at map time).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_token_type_ids: bool = True
    padding_side: str = "right"
    max_length: int | None = None

    def __post_init__(self):
        if self.padding_side not in ("right", "left"):
            raise ValueError(
                f"`padding_side` must be 'right' or 'left', got {self.padding_side!r}."
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"`pad_to_multiple_of` must be >= 1, got {self.pad_to_multiple_of}.")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("DialogueCollator got an empty batch.")
        lengths = [len(ex["input_ids"]) for ex in examples]
        longest = max(lengths)
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(
                f"An example has {longest} tokens, more than max_length={self.max_length}; "
                "prepare the data with a smaller max_len."
            )
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch_size = len(examples)
        input_ids = torch.full((batch_size, longest), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((batch_size, longest), dtype=torch.long)
        has_types = self.return_token_type_ids and "token_type_ids" in examples[0]
        has_labels = "labels" in examples[0]
        types = torch.full_like(input_ids, self.pad_token_id) if has_types else None
        labels = torch.full_like(input_ids, IGNORE_INDEX) if has_labels else None
        for i, (ex, n) in enumerate(zip(examples, lengths)):
            sl = slice(0, n) if self.padding_side == "right" else slice(longest - n, longest)
            input_ids[i, sl] = torch.as_tensor(ex["input_ids"], dtype=torch.long)
            attention[i, sl] = 1
            if types is not None:
                types[i, sl] = torch.as_tensor(ex["token_type_ids"], dtype=torch.long)
            if labels is not None:
                labels[i, sl] = torch.as_tensor(ex["labels"], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if types is not None:
            batch["token_type_ids"] = types
        if labels is not None:
            batch["labels"] = labels
        return batch
