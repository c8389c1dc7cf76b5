"""The Chit-Chat Challenge corpus (BYU, PyPI package ``chitchat-dataset``, MIT licence).

``dataset.json`` maps a conversation id to ``{"messages": [[message, ...], ...], "prompt": ...,
"start": ..., "ratings": ...}``; every message is ``{"text", "sender", "timestamp"}``. A
speaker often sends several messages in a row; the package groups them, and this loader merges
every run of consecutive messages of one sender into one utterance (texts joined with a space,
exactly as the package's own ``ConversationDataset`` does). The first sender is ``<sp1>``.

Kept: conversations with exactly two senders and at least two turns. Skipped, counted and
logged: conversations with fewer than two turns, i.e. a single sender (3,151 of the 7,168:
mostly an opening message nobody answered), and conversations with more than two senders
(none in version 0.9.0). Empty messages (33) are dropped before merging.

The corpus has no official split. The split is fixed by the conversation id, the same on every
machine and in every Python process: ``u = int(sha256(id)[:16], 16) / 2**64`` is uniform in
[0, 1); ``u < 1 - validation_fraction - test_fraction`` is ``train``, then ``validation`` up to
``1 - test_fraction``, then ``test``. With the defaults (5% / 5%) the installed package
(version 0.9.0) gives 4,017 two-speaker conversations: 3,579 train, 222 validation and 216 test.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from .base import DataFormatError, check_split, finalize_dialogues, read_text
from .download import pop_cache_dir

logger = logging.getLogger(__name__)

SOURCE = "chitchat"
PACKAGE = "chitchat-dataset"

_EXTRA_FEATURES = {"prompt": datasets.Value("string")}


def load_chitchat(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    normalize: bool = True,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.05,
    **options: Any,
) -> datasets.Dataset:
    """Load one split of the Chit-Chat Challenge corpus, one row per two-speaker conversation.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"`` (a fixed split by conversation id,
            see the module docstring).
        data_dir: a folder holding a ``dataset.json`` in the package's format, or that file.
            ``None`` reads the file installed with the ``chitchat-dataset`` package.
        normalize: normalise the text (see :func:`gpt2chat.data.load_dialogues`).
        validation_fraction: the share of conversation ids that go to ``validation``.
        test_fraction: the share of conversation ids that go to ``test``.
        **options: only ``cache_dir`` (accepted for :func:`gpt2chat.data.load_dialogues`,
            unused: nothing is downloaded).

    Returns:
        A ``datasets.Dataset`` with the columns ``utterances``, ``source`` and ``prompt`` (the
        conversation starter the two users were shown, ``""`` when there is none).

    Raises:
        ImportError: ``data_dir`` is None and the ``chitchat-dataset`` package is not installed.
        DataFormatError: ``dataset.json`` does not have the expected structure.
    """
    check_split(split)
    pop_cache_dir(options, "load_chitchat")
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"`validation_fraction` + `test_fraction` must be < 1, got "
            f"{validation_fraction} + {test_fraction}."
        )
    path = _dataset_file(data_dir)
    conversations, skipped = _read_conversations(str(path), path.stat().st_mtime_ns)

    records = []
    for conv_id, utterances, prompt in conversations:
        if split_of(conv_id, validation_fraction, test_fraction) == split:
            records.append({"utterances": list(utterances), "prompt": prompt})
    if skipped:
        logger.info(
            "%s (%s): %d conversations in all splits kept; skipped: %s",
            SOURCE,
            path,
            len(conversations),
            ", ".join(f"{n} {why}" for why, n in skipped.items()),
        )
    return finalize_dialogues(
        records, source=SOURCE, split=split, normalize=normalize, extra_features=_EXTRA_FEATURES
    )


def split_of(conv_id: str, validation_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """The split a conversation id belongs to (stable: a SHA-256 of the id)."""
    u = int(hashlib.sha256(conv_id.encode("utf-8")).hexdigest()[:16], 16) / 2**64
    if u < 1.0 - validation_fraction - test_fraction:
        return "train"
    if u < 1.0 - test_fraction:
        return "validation"
    return "test"


def _dataset_file(data_dir: str | Path | None) -> Path:
    if data_dir is not None:
        path = Path(data_dir)
        if path.is_dir():
            path = path / "dataset.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"chitchat: expected the file {path} (the Chit-Chat Challenge `dataset.json`) "
                "but it does not exist. Check `data_dir`, or leave it unset to read the copy "
                f"installed with the `{PACKAGE}` package."
            )
        return path
    import importlib.util

    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"chitchat: the `{PACKAGE}` package is not installed. Run `pip install {PACKAGE}`, "
            "or pass `data_dir` with a folder holding its `dataset.json`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"chitchat: {path} is missing from the installed `{PACKAGE}` package; reinstall it "
            f"(`pip install --force-reinstall {PACKAGE}`)."
        )
    return path


@functools.lru_cache(maxsize=4)
def _read_conversations(
    path_str: str, mtime_ns: int
) -> tuple[tuple[tuple[str, tuple[str, ...], str], ...], Counter]:
    """Parse ``dataset.json`` once per file version: ``(id, utterances, prompt)`` triples."""
    path = Path(path_str)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(
            f"{path}, line {err.lineno}: invalid JSON ({err.msg}, column {err.colno})."
        ) from None
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object mapping conversation ids to conversations, got "
            f"{type(data).__name__}."
        )
    kept = []
    skipped: Counter = Counter()
    for conv_id, conv in data.items():
        turns = _turns(conv, path, conv_id, skipped)
        if len(turns) < 2:  # after merging, fewer than 2 turns means a single speaker
            skipped["conversations with fewer than 2 turns (a single speaker)"] += 1
        elif len({sender for sender, _ in turns}) > 2:
            skipped["conversations with more than 2 speakers"] += 1
        else:
            prompt = conv.get("prompt") or ""
            kept.append((conv_id, tuple(text for _, text in turns), str(prompt)))
    return tuple(kept), skipped


def _turns(conv: Any, path: Path, conv_id: str, skipped: Counter) -> list[tuple[str, str]]:
    """Merge the conversation's messages into ``(sender, text)`` turns."""
    where = f"{path}, conversation {conv_id!r}"
    if not isinstance(conv, dict) or not isinstance(conv.get("messages"), list):
        raise DataFormatError(f"{where}: expected an object with a `messages` list.")
    turns: list[tuple[str, list[str]]] = []
    for group in conv["messages"]:
        if not isinstance(group, list):
            group = [group]
        for message in group:
            if not (
                isinstance(message, dict)
                and isinstance(message.get("text"), str)
                and isinstance(message.get("sender"), str)
            ):
                raise DataFormatError(
                    f"{where}: every message must be an object with string `text` and "
                    f"`sender`, got {message!r:.80}."
                )
            text = message["text"].strip()
            if not text:
                skipped["empty messages"] += 1
                continue
            if turns and turns[-1][0] == message["sender"]:
                turns[-1][1].append(text)
            else:
                turns.append((message["sender"], [text]))
    return [(sender, " ".join(texts)) for sender, texts in turns]
