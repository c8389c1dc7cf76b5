"""Glue used by the CLI commands and the trainer: named datasets -> features, with statistics."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import datasets

from .data import EmptyDatasetError, load_dialogues
from .features import DatasetStats, dataset_statistics, prepare_dataset

logger = logging.getLogger(__name__)

__all__ = ["PreparedSplit", "format_stats_table", "load_and_prepare", "prepare_to_disk"]


@dataclass
class PreparedSplit:
    """A split's dialogues, its features and one statistics row per source."""

    split: str
    dialogues: datasets.Dataset
    features: datasets.Dataset
    stats: list[DatasetStats]

    def stats_rows(self) -> list[dict]:
        return [{"split": self.split, **asdict(row)} for row in self.stats]


def load_and_prepare(
    names: list[str] | str,
    split: str,
    tokenizer,
    *,
    data_dir=None,
    train_frac: float | None = None,
    normalize: bool = True,
    max_turns: int = 5,
    max_len: int = 1024,
    reply_speakers: str = "sp2",
    with_persona: bool = False,
    num_proc: int | None = None,
    **loader_options,
) -> PreparedSplit:
    """:func:`load_dialogues` then :func:`prepare_dataset` for one split.

    Raises:
        EmptyDatasetError: the split has no dialogue (from :func:`load_dialogues`, naming the
            files and what was skipped; or, with ``train_frac``, because the re-split leaves
            this split empty).
    """
    dialogues = load_dialogues(
        names,
        split,
        data_dir=data_dir,
        train_frac=train_frac,
        normalize=normalize,
        **loader_options,
    )
    if len(dialogues) == 0:  # load_dialogues raises for empty data; this is a re-split's part
        raise EmptyDatasetError(
            f"{split}: no dialogues in {data_dir or names}: with train_frac={train_frac}, the "
            f"{split} part of the re-split data is empty (too few dialogues). Add dialogues or "
            "change the fraction (for one file: --validation_split_percentage)."
        )
    features = prepare_dataset(
        dialogues,
        tokenizer,
        max_turns=max_turns,
        max_len=max_len,
        reply_speakers=reply_speakers,
        with_persona=with_persona,
        num_proc=num_proc,
        desc=f"Rendering {split} examples",
    )
    return PreparedSplit(
        split, dialogues, features, dataset_statistics(dialogues, features, reply_speakers)
    )


def format_stats_table(rows: list[dict]) -> str:
    """A plain-text table of :meth:`PreparedSplit.stats_rows` rows."""
    headers = [
        ("split", "split"),
        ("source", "dataset"),
        ("dialogues", "dialogues"),
        ("utterances", "utterances"),
        ("examples", "examples"),
        ("skipped_replies", "skipped"),
        ("mean_length", "mean len"),
        ("p95_length", "p95 len"),
        ("max_length", "max len"),
    ]
    cells = [[h for _, h in headers]]
    for r in rows:
        line = []
        for key, _ in headers:
            v = r[key]
            line.append(
                f"{v:.1f}"
                if key == "mean_length"
                else f"{v:.0f}"
                if isinstance(v, float)
                else str(v)
            )
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def prepare_to_disk(model_args, data_args, output_dir, splits) -> list[dict]:
    """What ``gpt2chat prepare`` does: tokenizer + speaker tokens, each split rendered and saved.

    Writes ``<output_dir>/<split>/`` (``Dataset.save_to_disk``), ``<output_dir>/tokenizer/`` (the
    extended tokenizer the ids belong to) and ``<output_dir>/prepare_stats.json``.
    """
    import json
    from dataclasses import asdict as _asdict
    from pathlib import Path

    from .extend import add_speaker_tokens
    from .loading import load_tokenizer_for

    out = Path(output_dir)
    tokenizer = load_tokenizer_for(
        model_args.model_name_or_path,
        tokenizer_name_or_path=model_args.tokenizer_name_or_path,
        gguf_file=model_args.gguf_file,
    )
    add_speaker_tokens(
        tokenizer,
        bos_token=model_args.bos_token,
        sp1_token=model_args.sp1_token,
        sp2_token=model_args.sp2_token,
    )
    rows: list[dict] = []
    for split in [s.strip() for s in splits if s.strip()]:
        prepared = load_and_prepare(
            data_args.dataset_names,
            split,
            tokenizer,
            data_dir=data_args.data_dir,
            train_frac=data_args.train_frac_for(split),
            normalize=data_args.normalize_text,
            **data_args.render_kwargs,
            num_proc=data_args.preprocessing_num_workers,
        )
        prepared.features.save_to_disk(str(out / split))
        rows += prepared.stats_rows()
    tokenizer.save_pretrained(str(out / "tokenizer"))
    (out / "prepare_stats.json").write_text(
        json.dumps({"data_args": _asdict(data_args), "stats": rows}, indent=2)
    )
    return rows
