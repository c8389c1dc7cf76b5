"""What every loader shares: split names, row validation, counting what is skipped."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

logger = logging.getLogger(__name__)

OFFICIAL_SPLITS = ("train", "validation", "test")


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file and line."""


def check_split(split: str) -> str:
    """Validate a split name (``train``, ``validation`` or ``test``)."""
    if split not in OFFICIAL_SPLITS:
        raise ValueError(
            f"Unknown split {split!r}: use one of {', '.join(OFFICIAL_SPLITS)} "
            "(or `train_frac` to re-split all the data as the original scripts did)."
        )
    return split


def where(path: str | Path, line: int | None = None) -> str:
    """``'file.txt, line 3'`` for error messages."""
    return f"{path}, line {line}" if line is not None else str(path)


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` saying what was expected."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"{what}: expected the file {p} but it does not exist. Check `data_dir`, or leave "
            "`data_dir` unset to download the dataset."
        )
    return p


def read_text(path: Path) -> str:
    """Read a UTF-8 text file; undecodable bytes raise an error naming the file and line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{where(path, line)}: bytes that are not valid UTF-8 ({raw[err.start : err.end]!r}). "
            "Re-encode the file as UTF-8."
        ) from None


@dataclass
class LoaderStats:
    """What a loader read and what it skipped (each skip has a reason)."""

    source: str
    split: str
    dialogues: int = 0
    utterances: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        text = (
            f"{self.source}/{self.split}: {self.dialogues} dialogues, {self.utterances} utterances"
        )
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{n} {why}" for why, n in self.skipped.items())
        return text


def finalize_dialogues(
    records: Iterable[Mapping[str, Any]],
    *,
    source: str,
    split: str,
    normalize: bool = True,
    extra_features: Mapping[str, datasets.features.features.FeatureType] | None = None,
) -> datasets.Dataset:
    """Validate dialogue records and build the loader's ``Dataset``.

    Each record has ``utterances`` (list of str) and the ``extra_features`` columns. Empty
    utterances are dropped and dialogues left with fewer than 2 utterances are skipped; both
    are counted and logged, never dropped silently.
    """
    from .normalize import normalize_text

    extra_features = dict(extra_features or {})
    stats = LoaderStats(source=source, split=split)
    columns: dict[str, list] = {"utterances": [], "source": [], **{k: [] for k in extra_features}}
    for rec in records:
        utts = []
        for u in rec["utterances"]:
            u = normalize_text(u) if normalize else " ".join(str(u).split())
            if u:
                utts.append(u)
            else:
                stats.skipped["empty utterances"] += 1
        if len(utts) < 2:
            stats.skipped["dialogues with fewer than 2 utterances"] += 1
            continue
        stats.dialogues += 1
        stats.utterances += len(utts)
        columns["utterances"].append(utts)
        columns["source"].append(source)
        for k in extra_features:
            value = rec.get(k)
            if normalize and k == "persona" and value:
                value = [normalize_text(s) for s in value]
            columns[k].append(value)
    logger.info(stats.summary())
    features = datasets.Features(
        {
            "utterances": datasets.Sequence(datasets.Value("string")),
            "source": datasets.Value("string"),
            **extra_features,
        }
    )
    ds = datasets.Dataset.from_dict(columns, features=features, split=split)
    ds.info.description = stats.summary()
    return ds
