"""The seed project's data path, re-written from its description, as the benchmarks' baseline.

The seed (a GPT-2 dialogue fine-tuning script) prepared its data in two steps:

1. a data script, run once: read every dialogue into Python lists, and for each utterance call
   ``tokenizer.tokenize``, clean the token strings in a Python loop (the corpus is tokenised
   text: ``"Hello , how are you ?"``; the loop glues punctuation and contraction suffixes back
   onto the previous token by dropping their ``Ġ`` space marker, moves the marker past end
   marks, and pairs up quotes), then ``convert_tokens_to_ids``; the id lists are dumped to a
   JSON file;
2. at every training start: load that JSON file and build, in a Python loop, one example per
   second-speaker (``<sp2>``) turn: the longest window of at most ``max_turns`` utterances
   ending at the reply whose ``<bos> ... <eos>`` sequence fits in ``max_len``, with
   ``token_type_ids`` and ``labels`` lists.

A first run is both steps; a repeated run (every later training start) is step 2 only. This
module is the benchmarks' reference, not part of the library: it follows the seed's method, not
its code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

__all__ = [
    "SeedExamples",
    "SeedTokenIds",
    "build_examples",
    "clean_tokens",
    "first_run",
    "load_ids",
    "read_daily_dialog",
    "repeated_run",
    "save_ids",
    "tokenize_dialogues",
]

#: GPT-2's byte-level marker of a leading space.
SPACE = "\u0120"
END_MARKS = frozenset({".", ",", "?", "!", "..."})
SUFFIXES = frozenset({"s", "d", "t", "m", "re", "ll", "ve", "S", "D", "T", "M", "Re", "Ll", "Ve"})
QUOTES = frozenset({'"', "'", "\u2019"})
IGNORE_INDEX = -100


@dataclass(frozen=True)
class SeedTokenIds:
    """The special-token ids the seed's examples use."""

    bos_id: int
    eos_id: int
    sp1_id: int
    sp2_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SeedTokenIds:
        """Ids of a tokenizer extended by :func:`gpt2chat.add_speaker_tokens` (same tokens)."""
        from gpt2chat.tokens import get_speaker_tokens

        t = get_speaker_tokens(tokenizer)
        return cls(t.bos_token_id, t.eos_token_id, t.sp1_token_id, t.sp2_token_id)


@dataclass
class SeedExamples:
    """The seed's in-memory training set: three parallel lists of Python lists."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list[list[int]]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_tokens(self) -> int:
        return sum(len(x) for x in self.input_ids)


def read_daily_dialog(path: str | Path, limit: int | None = None) -> list[list[str]]:
    """DailyDialog's ``dialogues_<split>.txt`` as Python lists of utterance strings."""
    dialogues = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            utterances = [u.strip() for u in line.split("__eou__")]
            utterances = [u for u in utterances if u]
            if utterances:
                dialogues.append(utterances)
                if limit is not None and len(dialogues) >= limit:
                    break
    return dialogues


def clean_tokens(tokens: list[str]) -> list[str]:
    """The per-token post-processing pass on ``tokenizer.tokenize`` output, in pure Python.

    Punctuation and contraction suffixes written as separate words (``"Ġ,"``, ``"Ġs"``) lose
    their space marker, a token after an end mark gets one, and of each pair of spaced quotes the
    opening one keeps its marker while the closing one loses it.
    """
    out = list(tokens)
    n = len(out)
    for i in range(n):
        token = out[i]
        if token.startswith(SPACE):
            bare = token[1:]
            if bare in END_MARKS or bare in SUFFIXES:
                out[i] = bare
        if out[i] in END_MARKS and i + 1 < n and not out[i + 1].startswith(SPACE):
            out[i + 1] = SPACE + out[i + 1]
    open_quote = False
    for i in range(n):
        token = out[i]
        if not (token.startswith(SPACE) and token[1:] in QUOTES):
            continue
        if token[1:] == "'" and i + 1 < n and out[i + 1] in SUFFIXES:
            out[i] = token[1:]  # an apostrophe: "I ' m"
            continue
        if open_quote:
            out[i] = token[1:]
        elif i + 1 < n and out[i + 1].startswith(SPACE):
            out[i + 1] = out[i + 1][1:]
        open_quote = not open_quote
    return [t for t in out if t != SPACE]


def tokenize_dialogues(tokenizer, dialogues: Iterable[Sequence[str]]) -> list[list[list[int]]]:
    """Per utterance: ``tokenize`` + :func:`clean_tokens` + ``convert_tokens_to_ids``."""
    ids = []
    for dialogue in dialogues:
        dialogue_ids = []
        for utterance in dialogue:
            tokens = clean_tokens(tokenizer.tokenize(utterance))
            dialogue_ids.append(tokenizer.convert_tokens_to_ids(tokens))
        ids.append(dialogue_ids)
    return ids


def save_ids(path: str | Path, ids: list[list[list[int]]]) -> None:
    """Dump the id lists to a JSON file (what the seed's data script leaves on disk)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(ids, f)


def load_ids(path: str | Path) -> list[list[list[int]]]:
    """Load the id lists saved by :func:`save_ids`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def build_examples(
    dialogues_ids: Iterable[Sequence[Sequence[int]]],
    ids: SeedTokenIds,
    *,
    max_turns: int = 5,
    max_len: int = 1024,
) -> SeedExamples:
    """One example per ``<sp2>`` turn, built in a Python loop as the seed's Dataset does."""
    out = SeedExamples([], [], [])
    for dialogue in dialogues_ids:
        hists = [
            [ids.sp1_id if u % 2 == 0 else ids.sp2_id, *utterance]
            for u, utterance in enumerate(dialogue)
        ]
        for h in range(len(hists)):
            if hists[h][0] != ids.sp2_id:
                continue
            for s in range(h):
                contexts = hists[s : h + 1]
                if len(contexts) > max_turns:
                    contexts = contexts[len(contexts) - max_turns :]
                if len(contexts) < 2:
                    break
                input_ids = [ids.bos_id, *chain.from_iterable(contexts), ids.eos_id]
                if len(input_ids) > max_len:
                    continue
                first, second = contexts[0][0], contexts[1][0]
                types = [[first if c % 2 == 0 else second] * len(x) for c, x in enumerate(contexts)]
                token_type_ids = [first, *chain.from_iterable(types), ids.sp2_id]
                last = len(contexts) - 1
                labels = [
                    [IGNORE_INDEX] * len(x) if c < last else [IGNORE_INDEX, *x[1:]]
                    for c, x in enumerate(contexts)
                ]
                labels = [IGNORE_INDEX, *chain.from_iterable(labels), ids.eos_id]
                out.input_ids.append(input_ids)
                out.token_type_ids.append(token_type_ids)
                out.labels.append(labels)
                break
    return out


def first_run(
    dialogues: list[list[str]],
    tokenizer,
    ids_file: str | Path,
    *,
    max_turns: int = 5,
    max_len: int = 1024,
) -> SeedExamples:
    """The seed's first run: tokenise and dump the ids, then a training start (:func:`repeated_run`)."""
    save_ids(ids_file, tokenize_dialogues(tokenizer, dialogues))
    return repeated_run(
        ids_file, SeedTokenIds.from_tokenizer(tokenizer), max_turns=max_turns, max_len=max_len
    )


def repeated_run(
    ids_file: str | Path, ids: SeedTokenIds, *, max_turns: int = 5, max_len: int = 1024
) -> SeedExamples:
    """What the seed repeats at every training start: load the JSON ids, build the examples."""
    return build_examples(load_ids(ids_file), ids, max_turns=max_turns, max_len=max_len)
