"""From checked rows to a ``datasets.Dataset``: :func:`finalize_dialogues` (the loaders' common
last step: rows validated, counted, kept in memory or streamed to an Arrow file) and
:func:`cached_dialogues` (that file kept and reused, keyed by the source files' path, size,
mtime, and content for small files, and by the loaders' code, with the skip counts beside it)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from .base import LoaderStats, _valid_rows

logger = logging.getLogger(__name__)


def finalize_dialogues(
    records: Iterable[Mapping[str, Any]],
    *,
    source: str,
    split: str,
    normalize: bool = True,
    extra_features: Mapping[str, datasets.features.features.FeatureType] | None = None,
    cache_file: str | Path | None = None,
    skipped: Counter | None = None,
    files: Sequence[str | Path] = (),
) -> datasets.Dataset:
    """Validate dialogue records and build the loader's ``Dataset``.

    Each record has ``utterances`` (list of str) and the ``extra_features`` columns. Empty
    utterances are dropped and dialogues left with fewer than 2 utterances are skipped; both
    are counted and logged, never dropped silently.

    ``skipped`` is the loader's own count of what it skipped, by reason (lines not in the
    format...), filled while ``records`` is consumed; its reasons come first in the summary
    (the dataset's ``info.description``). ``files`` are the files read, named in errors.

    Raises:
        DataFormatError: a record is not a dialogue (``utterances`` not a list of strings, a
            string column given something else, a lone UTF-16 surrogate in a text): never
            stringified nor split into characters.
        EmptyDatasetError: no dialogue is left; the message names ``files`` and the counts of
            what was skipped, by reason.

    With ``cache_file`` the rows are streamed to that Arrow file, ``WRITE_BATCH`` dialogues at a
    time (``records`` may be a generator: the dataset is never held as Python objects), and the
    returned dataset is memory-mapped from it; without, the dataset is built in memory.
    """
    extra_features = dict(extra_features or {})
    stats = LoaderStats(source=source, split=split)
    features = datasets.Features(
        {
            "utterances": datasets.Sequence(datasets.Value("string")),
            "source": datasets.Value("string"),
            **extra_features,
        }
    )
    rows = _valid_rows(records, stats, normalize, extra_features, skipped, files)
    if cache_file is None:
        columns: dict[str, list] = {name: [] for name in features}
        for row in rows:
            for name, value in zip(features, row):
                columns[name].append(value)
        logger.info(stats.summary())
        ds = datasets.Dataset.from_dict(columns, features=features, split=split)
        ds.info.description = stats.summary()
        return ds
    _write_arrow(Path(cache_file), features, rows)
    logger.info(stats.summary())
    _write_json(_stats_file(Path(cache_file)), {"description": stats.summary()})
    return _open_cached(Path(cache_file), features, split, stats.summary())


#: Dialogues per Arrow record batch when a loader streams its rows to the cache file.
WRITE_BATCH = 1000
#: Bumped when the cached files' layout changes.
_CACHE_LAYOUT = 1
#: Source files up to this size are keyed by their content too, not only size and mtime.
_HASH_CONTENT_BELOW = 1 << 20


def cached_dialogues(
    read: Callable[[], Iterable[Mapping[str, Any]]],
    *,
    source: str,
    split: str,
    files: Sequence[str | Path],
    normalize: bool,
    extra_features: Mapping[str, datasets.features.features.FeatureType] | None = None,
    cache_dir: str | Path | None = None,
    skipped: Counter | None = None,
    **params: Any,
) -> datasets.Dataset:
    """``finalize_dialogues(read(), ...)``, cached as an Arrow file keyed by the source files.

    The key is made of the ``files``' resolved paths, sizes and modification times (and
    content, for files up to 1 MiB), ``split``, ``normalize``, ``params`` (the loader's other
    options), ``extra_features`` and the code of the loaders (``gpt2chat/data/*.py``). The first call parses the files and streams the rows
    to ``<cache root>/dialogues/<source>/<split>-<key>/dialogues.arrow``; a later call with the
    same key, in any process, memory-maps that file without reading the sources. The dataset's
    fingerprint then depends only on that file, so ``Dataset.map`` (``prepare_dataset``) finds
    its own cache files next to it on the next run too. Changing a source file (its size or
    mtime), an option or the loaders' code gives a new key.

    Args:
        read: returns the records to pass to :func:`finalize_dialogues` (may be a generator).
        source, split, normalize, extra_features, skipped: as in :func:`finalize_dialogues`.
        files: the files ``read`` reads (named in errors).
        cache_dir: the cache root; default :func:`gpt2chat.data.download.default_cache_root`
            (``$GPT2CHAT_CACHE``, else ``<datasets cache>/gpt2chat``).
        **params: the loader's other options, part of the key.

    Caching follows the datasets library: after ``datasets.disable_caching()`` nothing is
    read from or written to the cache and the dataset is built in memory (as it is, with a
    warning, when the cache folder is not writable). A cache hit does not repeat the loader's
    warnings about skipped lines; its summary is logged at INFO level.
    """
    cache_file = dialogues_cache_file(
        source,
        split,
        files,
        cache_dir=cache_dir,
        normalize=normalize,
        extra_features=datasets.Features(extra_features or {}).to_dict(),
        **params,
    )
    kwargs = {
        "source": source,
        "split": split,
        "normalize": normalize,
        "skipped": skipped,
        "files": files,
    }
    if cache_file is None:
        return finalize_dialogues(read(), extra_features=extra_features, **kwargs)
    if cache_file.is_file():
        info = _read_json(_stats_file(cache_file))
        if info is not None:
            logger.info("%s (cached in %s)", info["description"], cache_file.parent)
            features = datasets.Features(
                {
                    "utterances": datasets.Sequence(datasets.Value("string")),
                    "source": datasets.Value("string"),
                    **(extra_features or {}),
                }
            )
            return _open_cached(cache_file, features, split, info["description"])
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(cache_file.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        logger.warning(
            "%s: cannot write to the cache folder %s; the split is built in memory (set "
            "GPT2CHAT_CACHE or HF_DATASETS_CACHE to a writable folder to cache it).",
            source,
            cache_file.parent,
        )
        return finalize_dialogues(read(), extra_features=extra_features, **kwargs)
    return finalize_dialogues(
        read(), extra_features=extra_features, cache_file=cache_file, **kwargs
    )


def dialogues_cache_file(
    source: str,
    split: str,
    files: Sequence[str | Path],
    *,
    cache_dir: str | Path | None = None,
    **params: Any,
) -> Path | None:
    """Where :func:`cached_dialogues` keeps a split (``None`` when datasets caching is off)."""
    if not datasets.is_caching_enabled():
        return None
    from datasets.fingerprint import Hasher

    from .download import default_cache_root

    stamps = []
    for f in files:
        st = Path(f).stat()
        stamp: tuple = (str(Path(f).resolve()), st.st_size, st.st_mtime_ns)
        if st.st_size <= _HASH_CONTENT_BELOW:
            # small files (fixtures, edited by hand) may change within one mtime tick
            stamp += (hashlib.sha256(Path(f).read_bytes()).hexdigest(),)
        stamps.append(stamp)
    key = Hasher.hash(
        [_CACHE_LAYOUT, _loaders_code_hash(), source, split, stamps, sorted(params.items())]
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    return root / "dialogues" / source / f"{split}-{key}" / "dialogues.arrow"


@functools.lru_cache(maxsize=1)
def _loaders_code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _stats_file(cache_file: Path) -> Path:
    return cache_file.with_suffix(".json")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _write_arrow(path: Path, features: datasets.Features, rows: Iterable[tuple]) -> None:
    """Stream ``rows`` to ``path`` in record batches; the file appears only once complete."""
    from datasets.arrow_writer import ArrowWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    names = list(features)
    try:
        with ArrowWriter(features=features, path=str(tmp), writer_batch_size=WRITE_BATCH) as w:
            batch: list[tuple] = []
            for row in rows:
                batch.append(row)
                if len(batch) == WRITE_BATCH:
                    w.write_batch(dict(zip(names, map(list, zip(*batch)))))
                    batch = []
            if batch:
                w.write_batch(dict(zip(names, map(list, zip(*batch)))))
            w.finalize()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _open_cached(
    path: Path, features: datasets.Features, split: str, description: str
) -> datasets.Dataset:
    info = datasets.DatasetInfo(description=description, features=features)
    return datasets.Dataset.from_file(str(path), info=info, split=split)
