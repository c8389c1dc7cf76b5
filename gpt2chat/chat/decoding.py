"""Decoding helpers the :class:`~gpt2chat.chat.engine.Engine` hands to ``model.generate``.

Two things, each motivated by the ``chat`` benchmark (``benchmarks/NOTES.md``):

* :func:`relayout_output_embeddings`: on CPU, store the (tied) output embedding transposed in
  memory — same values, same shape, no extra memory — so the batch-1 LM-head product reads it
  in the layout this BLAS streams fastest (``x @ W`` with ``W`` as ``(d, vocab)``: ~1.8x the
  bandwidth of the ``(vocab, d)`` layout of ``F.linear``).
* :func:`sampling_processors`: the sampling warpers ``generate`` would build from a
  ``GenerationConfig`` (temperature, top-k, top-p, min-p, typical, epsilon, eta; same order),
  built by the engine instead, so that its own processors (context guidance) can run *after*
  them: ``generate`` merges user processors before its warpers. Top-p is
  :class:`FastTopPLogitsWarper`: the same nucleus without sorting the whole vocabulary (a
  ``topk`` when the top 256 tokens hold it, value buckets when the distribution is flat).

And :class:`GeneratorSampler`, generate's sampling step with a ``torch.Generator`` of the call's
own (``generate`` takes none and draws from torch's global generator).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

__all__ = [
    "FastTopPLogitsWarper",
    "GeneratorSampler",
    "relayout_output_embeddings",
    "sampling_processors",
]


def relayout_output_embeddings(model, transposed: bool = True) -> bool:
    """Store a CPU model's output-embedding matrix transposed in memory (values, shape and
    parameter object unchanged; a tied input embedding shares it). Returns whether it changed
    anything.

    Batch-1 decoding multiplies one hidden state by the ``(vocab, d)`` LM head; this BLAS reads
    that matrix ~1.8x faster when its memory is ``(d, vocab)``-major (``benchmarks/NOTES.md``).
    Embedding lookups read strided rows instead, which costs microseconds. Nothing is done on
    other devices or for non-2-D weights.

    ``save_pretrained`` refuses a tied weight laid out so (transformers needs it contiguous):
    call ``relayout_output_embeddings(model, transposed=False)`` before saving.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.device.type != "cpu":
        return False
    if weight.shape[0] == 1 or weight.shape[1] == 1:
        return False
    is_transposed = weight.stride() == (1, weight.shape[0])
    with torch.no_grad():
        if transposed and weight.is_contiguous():
            weight.data = weight.data.t().contiguous().t()
        elif not transposed and is_transposed:
            weight.data = weight.data.contiguous()
        else:
            return False
    return True


class FastTopPLogitsWarper(LogitsProcessor):
    """Nucleus (top-p) filtering, as transformers' ``TopPLogitsWarper``, without a full sort.

    Keeps the smallest set of most likely tokens whose probability reaches ``top_p`` (at least
    ``min_tokens_to_keep``); the rest get ``filter_value``. Two exact paths instead of sorting
    the whole vocabulary (~4 ms for 50k scores on one CPU core):

    * peaked distributions (a trained model, most steps): the ``topk`` 256 tokens already hold
      ``top_p``; the cut is found among them;
    * flat ones (high temperature, untrained weights): the probabilities are bucketed by value
      (1024 equal-width buckets), the bucket where the running mass from the top crosses
      ``top_p`` is found from the bucket masses, and only that bucket's tokens are sorted.

    Same tokens as ``TopPLogitsWarper`` up to float rounding of the cumulative mass at the cut
    (transformers sums 50k float32 values in ascending order; errors of ~1e-5) and ties there.
    """

    _TOPK = 256
    _BUCKETS = 1024

    def __init__(
        self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1
    ) -> None:
        top_p = float(top_p)
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"`top_p` has to be a float in [0, 1], got {top_p}.")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(
                f"`min_tokens_to_keep` has to be a positive integer, got {min_tokens_to_keep}."
            )
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def _flat_row(self, probs: torch.Tensor) -> torch.Tensor | None:
        """The kept tokens of one row (a bool mask), by bucketing; ``None`` if it cannot tell."""
        low, high = probs.min(), probs.max()
        if not bool(high > low):
            return None  # all equal: ties everywhere, let the sort decide as transformers does
        buckets = self._BUCKETS
        bucket = ((probs - low) * (buckets / (high - low))).long().clamp_(0, buckets - 1)
        mass = torch.zeros(buckets, dtype=torch.float64, device=probs.device)
        mass.index_add_(0, bucket, probs.double())
        from_top = mass.flip(0).cumsum(0)  # mass of the j + 1 highest buckets
        crossing = int((from_top < self.top_p).sum())  # highest buckets wholly before the cut
        if crossing >= buckets:
            return None  # rounding left the total below top_p
        cut = buckets - 1 - crossing
        above = float(from_top[crossing] - mass[cut])
        keep = bucket > cut
        members = (bucket == cut).nonzero().squeeze(1)
        values, order = probs[members].double().sort(descending=True)
        before = above + values.cumsum(0) - values
        keep[members[order[before < self.top_p]]] = True
        return keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        if self.top_p >= 1.0:
            return scores  # everything is in the nucleus
        vocab = scores.shape[-1]
        probs = scores.float().softmax(dim=-1)
        k = min(vocab, max(self._TOPK, self.min_tokens_to_keep))
        top, index = probs.topk(k, dim=-1)  # sorted, largest first
        if k == vocab or bool((top.sum(dim=-1) >= self.top_p).all()):
            before = top.cumsum(dim=-1) - top  # probability of the tokens ranked above
            keep = before < self.top_p
            keep[..., : self.min_tokens_to_keep] = True
            kept = torch.full_like(scores, self.filter_value)
            chosen = torch.where(keep, scores.gather(-1, index), self.filter_value)
            return kept.scatter(-1, index, chosen)
        rows = []
        for row in range(probs.shape[0]):
            keep = self._flat_row(probs[row])
            if keep is None:  # fall back to the full sort for this row
                values, order = probs[row].sort(descending=True)
                keep = torch.zeros_like(probs[row], dtype=torch.bool)
                keep[order[(values.cumsum(0) - values) < self.top_p]] = True
            keep[index[row, : self.min_tokens_to_keep]] = True
            rows.append(keep)
        return scores.masked_fill(~torch.stack(rows), self.filter_value)


_NEUTRAL = {
    "temperature": 1.0,
    "top_h": None,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
}


def sampling_processors(config, device: torch.device | str = "cpu") -> tuple[list, dict]:
    """The sampling warpers ``generate`` would build for ``config`` (sampling, one beam), in its
    order, with :class:`FastTopPLogitsWarper` for top-p; and the ``GenerationConfig`` values
    that switch generate's own copies off (pass them as overrides).

    Returns ``([], {})`` when ``config`` does not sample or uses beams: generate's own warpers
    then stay in charge.
    """
    from transformers import (
        EpsilonLogitsWarper,
        EtaLogitsWarper,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TypicalLogitsWarper,
    )

    if not config.do_sample or (config.num_beams or 1) > 1:
        return [], {}
    processors: list = []
    if config.temperature is not None and config.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(config.temperature))
    if getattr(config, "top_h", None) is not None:
        from transformers.generation.logits_process import TopHLogitsWarper

        processors.append(TopHLogitsWarper(top_h=config.top_h))
    if config.top_k is not None and config.top_k != 0:
        processors.append(TopKLogitsWarper(top_k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        processors.append(FastTopPLogitsWarper(top_p=config.top_p))
    if config.min_p is not None:
        processors.append(MinPLogitsWarper(min_p=config.min_p))
    if config.typical_p is not None and config.typical_p < 1.0:
        processors.append(TypicalLogitsWarper(mass=config.typical_p))
    if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
        processors.append(EpsilonLogitsWarper(epsilon=config.epsilon_cutoff))
    if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
        processors.append(EtaLogitsWarper(epsilon=config.eta_cutoff, device=device))
    overrides = {key: value for key, value in _NEUTRAL.items() if hasattr(config, key)}
    return processors, overrides


class GeneratorSampler(LogitsProcessor):
    """Draw each row's next token with ``generator``: generate's sampling step (softmax, then
    ``multinomial``) without torch's global generator, which ``generate`` would use.

    Place it last and run ``generate`` greedily (``do_sample=False``): it keeps the drawn token's
    score (``0``) and sets the others to ``-inf``, so the greedy step picks the drawn token. A
    generator seeded like the global one draws the tokens ``generate``'s own sampling draws
    after ``torch.manual_seed`` (the same Mersenne Twister stream), and nothing else touches
    the global generator's state: concurrent calls, each with its own generator, do not
    interfere.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        probs = torch.softmax(scores, dim=-1)
        picks = torch.multinomial(probs, num_samples=1, generator=self.generator)
        drawn = torch.full_like(scores, -float("inf"))
        return drawn.scatter_(-1, picks, 0.0)
