"""What every loader shares: split names, row validation, counting what is skipped."""

from __future__ import annotations

import logging
import re
import reprlib
from collections import Counter
from collections.abc import Mapping, Sequence
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
