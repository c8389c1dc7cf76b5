"""EmpatheticDialogues (Rashkin et al., 2019): ParlAI's ``train.csv``, ``valid.csv``, ``test.csv``.

Columns ``conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags``; one row
per utterance, commas inside the text written ``_comma_``. ``context`` is the emotion label
(``"terrified"``...) and ``prompt`` the situation the speaker was asked to talk about.

The files are read with the :mod:`csv` module, which accepts both distributions:

- ParlAI's original files: unquoted fields, and some rows with a 9th field (label candidates),
  which is ignored;
- exports of the Hugging Face copy: CRLF line ends and quoted fields.

In ParlAI's unquoted files, a field that starts with ``"`` makes any CSV reader (the Hugging Face
script's included) swallow the following lines into that field, up to the next ``"``; the
Hugging Face export kept these merged fields. The original format never has a real comma in a
field, so such a row is split back into its lines and fields (only the stray ``"`` is lost) when
that is provably what happened: no other field of the row holds a comma, and every line of the
row, split at its commas, is a whole row (the header's number of fields or more, a conversation
id, an integer ``utterance_idx``). The recovered rows are counted and logged. Any other field
that spans lines or holds a comma is valid quoted CSV and is kept as it is (its line ends are
whitespace, normalised as any other).

Speakers: rows are ordered by ``utterance_idx``; consecutive rows by the same ``speaker_idx``
are merged into one utterance (joined with a space), so the two speakers alternate. The one who
speaks first (who told the situation) is ``<sp1>``.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from .base import DataFormatError, check_split, read_text, split_lines, where
from .cache import cached_dialogues
from .download import download_dataset, pop_cache_dir
from .normalize import normalize_text

logger = logging.getLogger(__name__)

__all__ = ["REQUIRED_COLUMNS", "load_empathetic_dialogues"]

SOURCE = "empathetic_dialogues"
#: The folder name inside ParlAI's archive.
ARCHIVE_DIR = "empatheticdialogues"
REQUIRED_COLUMNS = ("conv_id", "utterance_idx", "context", "prompt", "speaker_idx", "utterance")
_SPLIT_FILES = {
    "train": ("train.csv",),
    "validation": ("valid.csv", "validation.csv"),
    "test": ("test.csv",),
}
_EXTRA_FEATURES = {
    "context": datasets.Value("string"),
    "prompt": datasets.Value("string"),
}
_SHOW_LINES = 10


def load_empathetic_dialogues(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    normalize: bool = True,
    **options: Any,
) -> datasets.Dataset:
    """Load one split of EmpatheticDialogues, one row per conversation.

    Rows whose ``utterance_idx`` is not an integer, or that have too few fields, are skipped and
    counted; a warning names the file and the first line numbers, and the counts are in the
    dataset's ``info.description``. A split left without any conversation (a file with only
    the header) is an ``EmptyDatasetError`` naming the file and these counts.

    Args:
        split: ``"train"``, ``"validation"`` (file ``valid.csv``) or ``"test"``.
        data_dir: a folder with the split's CSV file (directly or in ``empatheticdialogues/``),
            or the CSV file itself. ``None`` downloads ParlAI's archive (see
            :func:`gpt2chat.data.download.download_dataset`).
        normalize: normalise the utterances and the prompt (see
            :func:`gpt2chat.data.normalize.normalize_text`); ``_comma_`` always becomes ``,``.
        **options: only ``cache_dir``, the download cache root.

    Returns:
        A ``datasets.Dataset`` with the columns ``utterances``, ``source``
        (``"empathetic_dialogues"``), ``context`` (the emotion label) and ``prompt`` (the
        situation).

    Raises:
        ValueError: unknown ``split`` or option.
        FileNotFoundError: the split's CSV file is missing.
        DataFormatError: bytes that are not UTF-8, unparsable CSV (the message names the file
            and line), or a header without the required columns.
    """
    check_split(split)
    cache_dir = pop_cache_dir(options, "load_empathetic_dialogues")
    if data_dir is None:
        data_dir = download_dataset(SOURCE, cache_dir)
    path = _split_file(Path(data_dir), split)
    skipped: Counter = Counter()
    return cached_dialogues(
        lambda: _read_conversations(path, normalize, skipped),
        source=SOURCE,
        split=split,
        files=[path],
        normalize=normalize,
        extra_features=_EXTRA_FEATURES,
        skipped=skipped,
    )


def _split_file(root: Path, split: str) -> Path:
    if root.is_file():
        return root
    tried = []
    for folder in (root, root / ARCHIVE_DIR):
        for name in _SPLIT_FILES[split]:
            path = folder / name
            tried.append(str(path))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"EmpatheticDialogues {split!r} split: none of these files exists: {', '.join(tried)}. "
        f"Point `data_dir` at the folder with {_SPLIT_FILES[split][0]} (ParlAI's "
        f"{ARCHIVE_DIR}/ folder), or leave `data_dir` unset to download the dataset."
    )


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_SHOW_LINES]))
    return shown + (f" (and {len(lines) - _SHOW_LINES} more)" if len(lines) > _SHOW_LINES else "")


def _uncomma(text: str) -> str:
    return text.replace("_comma_", ",")


def _rows(path: Path):
    """Yield ``(line, fields)`` for each data row; the first item is the header.

    The file is streamed; bytes that are not UTF-8 are reported with their line by
    :func:`~gpt2chat.data.base.read_text`.
    """
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        start = 1
        try:
            for row in reader:
                yield start, row
                start = reader.line_num + 1
        except csv.Error as err:
            raise DataFormatError(
                f"{where(path, reader.line_num)}: not a readable CSV row ({err}). The file must "
                "be EmpatheticDialogues' comma-separated format."
            ) from None
        except UnicodeDecodeError:
            read_text(path, lone_cr=True)  # raises the DataFormatError that names the line
            raise


def _swallowed_rows(
    fields: list[str], line: int, whole: int, index: dict[str, int]
) -> list[tuple[int, list[str]]] | None:
    """The ``(line, fields)`` rows that a stray ``"`` in ParlAI's unquoted format made the CSV
    reader merge into this one, or ``None`` when the row is not provably that case (valid
    quoted CSV, whose text is kept as it is).

    Provably that case: a field spans lines, no field that does not holds a comma (the
    original format writes ``_comma_``), and every line of the row, split at its commas, is a
    whole row: at least ``whole`` fields, a conversation id, an integer ``utterance_idx``.
    """
    multiline = ["\n" in f or "\r" in f for f in fields]
    if not any(multiline):
        return None
    if any("," in f for f, spans in zip(fields, multiline) if not spans):
        return None
    rows = []
    for k, text in enumerate(split_lines(",".join(fields))):
        if not text.strip():
            continue  # a blank line, swallowed
        row = text.split(",")
        if len(row) < whole or not _is_index(row[index["utterance_idx"]]):
            return None
        if not row[index["conv_id"]].strip():
            return None
        rows.append((line + k, row))
    return rows if len(rows) > 1 else None


def _is_index(text: str) -> bool:
    text = text.strip()
    return text.isascii() and text.isdigit()


def _read_conversations(
    path: Path, normalize: bool, skipped: Counter | None = None
) -> list[dict[str, Any]]:
    rows = _rows(path)
    header = next(rows, None)
    if header is None or not any(h.strip() for h in header[1]):
        raise DataFormatError(
            f"{path}: the file is empty; expected the header {','.join(REQUIRED_COLUMNS)},..."
        )
    columns = [h.strip() for h in header[1]]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataFormatError(
            f"{where(path, 1)}: missing column(s) {', '.join(missing)} in the header "
            f"{','.join(columns)!r}. EmpatheticDialogues files have the columns "
            "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags."
        )
    index = {c: columns.index(c) for c in REQUIRED_COLUMNS}
    width = max(index.values()) + 1
    whole = max(width, len(columns))  # the fields of a whole row

    conversations: dict[str, list[tuple[int, str, str, str, str]]] = {}
    problems: dict[str, list[int]] = {}
    recovered, recovered_at = 0, []
    for line, fields in rows:
        if not any(f.strip() for f in fields):
            continue  # a blank line
        pieces = _swallowed_rows(fields, line, whole, index)
        if pieces is not None:
            # A stray '"' made the csv module swallow several original lines into one field.
            recovered += len(pieces) - 1
            recovered_at.append(line)
            todo = pieces
        else:
            todo = [(line, fields)]
        for row_line, row in todo:
            if len(row) < width:
                problems.setdefault("rows with too few fields", []).append(row_line)
                continue
            try:
                turn = int(row[index["utterance_idx"]].strip())
            except ValueError:
                problems.setdefault("rows whose utterance_idx is not an integer", []).append(
                    row_line
                )
                continue
            conv_id = row[index["conv_id"]].strip()
            conversations.setdefault(conv_id, []).append(
                (
                    turn,
                    row[index["speaker_idx"]].strip(),
                    _uncomma(row[index["utterance"]]),
                    row[index["context"]].strip(),
                    _uncomma(row[index["prompt"]]),
                )
            )
    for what, lines in problems.items():
        if skipped is not None:
            skipped[what] += len(lines)
        logger.warning("%s: skipped %d %s, at line(s) %s", path, len(lines), what, _lines(lines))
    if recovered:
        logger.info(
            "%s: %d row(s) recovered from fields that span several lines (a stray '\"' at the "
            "start of an unquoted field), at line(s) %s",
            path,
            recovered,
            _lines(recovered_at),
        )

    records = []
    merged = 0
    for turns in conversations.values():
        turns.sort(key=lambda t: t[0])
        utterances: list[str] = []
        speakers: list[str] = []
        for _, speaker, text, _, _ in turns:
            if speakers and speakers[-1] == speaker:
                utterances[-1] = f"{utterances[-1]} {text}"
                merged += 1
            else:
                speakers.append(speaker)
                utterances.append(text)
        _, _, _, context, prompt = turns[0]
        prompt = normalize_text(prompt) if normalize else " ".join(prompt.split())
        records.append({"utterances": utterances, "context": context, "prompt": prompt})
    if merged:
        logger.info("%s: merged %d row(s) into the previous row of the same speaker", path, merged)
    return records
