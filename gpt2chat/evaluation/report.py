"""The evaluation's results and scores: :class:`EvalRow` (one dataset's metrics),
:class:`EvalReport` (the rows, examples and settings, as a dict or a table), and the
generation metrics (unigram F1, BLEU, distinct-1/2), ``evaluate`` modules shipped inside the
package (``gpt2chat/metrics/<name>/<name>.py``) and loaded by path, so they work offline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["METRICS", "EvalReport", "EvalRow", "load_metric", "metric_path", "score"]

METRICS = ("f1", "bleu", "distinct")


def metric_path(name: str) -> str:
    """Path of a metric module shipped with gpt2chat (``f1``, ``bleu`` or ``distinct``)."""
    if name not in METRICS:
        raise ValueError(f"Unknown gpt2chat metric {name!r}: use one of {', '.join(METRICS)}.")
    return str(Path(__file__).parent.parent / "metrics" / name / f"{name}.py")


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


def score(row: EvalRow, preds: list[str], refs: list[str], metrics) -> None:
    """Fill ``row``'s F1, BLEU and distinct-1/2 from generated replies and their references;
    ``metrics``: the loaded ``(f1, bleu, distinct)`` modules."""
    f1_metric, bleu_metric, distinct_metric = metrics
    row.f1 = f1_metric.compute(predictions=preds, references=refs)["f1"]
    row.bleu = bleu_metric.compute(predictions=preds, references=refs)["bleu"]
    d = distinct_metric.compute(predictions=preds)
    row.distinct_1, row.distinct_2 = d["distinct_1"], d["distinct_2"]
