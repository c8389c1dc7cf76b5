""":func:`evaluate_model`: a dialogue model's token-weighted perplexity per dataset and overall,
and the generation metrics of the replies it gives a sample of contexts, with the settings of
one :class:`EvalSettings`. A plain function over the model and the features (no Trainer);
under ``torchrun`` / ``accelerate launch`` the examples and the sampled contexts are split
between the processes and the results gathered.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import datasets
import torch

from .generation import generate_replies, reply_contexts, sample_indices
from .perplexity import dataset_nll, perplexity
from .report import METRICS, EvalReport, EvalRow, load_metric, score

logger = logging.getLogger(__name__)

__all__ = ["EvalSettings", "evaluate_model"]


@dataclass
class EvalSettings:
    """How :func:`evaluate_model` evaluates.

    Args:
        max_turns, max_len, reply_speakers, with_persona: how raw dialogues are rendered (as
            :class:`gpt2chat.training.DataArguments`; ``max_len`` at most the model's context,
            the default shrinking to it).
        batch_size: evaluation and generation batch size (per process).
        num_samples: contexts per dataset whose replies are generated for F1 / BLEU / distinct
            (``0``: perplexity only).
        max_new_tokens, do_sample, top_p, temperature, seed: generation settings (greedy by
            default, so the scores are reproducible).
        use_token_type_ids: default: what training recorded in the ``chat_config.json`` of the
            folder the model was loaded from; with no record, when the model's forward accepts
            them (logged).
        use_cpu: evaluate on the CPU even where a GPU is available.
        bf16: evaluate in bfloat16 (the model's weights are cast, as ``bf16_full_eval`` does).
        max_examples: evaluate only the first N examples of each dataset.
    """

    max_turns: int = 5
    max_len: int = 1024
    reply_speakers: str = "sp2"
    with_persona: bool = False
    batch_size: int = 8
    num_samples: int = 100
    max_new_tokens: int = 40
    do_sample: bool = False
    top_p: float = 0.8
    temperature: float = 1.0
    seed: int = 0
    use_token_type_ids: bool | None = None
    use_cpu: bool = False
    bf16: bool = False
    max_examples: int | None = None

    def __post_init__(self):
        self.data_args()  # the render settings' checks, with DataArguments' messages
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")

    def data_args(self):
        """The render settings as :class:`gpt2chat.training.DataArguments`."""
        from ..training.arguments import DataArguments

        return DataArguments(
            datasets="jsonl",
            max_turns=self.max_turns,
            max_len=self.max_len,
            reply_speakers=self.reply_speakers,
            with_persona=self.with_persona,
            max_eval_samples=self.max_examples,
        )


def _by_name(dialogues) -> dict[str, datasets.Dataset]:
    """``{name: dataset}``; a single dataset with several ``source`` values split by source."""
    if isinstance(dialogues, datasets.Dataset):
        sources = dialogues.unique("source") if "source" in dialogues.column_names else []
        if len(set(sources)) > 1:
            return {s: dialogues.filter(lambda r, s=s: r["source"] == s) for s in sources}
        return {sources[0] if sources and len(dialogues) else "data": dialogues}
    return dict(dialogues)


def evaluate_model(
    model,
    tokenizer,
    dialogues: dict[str, datasets.Dataset] | datasets.Dataset,
    settings: EvalSettings | None = None,
    **overrides: Any,
) -> EvalReport:
    """Evaluate a dialogue model.

    Args:
        model: a causal LM (or a ``peft`` model); its tokenizer gets the speaker tokens if it
            lacks them (the model's embeddings grown to match).
        tokenizer: its tokenizer.
        dialogues: raw dialogues (``utterances``) or prepared features, one dataset or
            ``{name: dataset}``; a single dataset with a ``source`` column is split by source.
        settings: an :class:`EvalSettings` (default: its defaults).
        **overrides: :class:`EvalSettings` fields replacing those of ``settings``
            (``evaluate_model(model, tokenizer, data, max_len=128, num_samples=0)``).

    Returns:
        An :class:`EvalReport`: per-dataset rows and an ``all`` row (token-weighted over all
        datasets; generation metrics over all samples).

    Perplexity is the trainer's (:func:`gpt2chat.evaluation.perplexity.token_nll` summed over
    the label tokens). Runs under ``torchrun`` / ``accelerate launch`` too: the examples and the
    sampled contexts are split between the processes, the results gathered.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import set_seed

    from ..chat.options import token_types_for
    from ..collator import DialogueCollator
    from ..loading import context_size
    from ..training.inputs import extend_for_dialogue, fit_context, is_raw, prepared_features

    s = dataclasses.replace(settings or EvalSettings(), **overrides)
    named = _by_name(dialogues)
    if not named:
        raise ValueError("`dialogues` is empty: pass at least one dataset.")
    state = PartialState(cpu=s.use_cpu)
    set_seed(s.seed)
    tokens = extend_for_dialogue(model, tokenizer)
    data_args = s.data_args()
    if any(is_raw(ds) for ds in named.values()):
        data_args = fit_context(model, data_args)
    use_types = token_types_for(model, s.use_token_type_ids)
    ctx = context_size(model)
    features = {
        name: prepared_features(
            ds, f"eval {name}", tokenizer, data_args, max_samples=s.max_examples, ctx=ctx
        )
        for name, ds in named.items()
    }
    model = _placed(model, state, s)
    collator = DialogueCollator(pad_token_id=tokens.pad_token_id, return_token_type_ids=use_types)
    metrics = tuple(load_metric(n) for n in METRICS)

    rows, examples = [], []
    all_preds: list[str] = []
    all_refs: list[str] = []
    total_nll = total_tokens = 0.0
    was_training = model.training
    model.eval()
    for name, feats in features.items():
        nll, n_tokens = dataset_nll(
            model, feats, collator, batch_size=s.batch_size, state=state, desc=f"Evaluating {name}"
        )
        loss = nll / n_tokens if n_tokens else float("nan")
        total_nll += nll
        total_tokens += n_tokens
        row = EvalRow(name, len(feats), n_tokens, loss, perplexity(loss) if n_tokens else loss)
        indices = sample_indices(len(feats), s.num_samples, s.seed) if s.num_samples > 0 else []
        if indices:
            contexts = reply_contexts(feats, indices)
            set_seed(s.seed)
            with state.split_between_processes(contexts) as mine:
                preds = generate_replies(
                    model,
                    tokenizer,
                    mine,
                    use_token_type_ids=use_types,
                    batch_size=s.batch_size,
                    max_new_tokens=s.max_new_tokens,
                    do_sample=s.do_sample,
                    top_p=s.top_p,
                    temperature=s.temperature,
                )
            preds = gather_object(preds) if state.num_processes > 1 else preds
            refs = [
                tokenizer.decode(c["reference_ids"], skip_special_tokens=True).strip()
                for c in contexts
            ]
            row.samples = len(preds)
            score(row, preds, refs, metrics)
            all_preds += preds
            all_refs += refs
            for c, p, r in list(zip(contexts, preds, refs))[:3]:
                examples.append(
                    {
                        "dataset": name,
                        "context": tokenizer.decode(c["input_ids"], skip_special_tokens=False),
                        "reference": r,
                        "generated": p,
                    }
                )
        rows.append(row)
    model.train(was_training)
    loss = total_nll / total_tokens if total_tokens else float("nan")
    overall = EvalRow(
        "all",
        sum(r.examples for r in rows),
        int(total_tokens),
        loss,
        perplexity(loss) if total_tokens else float("inf"),
    )
    if all_preds:
        overall.samples = len(all_preds)
        score(overall, all_preds, all_refs, metrics)
    rows.append(overall)
    report_settings = {
        "max_turns": s.max_turns,
        "max_len": s.max_len,
        "reply_speakers": s.reply_speakers,
        "with_persona": s.with_persona,
        "num_samples": s.num_samples,
        "max_new_tokens": s.max_new_tokens,
        "do_sample": s.do_sample,
        "top_p": s.top_p if s.do_sample else None,
        "temperature": s.temperature if s.do_sample else None,
        "seed": s.seed,
        "token_type_ids": use_types,
        "processes": state.num_processes,
    }
    return EvalReport(rows=rows, examples=examples, settings=report_settings)


def _placed(model, state, s: EvalSettings):
    """The model on this process's device (the CPU with ``use_cpu``), cast to bfloat16 with
    ``bf16``, as the Trainer places it for evaluation; a model dispatched over devices
    (``device_map``) stays where it is."""
    device = torch.device("cpu") if s.use_cpu else state.device
    if getattr(model, "hf_device_map", None) is None and not getattr(model, "is_quantized", False):
        model = model.to(device)
    if s.bf16:
        model = model.to(dtype=torch.bfloat16)
    return model
