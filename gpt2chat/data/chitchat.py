"""The Chit-Chat Challenge corpus (BYU, PyPI package ``chitchat-dataset``, MIT licence).

``dataset.json`` maps a conversation id to ``{"messages": [[message, ...], ...], "prompt": ...,
"start": ..., "ratings": ...}``; every message is ``{"text", "sender", "timestamp"}``. A
speaker often sends several messages in a row; the package groups them, and this loader merges
every run of consecutive messages of one sender into one utterance (texts joined with a space,
exactly as the package's own ``ConversationDataset`` does). The first sender is ``<sp1>``.

Kept: conversations with exactly two senders and at least two turns. Skipped, counted and
logged: conversations with fewer than two turns, i.e. a single sender (3,151 of the 7,168:
mostly an opening message nobody answered), and conversations with more than two senders
(none in version 0.9.0). Empty messages (33) are dropped before merging. The counts are those
of the split's conversations, in the dataset's ``info.description`` with the number of
conversations that belong to the other splits; a split left without any conversation is an
``EmptyDatasetError`` naming the file and these counts.

A conversation that is not in this format (a value of the wrong type: text is never converted;
a text or prompt holding an unpaired UTF-16 surrogate, a ``"\\ud800"`` escape that is not valid
Unicode) is an error naming the file and the conversation id; invalid JSON (nesting too deep
included, and anything but whitespace after the object) is an error naming the file and the
line, and so is a conversation id that appears twice (``json.loads`` would keep only the last
of the two conversations).

The corpus has no official split. The split is fixed by the conversation id, the same on every
machine and in every Python process: ``u = int(sha256(id)[:16], 16) / 2**64`` is uniform in
[0, 1); ``u < 1 - validation_fraction - test_fraction`` is ``train``, then ``validation`` up to
``1 - test_fraction``, then ``test``. With the defaults (5% / 5%) the installed package
(version 0.9.0) gives 4,017 two-speaker conversations: 3,579 train, 222 validation and 216 test.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from .base import DataFormatError, check_split, check_text, describe, read_text
from .cache import cached_dialogues
from .download import pop_cache_dir
from .json_input import json_error, parse_json

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
    skipped: Counter = Counter()
    return cached_dialogues(
        lambda: _split_records(path, split, validation_fraction, test_fraction, skipped),
        source=SOURCE,
        split=split,
        files=[path],
        normalize=normalize,
        extra_features=_EXTRA_FEATURES,
        skipped=skipped,
        validation_fraction=float(validation_fraction),
        test_fraction=float(test_fraction),
    )


def _split_records(
    path: Path, split: str, validation_fraction: float, test_fraction: float, skipped: Counter
) -> Iterator[dict[str, Any]]:
    """The split's records, streamed: one conversation in memory at a time. What the split's
    conversations lose is counted in ``skipped``, and so are the other splits' conversations
    (every conversation is checked, whatever its split)."""
    fractions = (validation_fraction, test_fraction)
    for _, utterances, prompt in _read_conversations(path, skipped, split, fractions):
        yield {"utterances": list(utterances), "prompt": prompt}
    if skipped:
        logger.info(
            "%s/%s (%s): skipped %s",
            SOURCE,
            split,
            path,
            ", ".join(f"{n} {why}" for why, n in skipped.items()),
        )


def split_of(conv_id: str, validation_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """The split a conversation id belongs to (stable: a SHA-256 of the id)."""
    # "surrogatepass": an id is never text of the dataset, any string has its split
    u = int(hashlib.sha256(conv_id.encode("utf-8", "surrogatepass")).hexdigest()[:16], 16) / 2**64
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


def _read_conversations(
    path: Path, skipped: Counter, split: str, fractions: tuple[float, float]
) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """Stream the split's two-speaker conversations in ``dataset.json``: ``(id, utterances,
    prompt)``.

    The file is decoded one conversation at a time (it is 40 MB, and ``json.loads`` of all of
    it takes several times that in Python objects); an invalid file is read again whole to
    report the error with its line.
    """
    try:
        for conv_id, conv in _json_object_items(path):
            dropped: Counter = Counter()
            turns = _turns(conv, path, conv_id, dropped)
            prompt = _prompt(conv, path, conv_id)
            if split_of(conv_id, *fractions) != split:
                skipped["conversations of the other splits"] += 1
                continue
            skipped.update(dropped)
            if len(turns) < 2:  # after merging, fewer than 2 turns means a single speaker
                skipped["conversations with fewer than 2 turns (a single speaker)"] += 1
            elif len({sender for sender, _ in turns}) > 2:
                skipped["conversations with more than 2 speakers"] += 1
            else:
                yield conv_id, tuple(text for _, text in turns), prompt
    except DataFormatError:
        raise
    except (ValueError, RecursionError, UnicodeDecodeError) as err:
        # JSONDecodeError is a ValueError
        _check_whole_file(path, err)


def _prompt(conv: dict, path: Path, conv_id: str) -> str:
    prompt = conv.get("prompt")
    if prompt is None:
        return ""
    where = f"{path}, conversation {describe(conv_id)}"
    if not isinstance(prompt, str):
        raise DataFormatError(f"{where}: `prompt` must be a string, got {describe(prompt)}.")
    return check_text(prompt, where, "`prompt`")


def _check_whole_file(path: Path, err: BaseException) -> None:
    """Raise the :class:`DataFormatError` that describes what is wrong with the whole file
    (``err`` is what the streamed reader raised)."""
    text = read_text(path)
    data = parse_json(
        text,
        path,
        hint="Expected one JSON object (conversation id: conversation) and nothing after it.",
    )
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{path}: expected a JSON object mapping conversation ids to conversations, got "
            f"{type(data).__name__}."
        )
    # The whole file decodes, the streamed reader failed (nesting deep enough to hit the
    # recursion limit from inside the reader only).
    raise json_error(err, text, path) from None


_WHITESPACE = " \t\n\r"


def _json_object_items(path: Path, chunk_size: int = 1 << 20) -> Iterator[tuple[Any, Any]]:
    """Yield the ``(key, value)`` pairs of the JSON object in ``path``, reading it in chunks.

    Raises ``ValueError`` (``json.JSONDecodeError`` for invalid JSON) when the file is not one
    JSON object, anything but whitespace following it included (as ``json.loads`` does); the
    caller reports the details. A key that appears twice is a :class:`DataFormatError` naming
    both lines: ``json.loads`` would silently keep the last conversation only.
    """
    decoder = json.JSONDecoder()
    # newline="": "\r" is JSON whitespace, and lines are counted at "\n" as json.loads does
    with open(path, encoding="utf-8-sig", newline="") as f:
        buf, pos, eof = "", 0, False
        lines, mark = 0, 0  # the newlines in the file before buf[mark]

        def fill() -> None:
            nonlocal buf, pos, eof, lines, mark
            data = f.read(chunk_size)
            eof = not data
            lines += buf.count("\n", mark, pos)
            buf, pos, mark = buf[pos:] + data, 0, 0

        def line() -> int:
            """The line of ``buf[pos]``."""
            nonlocal lines, mark
            lines += buf.count("\n", mark, pos)
            mark = pos
            return lines + 1

        def skip_space() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WHITESPACE:
                    pos += 1
                if pos < len(buf) or eof:
                    return
                fill()

        def value() -> Any:
            nonlocal pos
            skip_space()
            while True:
                try:
                    out, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if eof:
                        raise
                    fill()  # the value may continue in the next chunk
                    continue
                if end == len(buf) and not eof:
                    fill()  # a number cut at the end of the chunk
                    continue
                pos = end
                return out

        def punctuation() -> str:
            nonlocal pos
            skip_space()
            if pos >= len(buf):
                raise ValueError(f"{path}: unexpected end of the JSON object")
            pos += 1
            return buf[pos - 1]

        def end() -> None:
            skip_space()
            if pos < len(buf):
                raise ValueError(f"{path}, line {line()}: more than one JSON value")

        fill()
        if punctuation() != "{":
            raise ValueError(f"{path}: not a JSON object")
        skip_space()
        if pos < len(buf) and buf[pos] == "}":
            pos += 1
            end()
            return
        seen: dict[str, int] = {}  # key -> its line
        while True:
            skip_space()
            at = line()
            key = value()
            if not isinstance(key, str):
                raise ValueError(f"{path}: a key that is not a string")
            if key in seen:
                raise DataFormatError(
                    f"{path}, line {at}: the conversation id {describe(key)} appears twice "
                    f"(first at line {seen[key]}); JSON readers keep only the last of the two "
                    "conversations. Give each conversation its own id."
                )
            seen[key] = at
            if punctuation() != ":":
                raise ValueError(f"{path}: expected ':' after a key")
            yield key, value()
            sep = punctuation()
            if sep == "}":
                end()
                return
            if sep != ",":
                raise ValueError(f"{path}: expected ',' or '}}' between items")


def _turns(conv: Any, path: Path, conv_id: str, skipped: Counter) -> list[tuple[str, str]]:
    """Merge the conversation's messages into ``(sender, text)`` turns."""
    where = f"{path}, conversation {describe(conv_id)}"
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
                    f"`sender`, got {describe(message)}."
                )
            text = check_text(message["text"], where, "a message's `text`").strip()
            if not text:
                skipped["empty messages"] += 1
                continue
            if turns and turns[-1][0] == message["sender"]:
                turns[-1][1].append(text)
            else:
                turns.append((message["sender"], [text]))
    return [(sender, " ".join(texts)) for sender, texts in turns]
