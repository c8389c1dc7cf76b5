"""DailyDialog (Li et al., 2017): the official ``dialogues_<split>.txt`` files.

One dialogue per line (a line ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``, as old Mac OS
files have it), utterances separated by ``__eou__`` (each utterance, the last one included, is
followed by ``__eou__``). The text is tokenised (``"Say , Jim , how about going for a few beers
after dinner ?"``); ``normalize=True`` turns it into natural text.

Speakers: DailyDialog has two speakers who strictly alternate; the first is ``<sp1>``.

The act and emotion label files (``dialogues_act_<split>.txt``,
``dialogues_emotion_<split>.txt``) are not read: the loader returns dialogues only.
"""

from __future__ import annotations

import functools
import io
import logging
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets

from .base import (
    DataFormatError,
    check_split,
    decode_text,
    read_text,
    split_lines,
)
from .cache import cached_dialogues
from .download import download_dataset, pop_cache_dir

logger = logging.getLogger(__name__)

SOURCE = "daily_dialog"
EOU = "__eou__"
#: The folder (and archive) name of the original release.
ARCHIVE_DIR = "ijcnlp_dailydialog"
_SHOW_LINES = 10


def load_daily_dialog(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    normalize: bool = True,
    **options: Any,
) -> datasets.Dataset:
    """Load one split of DailyDialog, one row per dialogue.

    ``data_dir`` may hold the split file in any of these layouts (tried in this order):

    - ``<data_dir>/<split>/dialogues_<split>.txt`` (the unzipped split archives);
    - ``<data_dir>/dialogues_<split>.txt`` (the files side by side);
    - ``<data_dir>/<split>.zip`` (the original split archives, read without extracting);
    - the same three inside ``<data_dir>/ijcnlp_dailydialog/`` (the unzipped release);
    - ``<data_dir>/ijcnlp_dailydialog.zip`` (the original release archive, holding the split
      archives), or ``data_dir`` being that ``.zip`` file itself;
    - ``data_dir`` being the split's text file itself.

    A line without any ``__eou__`` is not a DailyDialog dialogue: it is skipped and counted, and
    a warning names the file and the first line numbers (the rest of the file still loads).
    Empty utterances and dialogues with fewer than 2 utterances are dropped and counted by
    :func:`~gpt2chat.data.cache.finalize_dialogues`. The counts are in the dataset's
    ``info.description``; a split left without any dialogue (an empty file, no line with
    ``__eou__``) is an ``EmptyDatasetError`` naming the file and these counts.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_dir: the folder (or release ``.zip``) with the files, see above. ``None`` downloads
            the original release (see :func:`gpt2chat.data.download.download_dataset`).
        normalize: turn the tokenised text into natural text (see
            :func:`gpt2chat.data.normalize.normalize_text`).
        **options: only ``cache_dir``, the download cache root.

    Returns:
        A ``datasets.Dataset`` with the columns ``utterances`` and ``source``
        (``"daily_dialog"``).

    Raises:
        ValueError: unknown ``split`` or option.
        FileNotFoundError: no file for ``split`` under ``data_dir`` (the message lists the paths
            that were tried).
        DataFormatError: bytes that are not UTF-8 (the message names the file and line), or a
            broken ``.zip`` archive or member (bad CRC, corrupt or unsupported compression, an
            encrypted member: the message names the archive and the member).
    """
    check_split(split)
    cache_dir = pop_cache_dir(options, "load_daily_dialog")
    if data_dir is None:
        data_dir = download_dataset(SOURCE, cache_dir)
    path, read = _find_split(Path(data_dir), split)
    skipped: Counter = Counter()
    return cached_dialogues(
        lambda: _parse(*read()[::-1], skipped),  # read() gives (where, lines)
        source=SOURCE,
        split=split,
        files=[path],
        normalize=normalize,
        skipped=skipped,
    )


def _find_split(root: Path, split: str) -> tuple[Path, Callable[[], tuple[str, Iterable[str]]]]:
    """Find the split in one of the accepted layouts without reading it.

    Returns the file that holds it (the text file or the archive) and a function that reads
    it, returning (where it is, its lines as :func:`~gpt2chat.data.base.split_lines` gives
    them). A text file is streamed, an archive member read whole.
    """
    name = f"dialogues_{split}.txt"
    tried: list[str] = []
    if not root.exists():
        raise FileNotFoundError(
            f"DailyDialog: `data_dir` {root} does not exist. Point it at the folder with "
            f"{split}/{name} (or the {ARCHIVE_DIR}.zip release), or leave it unset to download "
            "the dataset."
        )
    if root.is_file():
        if zipfile.is_zipfile(root):
            return root, functools.partial(_read_release_zip, root, split)
        return root, functools.partial(_read_file, root)  # the split's text file itself
    for folder in (root, root / ARCHIVE_DIR):
        for path in (folder / split / name, folder / name):
            tried.append(str(path))
            if path.is_file():
                return path, functools.partial(_read_file, path)
        archive = folder / f"{split}.zip"
        tried.append(str(archive))
        if archive.is_file():
            return archive, functools.partial(_read_split_zip, archive, name)
    release = root / f"{ARCHIVE_DIR}.zip"
    tried.append(str(release))
    if release.is_file():
        return release, functools.partial(_read_release_zip, release, split)
    raise FileNotFoundError(
        f"DailyDialog {split!r} split: none of these files exists: {', '.join(tried)}. Point "
        f"`data_dir` at a folder with {split}/{name} (or the original {ARCHIVE_DIR}.zip "
        "release), or leave `data_dir` unset to download the dataset."
    )


def _read_file(path: Path) -> tuple[str, Iterator[str]]:
    return str(path), _file_lines(path)


def _file_lines(path: Path) -> Iterator[str]:
    """``split_lines(read_text(path))``, streamed (one line in memory at a time): ``\\r\\n``
    and a lone ``\\r`` end a line as ``\\n`` does (Python's universal newlines)."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            last = "\n"
            for line in f:
                last = line
                yield line[:-1] if line.endswith("\n") else line
        if last.endswith("\n"):
            yield ""  # what follows the final newline
    except UnicodeDecodeError:
        read_text(path, lone_cr=True)  # raises the DataFormatError that names the line
        raise


def _read_split_zip(archive: Path, name: str) -> tuple[str, list[str]]:
    with _open_zip(archive, str(archive)) as zf:
        label, text = _read_member(zf, str(archive), name)
    return label, split_lines(text)


def _read_release_zip(release: Path, split: str) -> tuple[str, list[str]]:
    label, text = _read_release_zip_text(release, split)
    return label, split_lines(text)


def _read_release_zip_text(release: Path, split: str) -> tuple[str, str]:
    """Read the split from ``ijcnlp_dailydialog.zip``, which holds ``<split>.zip``."""
    name = f"dialogues_{split}.txt"
    with _open_zip(release, str(release)) as outer:
        members = outer.namelist()
        text_member = _find_member(members, name)
        if text_member is not None:  # a repacked archive with the text files inside
            return _read_member(outer, str(release), name)
        inner_name = _find_member(members, f"{split}.zip")
        if inner_name is None:
            raise DataFormatError(
                f"{release}: holds neither {split}.zip nor {name} (it is not the DailyDialog "
                f"release {ARCHIVE_DIR}.zip). Point `data_dir` at the dataset's files."
            )
        label = f"{release}/{inner_name}"
        with _open_zip(io.BytesIO(_read_bytes(outer, str(release), inner_name)), label) as inner:
            return _read_member(inner, label, name)


def _find_member(members: list[str], name: str) -> str | None:
    matches = [m for m in members if m == name or m.endswith("/" + name)]
    return min(matches, key=len) if matches else None


#: What reading a damaged archive raises besides ``BadZipFile`` (a bad CRC, a bad header):
#: ``zlib.error`` (corrupt deflate data), ``RuntimeError`` (an encrypted member),
#: ``NotImplementedError`` (an unknown compression method), ``EOFError`` (a truncated member),
#: ``OSError``/``ValueError``/``lzma.LZMAError`` (corrupt bzip2 or LZMA data, bad offsets).
_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    RuntimeError,
    NotImplementedError,
    EOFError,
    OSError,
    ValueError,
)
try:
    import lzma

    _ZIP_ERRORS += (lzma.LZMAError,)
except ImportError:  # Python built without lzma: zipfile cannot read LZMA members either
    pass


def _open_zip(source: Path | io.BytesIO, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except _ZIP_ERRORS as err:
        raise DataFormatError(
            f"{label}: not a readable .zip archive ({_reason(err)}). Download the archive again "
            "or extract it and point `data_dir` at the extracted folder."
        ) from None


def _read_bytes(zf: zipfile.ZipFile, label: str, member: str) -> bytes:
    """``zf.read(member)``; a damaged member is a :class:`DataFormatError` naming the archive
    ``label`` and the member, never ``BadZipFile``, ``zlib.error``, ``RuntimeError``..."""
    try:
        return zf.read(member)
    except _ZIP_ERRORS as err:
        raise DataFormatError(
            f"{label}: cannot read the member {member} of the .zip archive ({_reason(err)}). "
            "Download the archive again or extract it and point `data_dir` at the extracted "
            "folder."
        ) from None


def _reason(err: BaseException) -> str:
    """``err`` for an error message: its type and first line."""
    kind = type(err)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    text = " ".join(str(err).split())
    return f"{name}: {text}" if text else name


def _read_member(zf: zipfile.ZipFile, label: str, name: str) -> tuple[str, str]:
    member = _find_member(zf.namelist(), name)
    if member is None:
        raise DataFormatError(
            f"{label}: the archive does not contain {name}. Expected the DailyDialog layout "
            f"<split>/{name}; point `data_dir` at the dataset's files."
        )
    member_label = f"{label}/{member}"
    return member_label, decode_text(_read_bytes(zf, label, member), member_label, lone_cr=True)


def _parse(
    lines: Iterable[str], label: str, skipped: Counter | None = None
) -> Iterator[dict[str, list[str]]]:
    """One record per line (a generator); lines without ``__eou__`` are skipped, counted (in
    ``skipped`` too) and logged once the lines are consumed."""
    malformed: list[int] = []
    blank = 0
    for lineno, line in _but_a_blank_last(lines):
        if not line.strip():
            blank += 1
            continue
        if EOU not in line:
            malformed.append(lineno)
            continue
        parts = line.split(EOU)
        if not parts[-1].strip():
            parts.pop()  # after the final __eou__
        yield {"utterances": parts}
    if malformed and skipped is not None:
        skipped[f"lines without {EOU!r} (not DailyDialog dialogues)"] += len(malformed)
    if malformed:
        shown = ", ".join(map(str, malformed[:_SHOW_LINES]))
        more = f" (and {len(malformed) - _SHOW_LINES} more)" if len(malformed) > _SHOW_LINES else ""
        logger.warning(
            "%s: skipped %d line(s) without %r (not DailyDialog dialogues): line(s) %s%s",
            label,
            len(malformed),
            EOU,
            shown,
            more,
        )
    if blank:
        logger.info("%s: ignored %d blank line(s)", label, blank)


def _but_a_blank_last(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """``enumerate(lines, 1)`` without the last line when it is blank (the final newline)."""
    previous = None
    for item in enumerate(lines, 1):
        if previous is not None:
            yield previous
        previous = item
    if previous is not None and previous[1].strip():
        yield previous
