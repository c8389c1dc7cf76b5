"""What every loader shares: split names, row validation, counting what is skipped."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import reprlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

logger = logging.getLogger(__name__)

OFFICIAL_SPLITS = ("train", "validation", "test")


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file and line."""


class EmptyDatasetError(DataFormatError):
    """Loading gave no dialogue at all; the message names the files and what was skipped."""


#: A UTF-16 surrogate code point: in a Python string always unpaired (JSON's ``"\\ud83d\\ude00"``
#: decodes to one code point), so the text cannot be encoded as UTF-8 nor tokenised.
_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds an unpaired UTF-16 surrogate (e.g. from a JSON ``"\\ud800"``)."""
    return _SURROGATE.search(text) is not None


def check_text(text: str, loc: str, what: str) -> str:
    """Return ``text``; raise a :class:`DataFormatError` at ``loc`` if it holds a lone surrogate."""
    if has_surrogate(text):
        raise DataFormatError(
            f"{loc}: {what} holds an unpaired UTF-16 surrogate ({describe(text)}), which is not "
            'valid Unicode text (a JSON escape such as "\\ud800" without its pair). Fix or remove '
            "that text."
        )
    return text


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 4


def describe(value: Any, width: int = 80) -> str:
    """A short ``repr`` of a (possibly huge or deeply nested) value, for error messages: it
    never recurses deeper than 3 levels and escapes what cannot be printed (lone surrogates)."""
    text = _REPR.repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


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


#: ``text.split("\n")`` at every line end, ``\r\n``, ``\n`` and a lone ``\r`` (old Mac OS); the
#: other breaks of ``str.splitlines`` (``\x0b``, ``\x85``, ``\u2028``...) are text.
split_lines = re.compile(r"\r\n|\r|\n").split


def read_text(path: Path, *, lone_cr: bool = False) -> str:
    """Read a UTF-8 text file with :func:`decode_text`."""
    return decode_text(path.read_bytes(), path, lone_cr=lone_cr)


def decode_text(raw: bytes, label: str | Path, *, lone_cr: bool = False) -> str:
    r"""``raw`` as UTF-8 text; undecodable bytes raise an error naming ``label`` and the line
    (counting a lone ``\r`` as a line end too with ``lone_cr``, as :func:`split_lines` does)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        if lone_cr:
            line += raw.count(b"\r", 0, err.start) - raw.count(b"\r\n", 0, err.start)
        raise DataFormatError(
            f"{where(label, line)}: bytes that are not valid UTF-8 "
            f"({raw[err.start : err.end]!r}). Re-encode the file as UTF-8."
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


def _valid_rows(
    records,
    stats: LoaderStats,
    normalize: bool,
    extra: Mapping[str, Any],
    skipped: Counter | None,
    files: Sequence[str | Path],
):
    """Yield each kept dialogue as a tuple ``(utterances, source, *extra)``, counting skips;
    raise :class:`EmptyDatasetError` once ``records`` is exhausted if none was kept."""
    from .normalize import normalize_text

    origin = ", ".join(map(str, files)) or f"{stats.source}/{stats.split}"
    kinds = {k: _string_kind(f) for k, f in extra.items()}
    for index, rec in enumerate(records):
        loc = f"{origin}, dialogue {index}"
        raw = rec.get("utterances") if isinstance(rec, Mapping) else None
        utts: list[str] = []
        gap = 0  # empty turns since the last kept utterance: the speakers must keep alternating
        for u in _strings(raw, loc, "utterances"):
            u = normalize_text(u) if normalize else " ".join(u.split())
            if not u:
                stats.skipped["empty utterances"] += 1
                gap += 1
            elif utts and gap % 2:  # same speaker as the last kept one: one turn, not a reply
                utts[-1] = f"{utts[-1]} {u}"
                stats.skipped["utterances joined across an empty turn"] += 1
                gap = 0
            else:
                utts.append(u)
                gap = 0
        if len(utts) < 2:
            stats.skipped["dialogues with fewer than 2 utterances"] += 1
            continue
        values = []
        for k, kind in kinds.items():
            value = rec.get(k)
            if kind == "str" and value is not None:
                if not isinstance(value, str):
                    raise DataFormatError(
                        f"{loc}: `{k}` must be a string, got {describe(value)} (the loader must "
                        "give text as str: it is never converted)."
                    )
                check_text(value, loc, f"`{k}`")
            elif kind == "list" and value is not None:
                value = _strings(value, loc, k)
                if normalize and k == "persona":
                    value = [normalize_text(s) for s in value]
            values.append(value)
        stats.dialogues += 1
        stats.utterances += len(utts)
        yield (utts, stats.source, *values)
    if skipped:
        merged = Counter(skipped)  # the loader's reasons first
        merged.update(stats.skipped)
        stats.skipped = +merged
    if not stats.dialogues:
        raise no_dialogues_error(stats, files)


def _string_kind(feature: Any) -> str | None:
    """``"str"`` for a string column, ``"list"`` for a list of strings, else ``None``."""
    string = datasets.Value("string")
    if feature == string:
        return "str"
    if isinstance(feature, datasets.List) and feature.feature == string:
        return "list"
    return None


def _strings(value: Any, loc: str, key: str) -> list[str]:
    """``value`` if it is a list of strings without lone surrogates, else a DataFormatError."""
    if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
        raise DataFormatError(
            f"{loc}: `{key}` must be a list of strings, got {describe(value)} (the loader must "
            "give text as str: it is never converted)."
        )
    for i, v in enumerate(value):
        check_text(v, loc, f"`{key}[{i}]`")
    return list(value)


def no_dialogues_error(stats: LoaderStats, files: Sequence[str | Path] = ()) -> EmptyDatasetError:
    """The error for a split that has no dialogue left: names the files and what was skipped."""
    where_ = f" in {', '.join(map(str, files))}" if files else ""
    if stats.skipped:
        why = "skipped: " + ", ".join(f"{n} {reason}" for reason, n in stats.skipped.items())
    else:
        why = "it is empty: no dialogue, nothing skipped"
    return EmptyDatasetError(
        f"{stats.source}/{stats.split}: no dialogues{where_} ({why}). Check that `data_dir` "
        f"points at this dataset's files and that they are in its format."
    )


# --------------------------------------------------------------------------------------------
# The loaders' cache: a parsed split is kept as an Arrow file, keyed by its source files.

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
