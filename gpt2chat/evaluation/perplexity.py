"""Token-weighted perplexity: the per-example next-token NLL that both
:class:`gpt2chat.DialogueTrainer`'s evaluation and :func:`gpt2chat.evaluate_model` sum, and the
sum over a dataset split between processes (``torchrun`` / ``accelerate launch``).
"""

from __future__ import annotations

import math

import datasets
import torch

from ..render import IGNORE_INDEX

__all__ = ["dataset_nll", "perplexity", "token_nll"]


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed next-token NLL and number of supervised tokens (float64).

    Position ``t`` predicts ``labels[t + 1]``, as in the model's own causal-LM loss; ``-100``
    labels are ignored.
    """
    shift_labels = labels[:, 1:]
    sums = torch.zeros(labels.shape[0], dtype=torch.float64, device=labels.device)
    for i in range(labels.shape[0]):  # one row at a time: float32 logits of a row only
        row = torch.nn.functional.cross_entropy(
            logits[i, :-1].float(),
            shift_labels[i].long(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        sums[i] = row.double()
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1).to(torch.float64)
    return sums, counts


def perplexity(loss: float) -> float:
    """``exp(loss)``, ``inf`` where it overflows."""
    return math.exp(loss) if loss < 700 else float("inf")


@torch.no_grad()
def dataset_nll(
    model,
    features: datasets.Dataset,
    collator,
    *,
    batch_size: int,
    state=None,
    desc: str | None = None,
) -> tuple[float, int]:
    """The summed NLL of every label token of ``features`` and their number, over all
    processes: each process scores its share of the examples (``state``: an
    ``accelerate.PartialState``, default the current one) and the totals are gathered."""
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    state = state if state is not None else PartialState()
    device = next(model.parameters()).device
    nll = tokens = 0.0
    with state.split_between_processes(list(range(len(features)))) as mine:
        if mine:
            loader = DataLoader(features.select(mine), batch_size=batch_size, collate_fn=collator)
            bar = tqdm(loader, desc=desc, disable=not state.is_local_main_process)
            for batch in bar:
                labels = batch.pop("labels").to(device)
                inputs = {k: v.to(device) for k, v in batch.items()}
                sums, counts = token_nll(model(**inputs).logits, labels)
                nll += float(sums.sum().item())
                tokens += float(counts.sum().item())
    if state.num_processes > 1:
        totals = gather_object([(nll, tokens)])
        nll, tokens = sum(t[0] for t in totals), sum(t[1] for t in totals)
    return nll, int(tokens)
