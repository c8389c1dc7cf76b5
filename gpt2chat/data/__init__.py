"""Dialogue loaders: one module per data source, one registry behind :func:`load_dialogues`.

Every loader returns a :class:`datasets.Dataset` with one row per dialogue and at least the
columns ``utterances`` (list of strings, speakers alternating, the first speaker is
``<sp1>``) and ``source`` (the dataset name). Some add extra columns (``persona``,
``context``, ``prompt``...).

What a loader cannot read is never loaded silently: a record that is not a dialogue is a
:class:`DataFormatError` (a ``ValueError``) naming the file and the line or record, or is
skipped and counted (each loader documents which); the counts, by reason, are in the dataset's
``info.description``. A split with no dialogue at all is an :class:`EmptyDatasetError` (a
``DataFormatError``) naming the files and what was skipped, from every loader, custom registered
ones included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import datasets

from .base import (
    OFFICIAL_SPLITS,
    DataFormatError,
    EmptyDatasetError,
    LoaderStats,
    check_split,
)
from .cache import finalize_dialogues

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "OFFICIAL_SPLITS",
    "DataFormatError",
    "EmptyDatasetError",
    "LoaderStats",
    "available_datasets",
    "finalize_dialogues",
    "load_dialogues",
    "register_dataset",
]

LoaderFn = Callable[..., datasets.Dataset]

#: name -> "module:function"; modules are imported lazily so a missing optional
#: dependency of one source never breaks the others.
DATASETS: dict[str, str] = {
    "daily_dialog": "gpt2chat.data.daily_dialog:load_daily_dialog",
    "empathetic_dialogues": "gpt2chat.data.empathetic_dialogues:load_empathetic_dialogues",
    "persona_chat": "gpt2chat.data.persona_chat:load_persona_chat",
    "blended_skill_talk": "gpt2chat.data.blended_skill_talk:load_blended_skill_talk",
    "chitchat": "gpt2chat.data.chitchat:load_chitchat",
    "jsonl": "gpt2chat.data.jsonl:load_jsonl",
}

_CUSTOM: dict[str, LoaderFn] = {}


def register_dataset(name: str, loader: LoaderFn) -> None:
    """Register a custom loader ``loader(split, data_dir, **options) -> Dataset`` under ``name``.

    A loader that builds its dataset with :func:`finalize_dialogues` gets its checks (text is
    a list of str, no lone surrogate, at least one dialogue); :func:`load_dialogues` checks
    that any loader returned at least one dialogue.
    """
    _CUSTOM[name] = loader


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dialogues`."""
    return sorted(set(DATASETS) | set(_CUSTOM))


def _resolve(name: str) -> LoaderFn:
    if name in _CUSTOM:
        return _CUSTOM[name]
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset name {name!r}. Available datasets: {', '.join(available_datasets())}. "
            "For your own data use name='jsonl' with data_dir pointing at a .jsonl file."
        )
    import importlib

    module_name, fn_name = DATASETS[name].split(":")
    return getattr(importlib.import_module(module_name), fn_name)


def _split_names(name: str | Sequence[str]) -> list[str]:
    if isinstance(name, str):
        names = [n.strip() for n in name.split(",") if n.strip()]
    else:
        names = [str(n).strip() for n in name]
    if not names:
        raise ValueError("`name` is empty: pass a dataset name such as 'daily_dialog'.")
    return names


def load_dialogues(
    name: str | Sequence[str],
    split: str = "train",
    data_dir: str | Path | Sequence[str | Path] | None = None,
    *,
    train_frac: float | None = None,
    normalize: bool = True,
    **options,
) -> datasets.Dataset:
    """Load one or several dialogue datasets as a :class:`datasets.Dataset`, one row per dialogue.

    Args:
        name: a dataset name (see :func:`available_datasets`), a comma-separated string of names
            or a list of names; several datasets are concatenated (columns they do not share
            are filled with empty values).
        split: ``"train"``, ``"validation"`` or ``"test"`` (the official splits).
        data_dir: where the dataset's files are. ``None`` downloads the public datasets from
            their canonical sources into the datasets cache. With several names, either one
            root folder holding a sub-folder per dataset (``<data_dir>/<name>``, or the name
            spelt without the underscore in any case, e.g. ``dailydialog``; the folder itself
            is used when it has no such sub-folder) or a list with one entry per name.
        train_frac: reproduce the seed's split: all official splits are merged, the first
            ``train_frac`` of the dialogues is ``"train"`` and the rest ``"validation"``.
        normalize: turn tokenised text (``"Hi , how are you ?"``) into natural text, capitalise
            sentence starts and collapse whitespace.
        **options: passed to the dataset's loader (e.g. ``cache_dir``).

    Returns:
        A ``datasets.Dataset`` with at least the columns ``utterances`` and ``source``.

    Raises:
        DataFormatError: a file is not in the dataset's format (the message names the file and
            the line or record).
        EmptyDatasetError: a dataset has no dialogue (the message names the files and what was
            skipped, by reason). With ``train_frac``, only when no split has any: a split of
            the re-split may then be empty (too few dialogues), which the caller checks.
    """
    names = _split_names(name)
    if train_frac is not None:
        if not 0.0 < float(train_frac) < 1.0:
            raise ValueError(f"`train_frac` must be in (0, 1), got {train_frac!r}.")
        if split not in ("train", "validation"):
            raise ValueError(
                f"With `train_frac`, `split` must be 'train' or 'validation', got {split!r}."
            )
    else:
        check_split(split)

    if data_dir is not None and not isinstance(data_dir, (str, Path)):
        dirs = list(data_dir)
        if len(dirs) != len(names):
            raise ValueError(
                f"`data_dir` has {len(dirs)} entries for {len(names)} dataset names {names}: "
                "pass one folder per name, or a single root folder."
            )
    else:
        dirs = [_dir_for(data_dir, n, len(names)) for n in names]

    parts = []
    for n, d in zip(names, dirs):
        loader = _resolve(n)
        if train_frac is None:
            ds = _check_not_empty(
                loader(split=split, data_dir=d, normalize=normalize, **options), n, split, d
            )
        else:
            ds = _seed_split(loader, n, d, split, float(train_frac), normalize, options)
        logger.info("Loaded %s/%s: %d dialogues", n, split, len(ds))
        parts.append(ds)
    if len(parts) == 1:
        return parts[0]
    return _concatenate(parts)


def _squash(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _dataset_subfolder(root: Path, name: str) -> Path | None:
    """``<root>/<name>``, else a sub-folder named like it up to case and separators (the usual
    spellings of the releases: ``dailydialog``, ``PersonaChat``, ``empatheticdialogues``)."""
    if (root / name).is_dir():
        return root / name
    if not root.is_dir():
        return None
    matches = sorted(p for p in root.iterdir() if p.is_dir() and _squash(p.name) == _squash(name))
    return matches[0] if matches else None


def _dir_for(data_dir: str | Path | None, name: str, n_names: int) -> str | None:
    if data_dir is None:
        return None
    root = Path(data_dir)
    sub = _dataset_subfolder(root, name)
    if sub is not None and (n_names > 1 or not any(root.glob("*.*"))):
        return str(sub)
    return str(root)


def _check_not_empty(ds: datasets.Dataset, name: str, split: str, data_dir) -> datasets.Dataset:
    """``ds``, or an :class:`EmptyDatasetError` (for a loader that does not use
    :func:`finalize_dialogues`, which raises it with the files and the skip counts)."""
    if len(ds) == 0:
        raise EmptyDatasetError(
            f"{name}/{split}: the loader returned no dialogues (data_dir={data_dir!r}). Check "
            "that `data_dir` points at this dataset's files and that they are in its format."
        )
    return ds


def _seed_split(loader, name, data_dir, split, train_frac, normalize, options):
    pieces, seen, empty = [], {}, []
    for s in OFFICIAL_SPLITS:
        try:
            piece = _check_not_empty(
                loader(split=s, data_dir=data_dir, normalize=normalize, **options),
                name,
                s,
                data_dir,
            )
        except FileNotFoundError:
            logger.warning("%s has no %r split here; train_frac uses the others", name, s)
            continue
        except EmptyDatasetError as err:
            logger.warning(
                "%s has no dialogue in its %r split; train_frac uses the others", name, s
            )
            empty.append(err)
            continue
        # A single file given as data_dir may hold the whole dataset whatever the split asked
        # for (a .jsonl, one .csv): count such data once.
        key = (len(piece), *(tuple(piece[i]["utterances"]) for i in (0, -1) if len(piece)))
        if key in seen:
            logger.info("%s: split %r is the same data as %r; counted once", name, s, seen[key])
            continue
        seen[key] = s
        pieces.append(piece)
    if not pieces:
        if empty:
            raise empty[0]
        raise FileNotFoundError(f"No split of {name!r} found under {data_dir!r}.")
    merged = datasets.concatenate_datasets(pieces) if len(pieces) > 1 else pieces[0]
    cut = int(len(merged) * train_frac)
    return merged.select(range(cut)) if split == "train" else merged.select(range(cut, len(merged)))


def _concatenate(parts: list[datasets.Dataset]) -> datasets.Dataset:
    from datasets.fingerprint import Hasher

    columns: dict[str, datasets.Features] = {}
    for p in parts:
        for col, feat in p.features.items():
            columns.setdefault(col, feat)
    target = datasets.Features(columns)
    aligned = []
    for p in parts:
        for col, feat in columns.items():
            if col not in p.column_names:
                # An explicit fingerprint: hashing the column's values would cost more than
                # the whole cached load.
                fingerprint = Hasher.hash([p._fingerprint, "empty column", col, feat])
                p = p.add_column(
                    col, [_empty(feat)] * len(p), feature=feat, new_fingerprint=fingerprint
                )
        if p.column_names != list(columns):
            p = p.select_columns(list(columns))
        if p.features != target:
            p = p.cast(target)
        aligned.append(p)
    return datasets.concatenate_datasets(aligned)


def _empty(feature):
    if isinstance(feature, (datasets.Sequence, datasets.List, list)):
        return []
    if isinstance(feature, datasets.Value) and feature.dtype == "string":
        return ""
    return None
