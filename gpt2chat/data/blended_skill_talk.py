"""BlendedSkillTalk (Smith et al., 2020): ParlAI's raw JSON or the Hugging Face schema.

Two crowd workers talk: a *free* worker, who speaks first, and a *guided* worker, who is shown
suggestions from models trained on ConvAI2, EmpatheticDialogues and Wizard of Wikipedia. Each
conversation is seeded with two utterances taken from one of those datasets (``context_dataset``),
attributed to the free and then the guided worker.

Speakers: the free worker is ``<sp1>``, the guided worker ``<sp2>``, the bot side. A dialogue
is the two seed utterances followed by the collected messages, alternating free, guided, free,
guided...

Persona: ParlAI's raw ``personas`` holds two personas, ``personas[0]`` for the free worker and
``personas[1]`` for the guided one: ParlAI's own teacher shows ``personas[1]`` as "your persona"
to the model that produces the guided worker's lines, and the Hugging Face script keeps only
``personas[1]`` (as a list of sentences). The ``persona`` column is therefore the guided
worker's persona, i.e. the persona of ``<sp2>``.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from .base import (
    DataFormatError,
    check_split,
    check_text,
    describe,
    read_text,
    where,
)
from .cache import cached_dialogues
from .download import download_dataset, pop_cache_dir
from .json_input import parse_json

logger = logging.getLogger(__name__)

SOURCE = "blended_skill_talk"

_SPLIT_FILES = {
    "train": ("train",),
    "validation": ("valid", "validation"),
    "test": ("test",),
}
_RAW_KEYS = ("personas", "free_turker_utterance", "guided_turker_utterance", "dialog")
_HF_KEYS = ("personas", "previous_utterance", "free_messages", "guided_messages")

_EXTRA_FEATURES = {
    "persona": datasets.Sequence(datasets.Value("string")),
    "context_dataset": datasets.Value("string"),
}


def load_blended_skill_talk(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    normalize: bool = True,
    **options: Any,
) -> datasets.Dataset:
    """Load one split of BlendedSkillTalk, one row per conversation.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.
        data_dir: a folder with ``train.json``, ``valid.json`` (or ``validation.json``) and
            ``test.json`` (``.jsonl`` also accepted), or the JSON file of the requested split.
            Each file is a JSON list or JSON lines, one conversation per item, either in
            ParlAI's raw schema (``personas``, ``context_dataset``, ``free_turker_utterance``,
            ``guided_turker_utterance``, ``dialog``: ``[speaker, text]`` pairs...) or in the
            Hugging Face schema (``personas``, ``context``, ``previous_utterance``,
            ``free_messages``, ``guided_messages``...). ``None`` downloads ParlAI's archive
            (see :func:`gpt2chat.data.download.download_dataset`).
        normalize: normalise the text (see :func:`gpt2chat.data.load_dialogues`).
        **options: only ``cache_dir``, the download cache root.

    Returns:
        A ``datasets.Dataset`` with the columns ``utterances`` (free worker first),
        ``source``, ``persona`` (the guided worker's persona sentences, i.e. ``<sp2>``'s) and
        ``context_dataset`` (``convai2``, ``empathetic_dialogues``, ``wizard_of_wikipedia``...).

    Raises:
        FileNotFoundError: the split's file is missing.
        DataFormatError: an item is not a conversation in either schema (the message names the
            file and the item or line): invalid JSON (nesting too deep included), a missing key,
            a value of the wrong type (text is never converted) or a text holding an unpaired
            UTF-16 surrogate (a ``"\\ud800"`` escape, not valid Unicode). Its subclass
            ``EmptyDatasetError``: no conversation is left.

    Conversations whose speakers do not alternate, or whose free/guided message counts cannot
    be interleaved, are skipped; if either seed utterance is empty both are dropped; a
    conversation is cut before an empty message. All of this is counted and logged, and the
    counts are in the dataset's ``info.description``.
    """
    check_split(split)
    cache_dir = pop_cache_dir(options, "load_blended_skill_talk")
    if data_dir is None:
        data_dir = download_dataset(SOURCE, cache_dir)
    path = _split_file(Path(data_dir), split)
    skipped: Counter = Counter()
    return cached_dialogues(
        lambda: _read_records(path, split, skipped),
        source=SOURCE,
        split=split,
        files=[path],
        normalize=normalize,
        extra_features=_EXTRA_FEATURES,
        skipped=skipped,
    )


def _read_records(path: Path, split: str, skipped: Counter) -> list[dict]:
    issues: Counter = Counter()
    records = []
    for loc, item in _read_items(path):
        rec = _parse_item(item, loc, issues)
        if rec is not None:
            records.append(rec)
    skipped.update(issues)
    if issues:
        logger.warning(
            "%s/%s (%s): %s",
            SOURCE,
            split,
            path,
            ", ".join(f"{n} {why}" for why, n in issues.items()),
        )
    return records


def _split_file(data_dir: Path, split: str) -> Path:
    if data_dir.is_file():
        return data_dir
    tried = []
    for stem in _SPLIT_FILES[split]:
        for ext in (".json", ".jsonl"):
            candidate = data_dir / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
            tried.append(candidate.name)
    raise FileNotFoundError(
        f"BlendedSkillTalk {split} split: none of {', '.join(tried)} is in {data_dir}. Check "
        "`data_dir`, or leave it unset to download the dataset."
    )


def _read_items(path: Path):
    """Yield ``(location, item)``: a JSON list's items, or the objects of a JSON-lines file."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = parse_json(text, path)
        for idx, item in enumerate(data):
            yield f"{path}, item {idx}", item
        return
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        item = parse_json(
            line,
            path,
            line=lineno,
            hint="The file must be a JSON list of conversations or JSON lines, one conversation "
            "per line.",
        )
        yield where(path, lineno), item


def _parse_item(item: Any, loc: str, issues: Counter) -> dict | None:
    if not isinstance(item, dict):
        raise DataFormatError(
            f"{loc}: expected a JSON object (a conversation), got {type(item).__name__}."
        )
    if "dialog" in item:
        return _parse_raw(item, loc, issues)
    if "free_messages" in item or "guided_messages" in item:
        return _parse_hf(item, loc, issues)
    raise DataFormatError(
        f"{loc}: not a BlendedSkillTalk conversation: expected ParlAI's keys "
        f"{', '.join(_RAW_KEYS)} or the Hugging Face keys {', '.join(_HF_KEYS)}; found "
        f"{describe(sorted(item)) if item else 'no keys'}."
    )


def _require(item: dict, keys: tuple[str, ...], loc: str) -> None:
    missing = [k for k in keys if k not in item]
    if missing:
        raise DataFormatError(f"{loc}: missing key(s) {', '.join(missing)}.")


def _str_list(value: Any, loc: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(f"{loc}: `{key}` must be a list of strings, got {describe(value)}.")
    return [check_text(v, loc, f"`{key}[{i}]`") for i, v in enumerate(value)]


def _text(value: Any, loc: str, key: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f"{loc}: `{key}` must be a string, got {type(value).__name__}.")
    return check_text(value, loc, f"`{key}`")


def _parse_raw(item: dict, loc: str, issues: Counter) -> dict | None:
    _require(item, _RAW_KEYS, loc)
    personas = item["personas"]
    if not (isinstance(personas, list) and len(personas) == 2):
        raise DataFormatError(
            f"{loc}: `personas` must be a list of 2 personas (free worker, guided worker), got "
            f"{describe(personas)}."
        )
    persona = _str_list(personas[1], loc, "personas[1]")
    seed = [
        _text(item["free_turker_utterance"], loc, "free_turker_utterance"),
        _text(item["guided_turker_utterance"], loc, "guided_turker_utterance"),
    ]
    dialog = item["dialog"]
    if not isinstance(dialog, list):
        raise DataFormatError(f"{loc}: `dialog` must be a list of [speaker, text] pairs.")
    speakers, body = [], []
    for i, turn in enumerate(dialog):
        if not (
            isinstance(turn, list)
            and len(turn) == 2
            and isinstance(turn[0], (str, int))
            and isinstance(turn[1], str)
        ):
            raise DataFormatError(
                f"{loc}: `dialog[{i}]` must be a [speaker, text] pair (speaker a number or a "
                f"string), got {describe(turn)}."
            )
        speakers.append(turn[0])
        body.append(check_text(turn[1], loc, f"`dialog[{i}][1]`"))
    if any(a == b for a, b in itertools.pairwise(speakers)):
        issues["conversations skipped because their speakers do not alternate"] += 1
        return None
    context = _text(item.get("context_dataset"), loc, "context_dataset")
    return _record(seed, body, persona, context, issues)


def _parse_hf(item: dict, loc: str, issues: Counter) -> dict | None:
    _require(item, _HF_KEYS, loc)
    persona = _str_list(item["personas"], loc, "personas")
    seed = _str_list(item["previous_utterance"], loc, "previous_utterance")
    free = _str_list(item["free_messages"], loc, "free_messages")
    guided = _str_list(item["guided_messages"], loc, "guided_messages")
    if len(free) not in (len(guided), len(guided) + 1):
        issues["conversations skipped because free/guided message counts do not interleave"] += 1
        return None
    body = []
    for i, message in enumerate(free):
        body.append(message)
        if i < len(guided):
            body.append(guided[i])
    context = _text(item.get("context", item.get("context_dataset")), loc, "context")
    return _record(seed, body, persona, context, issues)


def _record(
    seed: list[str], body: list[str], persona: list[str], context: str, issues: Counter
) -> dict:
    if len(seed) == 2 and all(s.strip() for s in seed):
        utterances = list(seed)
    else:
        utterances = []
        if any(s.strip() for s in seed):
            issues["seed utterance pairs dropped (one of the two was empty or missing)"] += 1
    for i, message in enumerate(body):
        if not message.strip():
            # Dropping one message would swap the speakers of all the following ones.
            issues["conversations cut before an empty message"] += 1
            body = body[:i]
            break
    utterances.extend(body)
    return {"utterances": utterances, "persona": list(persona), "context_dataset": context}
