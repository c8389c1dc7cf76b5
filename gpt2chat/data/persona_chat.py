"""Persona-Chat (Zhang et al., 2018), as distributed by ParlAI (ConvAI2's ``self_original`` view).

Two formats are read:

- ParlAI's text files ``<split>_self_original_no_cands.txt`` (preferred) or
  ``<split>_self_original.txt`` (split names ``train``, ``valid``, ``test``). Every line starts
  with its number inside the dialogue, and number 1 starts a new dialogue (a line ends at
  ``\\n``, ``\\r\\n`` or a lone ``\\r``)::

      1 your persona: i like to ski.
      2 your persona: ...
      5 hi , how are you ?<TAB>i'm great , just back from skiing .

  A turn line holds the partner's utterance, a tab and the self utterance; the
  with-candidates file adds two tab fields (an empty reward and the candidates joined by ``|``),
  which are ignored. ``partner's persona:`` lines (in ParlAI's ``both_*`` files) are ignored
  too: the ``persona`` column is always the persona of the self speaker.
- The JSON ``personachat_self_original.json`` of Hugging Face's transfer-learning-conv-ai
  (keys ``train`` and ``valid``; each dialogue is ``{"personality": [...], "utterances":
  [{"history": [...], "candidates": [...]}, ...]}``). The whole dialogue is the last item's
  ``history`` followed by its gold reply, the *last* candidate.

Speakers: the partner speaks first and is ``<sp1>``; the self speaker, whose persona is given,
is ``<sp2>``, the bot side. ``__ SILENCE __`` turns (the partner saying nothing so that the
self speaker opens) are dropped and counted; were one to fall mid-dialogue, the two utterances
of the other speaker around it are merged so that the speakers keep alternating (a dialogue
that starts with silence then starts with the self speaker as ``<sp1>``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from .base import (
    DataFormatError,
    check_split,
    describe,
    has_surrogate,
    read_text,
    split_lines,
)
from .cache import cached_dialogues
from .download import download_dataset, pop_cache_dir
from .json_input import parse_json

logger = logging.getLogger(__name__)

__all__ = ["load_persona_chat"]

SOURCE = "persona_chat"
#: The folder name inside ParlAI's archive.
ARCHIVE_DIR = "personachat"
JSON_FILE = "personachat_self_original.json"
SILENCE = "__ SILENCE __"
YOUR_PERSONA = "your persona:"
PARTNER_PERSONA = "partner's persona:"
_FILE_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
_FORMATS = ("txt", "json")
_EXTRA_FEATURES = {"persona": datasets.Sequence(datasets.Value("string"))}
_SHOW = 10


def load_persona_chat(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    normalize: bool = True,
    format: str | None = None,
    **options: Any,
) -> datasets.Dataset:
    """Load one split of Persona-Chat, one row per dialogue.

    A text line that is neither a persona line nor a ``partner<TAB>self`` turn (no line number,
    no tab) is skipped and counted, and a warning names the file and the first line numbers;
    so is a JSON dialogue that is not in the layout: without ``utterances``/``history``/
    ``candidates``, a value of the wrong type (a ``history`` that is not a list of strings, a
    persona sentence that is not a string: text is never converted) or a text holding an
    unpaired UTF-16 surrogate (a ``"\\ud800"`` escape, not valid Unicode). The counts, by
    reason, are in the dataset's ``info.description``; a split left without any dialogue is an
    ``EmptyDatasetError`` naming the file and these counts.

    Args:
        split: ``"train"``, ``"validation"`` (ParlAI's ``valid``) or ``"test"``.
        data_dir: a folder with ParlAI's text files and/or ``personachat_self_original.json``
            (directly or in ``personachat/``), or one such file. ``None`` downloads ParlAI's
            archive (see :func:`gpt2chat.data.download.download_dataset`).
        normalize: normalise the text (Persona-Chat is tokenised and lower-cased), persona
            sentences included (see :func:`gpt2chat.data.normalize.normalize_text`).
        format: ``"txt"`` or ``"json"`` to choose the format; by default the text files are
            used when present, else the JSON file.
        **options: only ``cache_dir``, the download cache root.

    Returns:
        A ``datasets.Dataset`` with the columns ``utterances`` (partner first), ``source``
        (``"persona_chat"``) and ``persona`` (the self speaker's persona sentences, without the
        ``your persona:`` prefix).

    Raises:
        ValueError: unknown ``split``, ``format`` or option.
        FileNotFoundError: no file for the split; ``split="test"`` with the JSON file, which
            has no test split.
        DataFormatError: bytes that are not UTF-8, invalid JSON (the message names the file
            and line) or JSON that is not Persona-Chat's layout.
    """
    check_split(split)
    if format is not None and format not in _FORMATS:
        raise ValueError(f"`format` must be 'txt', 'json' or None (automatic), got {format!r}.")
    cache_dir = pop_cache_dir(options, "load_persona_chat")
    if data_dir is None:
        data_dir = download_dataset(SOURCE, cache_dir)
    path, fmt = _find_file(Path(data_dir), split, format)
    skipped: Counter = Counter()
    return cached_dialogues(
        lambda: _read_json(path, split, skipped) if fmt == "json" else _read_txt(path, skipped),
        source=SOURCE,
        split=split,
        files=[path],
        normalize=normalize,
        extra_features=_EXTRA_FEATURES,
        skipped=skipped,
        format=fmt,
    )


def _find_file(root: Path, split: str, fmt: str | None) -> tuple[Path, str]:
    if root.is_file():
        return root, fmt or ("json" if root.suffix.lower() == ".json" else "txt")
    name = _FILE_SPLITS[split]
    folders = (root, root / ARCHIVE_DIR)
    txt = [f / f"{name}_self_original{suffix}.txt" for f in folders for suffix in ("_no_cands", "")]
    js = [f / JSON_FILE for f in folders]
    candidates = {"txt": txt, "json": js}
    order = (fmt,) if fmt else _FORMATS
    for kind in order:
        for path in candidates[kind]:
            if path.is_file():
                return path, kind
    tried = [str(p) for kind in order for p in candidates[kind]]
    raise FileNotFoundError(
        f"Persona-Chat {split!r} split: none of these files exists: {', '.join(tried)}. Point "
        f"`data_dir` at ParlAI's {ARCHIVE_DIR}/ folder (with {name}_self_original_no_cands.txt) "
        f"or at {JSON_FILE}, or leave `data_dir` unset to download the dataset."
    )


def _is_silence(text: str) -> bool:
    return text.strip() == SILENCE


def _dialogue(turns: list[tuple[int, str]], counts: dict[str, int]) -> list[str]:
    """Utterances of alternating speakers: silences dropped, same-speaker neighbours merged."""
    utterances: list[str] = []
    last = None
    for speaker, text in turns:
        if _is_silence(text):
            counts["silence"] += 1
            continue
        if speaker == last:
            utterances[-1] = f"{utterances[-1]} {text}"
            counts["merged"] += 1
        else:
            utterances.append(text)
            last = speaker
    return utterances


def _log_counts(
    path: Path, counts: dict[str, int], problems: list[Any], unit: str, skipped: Counter
) -> None:
    if counts["silence"]:
        skipped[f"'{SILENCE}' turns"] += counts["silence"]
        logger.info("%s: dropped %d '%s' turn(s)", path, counts["silence"], SILENCE)
    if counts["merged"]:
        logger.warning(
            "%s: %d utterance(s) merged with the previous one of the same speaker (around a "
            "'%s' turn)",
            path,
            counts["merged"],
            SILENCE,
        )
    if counts.get("partner_persona"):
        skipped["partner's persona lines (ignored)"] += counts["partner_persona"]
        logger.info('%s: ignored %d "partner\'s persona" line(s)', path, counts["partner_persona"])
    if problems:
        shown = ", ".join(map(str, problems[:_SHOW]))
        more = f" (and {len(problems) - _SHOW} more)" if len(problems) > _SHOW else ""
        logger.warning(
            "%s: skipped %d %s that are not in Persona-Chat's format: %s%s",
            path,
            len(problems),
            unit,
            shown,
            more,
        )


def _read_txt(path: Path, skipped: Counter) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    counts = {"silence": 0, "merged": 0, "partner_persona": 0}
    malformed: list[int] = []
    persona: list[str] = []
    turns: list[tuple[int, str]] = []

    def flush() -> None:
        if persona or turns:
            records.append({"utterances": _dialogue(turns, counts), "persona": list(persona)})

    # A line ends at "\n", "\r\n" or a lone "\r" (old Mac OS files); line numbers count them all.
    for lineno, line in enumerate(split_lines(read_text(path, lone_cr=True)), 1):
        if not line.strip():
            continue
        number, _, rest = line.partition(" ")
        if not (number.isascii() and number.isdigit()):
            malformed.append(lineno)
            continue
        if number == "1":
            flush()
            persona, turns = [], []
        if rest.startswith(YOUR_PERSONA):
            persona.append(rest[len(YOUR_PERSONA) :].strip())
            continue
        if rest.startswith(PARTNER_PERSONA):
            counts["partner_persona"] += 1
            continue
        fields = rest.split("\t")
        if len(fields) < 2:
            malformed.append(lineno)
            continue
        turns.append((1, fields[0]))
        turns.append((2, fields[1]))
    flush()
    if malformed:
        skipped["lines not in Persona-Chat's format (no line number, or a turn without a tab)"] += (
            len(malformed)
        )
    _log_counts(path, counts, [f"line {n}" for n in malformed], "line(s)", skipped)
    return records


def _read_json(path: Path, split: str, skipped: Counter) -> list[dict[str, Any]]:
    data = parse_json(read_text(path), path, hint=f"Expected Persona-Chat's {JSON_FILE}.")
    name = _FILE_SPLITS[split]
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object with the keys 'train' and 'valid' "
            f"({JSON_FILE}), got a {type(data).__name__}."
        )
    if name not in data:
        raise FileNotFoundError(
            f"{path} has no {name!r} split (its keys: {describe(list(data))}); "
            f"{JSON_FILE} holds 'train' and 'valid' only. For the test split use ParlAI's "
            f"text file test_self_original_no_cands.txt (format='txt')."
        )
    items = data[name]
    if not isinstance(items, list):
        raise DataFormatError(f"{path}: data[{name!r}] must be a list of dialogues.")
    records = []
    counts = {"silence": 0, "merged": 0}
    malformed: list[str] = []
    for i, item in enumerate(items):
        dialogue = _json_dialogue(item)
        if isinstance(dialogue, str):  # why it is skipped
            skipped[f"dialogues {dialogue}"] += 1
            malformed.append(f"data[{name!r}][{i}]")
            continue
        history, reply, persona = dialogue
        # The history alternates partner, self, ...; the gold reply is the self speaker's.
        full = [*history, reply]
        turns = [(2 if (len(full) - 1 - k) % 2 == 0 else 1, text) for k, text in enumerate(full)]
        records.append({"utterances": _dialogue(turns, counts), "persona": persona})
    _log_counts(path, counts, malformed, "dialogue(s)", skipped)
    return records


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _json_dialogue(item: Any) -> tuple[list[str], str, list[str]] | str:
    """``(history, reply, persona)`` of one JSON dialogue, or why it is not one (a reason)."""
    if not isinstance(item, dict):
        return "that are not JSON objects"
    utterances = item.get("utterances")
    if not (isinstance(utterances, list) and utterances):
        return "without a non-empty `utterances` list"
    last = utterances[-1]
    if not (isinstance(last, dict) and _is_str_list(last.get("history"))):
        return "whose last `utterances` item has no `history` list of strings"
    candidates = last.get("candidates")
    if not (isinstance(candidates, list) and candidates and isinstance(candidates[-1], str)):
        return "whose last `utterances` item has no `candidates` list ending with a string"
    persona = item.get("personality", [])
    if not _is_str_list(persona):
        return "whose `personality` is not a list of strings"
    history, reply = last["history"], candidates[-1]
    if any(has_surrogate(t) for t in (*history, reply, *persona)):
        return "with a text holding an unpaired UTF-16 surrogate (not valid Unicode)"
    return list(history), reply, list(persona)
