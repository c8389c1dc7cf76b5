"""What ``gpt2chat eval`` measures: token-weighted perplexity per dataset and overall, and, on
replies generated for a sample of contexts, unigram F1, BLEU and distinct-1/2.

The generation metrics are ``evaluate`` modules shipped inside the package
(``gpt2chat/metrics/<name>/<name>.py``) and loaded by path, so they work offline.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch

from .render import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = [
    "EvalReport",
    "EvalRow",
    "evaluate_model",
    "generate_replies",
    "load_metric",
    "metric_path",
    "reply_contexts",
]

METRICS = ("f1", "bleu", "distinct")


def metric_path(name: str) -> str:
    """Path of a metric module shipped with gpt2chat (``f1``, ``bleu`` or ``distinct``)."""
    if name not in METRICS:
        raise ValueError(f"Unknown gpt2chat metric {name!r}: use one of {', '.join(METRICS)}.")
    return str(Path(__file__).parent / "metrics" / name / f"{name}.py")


def load_metric(name: str):
    """``evaluate.load`` of a shipped metric module (offline, results kept in memory)."""
    import evaluate

    return evaluate.load(metric_path(name), keep_in_memory=True)


@dataclass
class EvalRow:
    """The metrics of one dataset (or ``all``)."""

    dataset: str
    examples: int
    tokens: int
    loss: float
    perplexity: float
    samples: int = 0
    f1: float | None = None
    bleu: float | None = None
    distinct_1: float | None = None
    distinct_2: float | None = None


@dataclass
class EvalReport:
    """Per-dataset rows, an ``all`` row, generated examples and the settings used."""

    rows: list[EvalRow]
    examples: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def overall(self) -> EvalRow:
        return self.rows[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [asdict(r) for r in self.rows],
            "settings": self.settings,
            "examples": self.examples,
        }

    def format_table(self) -> str:
        headers = ["dataset", "examples", "tokens", "loss", "perplexity", "samples", "F1", "BLEU",
                   "distinct-1", "distinct-2"]  # fmt: skip

        def num(v, fmt):
            return "-" if v is None else format(v, fmt)

        cells = [headers]
        for r in self.rows:
            cells.append(
                [
                    r.dataset,
                    str(r.examples),
                    str(r.tokens),
                    num(r.loss, ".4f"),
                    num(r.perplexity, ".2f"),
                    str(r.samples),
                    num(r.f1, ".4f"),
                    num(r.bleu, ".2f"),
                    num(r.distinct_1, ".4f"),
                    num(r.distinct_2, ".4f"),
                ]
            )
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        lines = []
        for n, row in enumerate(cells):
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths))
                )
            )
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


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
    from .tokens import get_speaker_tokens

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


def _sample_indices(n: int, k: int, seed: int) -> list[int]:
    if k >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


def evaluate_model(
    model,
    tokenizer,
    dialogues: dict[str, datasets.Dataset] | datasets.Dataset,
    *,
    max_turns: int = 5,
    max_len: int = 1024,
    reply_speakers: str = "sp2",
    with_persona: bool = False,
    batch_size: int = 8,
    num_samples: int = 100,
    max_new_tokens: int = 40,
    do_sample: bool = False,
    top_p: float = 0.8,
    temperature: float = 1.0,
    seed: int = 0,
    use_token_type_ids: bool | None = None,
    use_cpu: bool = False,
    bf16: bool = False,
    max_examples: int | None = None,
    output_dir: str | None = None,
) -> EvalReport:
    """Evaluate a dialogue model.

    Args:
        model: a causal LM (or a ``peft`` model) whose tokenizer has the speaker tokens.
        tokenizer: its tokenizer.
        dialogues: raw dialogues (``utterances``) or prepared features, one dataset or
            ``{name: dataset}``; a single dataset with a ``source`` column is split by source.
        max_turns, max_len, reply_speakers, with_persona: how dialogues are rendered.
        batch_size: evaluation and generation batch size (per process).
        num_samples: contexts per dataset whose replies are generated for F1 / BLEU / distinct
            (``0``: perplexity only).
        max_new_tokens, do_sample, top_p, temperature, seed: generation settings (greedy by
            default, so the scores are reproducible).
        use_token_type_ids: default: what training recorded in the ``chat_config.json`` of the
            folder the model was loaded from; with no record, when the model's forward accepts
            them (logged).
        use_cpu, bf16: device and precision of the evaluation.
        max_examples: evaluate only the first N examples of each dataset.
        output_dir: scratch folder for the evaluation trainer (default: a temporary folder).

    Returns:
        An :class:`EvalReport`: per-dataset rows and an ``all`` row (token-weighted over all
        datasets; generation metrics over all samples).

    Runs under ``torchrun`` / ``accelerate launch`` too: perplexity is gathered across
    processes and the sampled contexts are split between them.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import set_seed

    from .training.arguments import DataArguments
    from .training.trainer import DialogueTrainer

    if isinstance(dialogues, datasets.Dataset):
        if "source" in dialogues.column_names and len(set(dialogues.unique("source"))) > 1:
            dialogues = {
                s: dialogues.filter(lambda r, s=s: r["source"] == s)
                for s in dialogues.unique("source")
            }
        else:
            name = (
                dialogues.unique("source")[0]
                if "source" in dialogues.column_names and len(dialogues)
                else "data"
            )
            dialogues = {name: dialogues}
    if not dialogues:
        raise ValueError("`dialogues` is empty: pass at least one dataset.")
    data_args = DataArguments(
        datasets="jsonl",
        max_turns=max_turns,
        max_len=max_len,
        reply_speakers=reply_speakers,
        with_persona=with_persona,
        max_eval_samples=max_examples,
    )
    from transformers import TrainingArguments

    if use_token_type_ids is None:
        use_token_type_ids = _recorded_token_types(model)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=output_dir or scratch,
            per_device_eval_batch_size=batch_size,
            report_to="none",
            use_cpu=use_cpu,
            bf16=bf16,
            bf16_full_eval=bf16,
            seed=seed,
            disable_tqdm=False,
            dataloader_pin_memory=torch.cuda.is_available() and not use_cpu,  # no CPU warning
        )
        trainer = DialogueTrainer(
            model,
            args,
            eval_dataset=dict(dialogues),
            processing_class=tokenizer,
            data_args=data_args,
            use_token_type_ids=use_token_type_ids,
        )
        metrics = trainer.evaluate()
    features = trainer.eval_dataset
    state = PartialState()
    f1_metric, bleu_metric, distinct_metric = (load_metric(n) for n in METRICS)

    rows, examples = [], []
    all_preds: list[str] = []
    all_refs: list[str] = []
    total_nll = total_tokens = 0.0
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    for name, feats in features.items():
        loss = metrics[f"eval_{name}_loss"]
        n_tokens = metrics.get(f"eval_{name}_tokens", 0)
        total_nll += loss * n_tokens
        total_tokens += n_tokens
        row = EvalRow(name, len(feats), int(n_tokens), loss, metrics[f"eval_{name}_perplexity"])
        indices = _sample_indices(len(feats), num_samples, seed) if num_samples > 0 else []
        if indices:
            contexts = reply_contexts(feats, indices)
            set_seed(seed)
            with state.split_between_processes(contexts) as mine:
                preds = generate_replies(
                    unwrapped,
                    tokenizer,
                    mine,
                    use_token_type_ids=trainer.use_token_type_ids,
                    batch_size=batch_size,
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    top_p=top_p,
                    temperature=temperature,
                )
            preds = gather_object(preds) if state.num_processes > 1 else preds
            refs = [
                tokenizer.decode(c["reference_ids"], skip_special_tokens=True).strip()
                for c in contexts
            ]
            row.samples = len(preds)
            _score(row, preds, refs, f1_metric, bleu_metric, distinct_metric)
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
    loss = total_nll / total_tokens if total_tokens else float("nan")
    overall = EvalRow(
        "all",
        sum(r.examples for r in rows),
        int(total_tokens),
        loss,
        math.exp(loss) if total_tokens and loss < 700 else float("inf"),
    )
    if all_preds:
        overall.samples = len(all_preds)
        _score(overall, all_preds, all_refs, f1_metric, bleu_metric, distinct_metric)
    rows.append(overall)
    settings = {
        "max_turns": max_turns,
        "max_len": max_len,
        "reply_speakers": reply_speakers,
        "with_persona": with_persona,
        "num_samples": num_samples,
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "top_p": top_p if do_sample else None,
        "temperature": temperature if do_sample else None,
        "seed": seed,
        "token_type_ids": trainer.use_token_type_ids,
        "processes": state.num_processes,
    }
    return EvalReport(rows=rows, examples=examples, settings=settings)


def _recorded_token_types(model) -> bool:
    """What training recorded (``chat_config.json`` of the model's folder), else the rule from
    before the record: token types when the model's forward accepts them."""
    from .chat.settings import ChatSettings
    from .training.modeling import accepts_token_type_ids

    recorded = ChatSettings.recorded_token_types(model)
    if recorded is not None:
        return recorded
    accepts = accepts_token_type_ids(model)
    if accepts:
        logger.warning(
            "No record of whether this model was trained with token_type_ids (no "
            "use_token_type_ids in its chat_config.json): feeding them, as gpt2chat did for "
            "such checkpoints; pass use_token_type_ids=False (--use_token_type_ids false) for a "
            "model trained without them."
        )
    return accepts


def _score(row: EvalRow, preds, refs, f1_metric, bleu_metric, distinct_metric) -> None:
    row.f1 = f1_metric.compute(predictions=preds, references=refs)["f1"]
    row.bleu = bleu_metric.compute(predictions=preds, references=refs)["bleu"]
    d = distinct_metric.compute(predictions=preds)
    row.distinct_1, row.distinct_2 = d["distinct_1"], d["distinct_2"]
