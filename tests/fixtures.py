"""What the test suite makes for itself, so that it runs on a fresh clone (no ``../shared``).

- :func:`tokenizer_dir`: a byte-level BPE tokenizer in GPT-2's format (``vocab.json``,
  ``merges.txt``, ``<|endoftext|>`` as its last id, loaded by ``GPT2TokenizerFast``), trained
  with the ``tokenizers`` library on the conversations of the installed ``chitchat-dataset``
  package (MIT) plus a few sentences written here. 4,096 ids: tiny models on top of it are small.
- :func:`corpus_dir`: a root data folder written from the same conversations, in
  the release layouts the loaders read: ``dailydialog/<split>/dialogues_<split>.txt``
  (utterances tokenised and ended by ``__eou__``), ``empathetic_dialogues/{valid,test}.csv``
  (ParlAI's columns, commas written ``_comma_``) and
  ``persona_chat/valid_self_original_no_cands.txt`` (ParlAI's numbered text format), for the
  tests whose subject is a mechanism (training, resume, chat, the CLI, the benchmarks' smoke
  runs) rather than a real corpus.
- :func:`standin_shared_dir`: both laid out as the shared folder is (``data/``,
  ``assets/gpt2-tokenizer/``), for the code that reads ``$GPT2CHAT_SHARED`` (the benchmarks).

Both are built once per machine and fixture version, into ``$GPT2CHAT_TEST_FIXTURES`` (the test
session points it at a temporary folder; subprocesses inherit it) or else a folder under the
system's temporary directory; a folder appears complete or not at all (built aside, then renamed),
so parallel processes never read half a fixture. The real GPT-2 vocabulary and the real corpora
stay in ``../shared`` and only the tests about them use it.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

#: Change it when what a builder writes changes: the old cached folders are then ignored.
FIXTURE_VERSION = "1"
TOKENIZER_VOCAB_SIZE = 4096
#: Dialogues per split of the DailyDialog-format corpus.
CORPUS_SPLITS = {"train": 600, "validation": 300, "test": 300}

_EXTRA_TEXT = """\
Hello, how are you today? I'm fine, thanks. And you?
Say, Jim, how about going for a few beers after dinner? That's a good idea.
I failed my exam today. Oh no, what happened? I didn't study enough.
What do you do for a living? I'm a teacher. I teach math at a high school.
Can you tell me the way to the station? Go straight and turn left at the bank.
The weather is lovely. Shall we go for a walk in the park? Sure, let's go!
"""


def fixtures_root() -> Path:
    root = os.environ.get("GPT2CHAT_TEST_FIXTURES")
    if root:
        return Path(root)
    user = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"gpt2chat-test-fixtures-{user}"


def _built(name: str, build: Callable[[Path], None]) -> Path:
    """``fixtures_root()/name-vN``, built by ``build(folder)`` unless it is there already."""
    target = fixtures_root() / f"{name}-v{FIXTURE_VERSION}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}-{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        build(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: use its copy
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@functools.cache
def chitchat_conversations() -> tuple[tuple[str, ...], ...]:
    """The installed Chit-Chat corpus as two-speaker conversations (runs of one sender merged),
    in conversation-id order."""
    import chitchat_dataset

    path = Path(chitchat_dataset.__file__).with_name("dataset.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    conversations = []
    for conv_id in sorted(raw):
        turns, senders = [], set()
        for run in raw[conv_id]["messages"]:
            texts = [m["text"].strip() for m in run if m["text"].strip()]
            if not texts:
                continue
            senders.update(m["sender"] for m in run)
            turns.append(" ".join(" ".join(texts).split()))
        if len(turns) >= 2 and len(senders) == 2:
            conversations.append(tuple(turns))
    return tuple(conversations)


def _train_tokenizer(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` only, the layout of GPT-2's own release."""
    from tokenizers import ByteLevelBPETokenizer

    texts = [_EXTRA_TEXT] + [" ".join(c) for c in chitchat_conversations()[:3000]]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        texts, vocab_size=TOKENIZER_VOCAB_SIZE - 1, min_frequency=2, show_progress=False
    )
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab["<|endoftext|>"] = len(vocab)  # GPT-2's one special token, its last id
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")


def tokenizer_dir() -> Path:
    """The folder of the project-made GPT-2-format tokenizer (see the module docstring)."""
    return _built("tokenizer", _train_tokenizer)


def load_tokenizer():
    """A fresh ``GPT2TokenizerFast`` of :func:`tokenizer_dir` (not extended)."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(tokenizer_dir()))


def daily_dialog_line(utterances) -> str:
    """One dialogue as a line of DailyDialog's files: tokenised text, each utterance + ``__eou__``."""
    spaced = [re.sub(r"\s*([,.!?;:])\s*", r" \1 ", u).split() for u in utterances]
    return "".join(" ".join(words) + " __eou__" for words in spaced if words)


_PERSONAS = (
    ("i like to ski.", "i have two dogs.", "my favorite food is pizza."),
    ("i am a teacher.", "i love reading novels.", "i live near the sea."),
    ("i play the guitar.", "i work night shifts.", "i hate the cold."),
)


def _write_corpus(folder: Path) -> None:
    conversations = chitchat_conversations()
    start = 0
    for split, count in CORPUS_SPLITS.items():
        lines = [daily_dialog_line(c[:12]) for c in conversations[start : start + count]]
        start += count
        out = folder / "dailydialog" / split
        out.mkdir(parents=True)
        (out / f"dialogues_{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ed = folder / "empathetic_dialogues"
    ed.mkdir()
    for split in ("valid", "test"):
        with open(ed / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(
                [
                    "conv_id",
                    "utterance_idx",
                    "context",
                    "prompt",
                    "speaker_idx",
                    "utterance",
                    "selfeval",
                    "tags",
                ]
            )
            for n, conv in enumerate(conversations[start : start + 100]):
                conv = [u.replace(",", "_comma_").replace('"', "") for u in conv[:8]]
                for i, utterance in enumerate(conv):
                    row = [f"hit:{n}_conv:{2 * n}", i + 1, "content", conv[0], 1 + i % 2]
                    writer.writerow([*row, utterance, "", ""])
            start += 100
    pc = folder / "persona_chat"
    pc.mkdir()
    lines = []
    for n, conv in enumerate(conversations[start : start + 100]):
        persona = [f"your persona: {p}" for p in _PERSONAS[n % len(_PERSONAS)]]
        turns = [f"{a}\t{b}" for a, b in zip(conv[0:10:2], conv[1:10:2])]
        lines += [f"{i} {text}" for i, text in enumerate(persona + turns, start=1)]
    (pc / "valid_self_original_no_cands.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def corpus_dir() -> Path:
    """The suite's root data folder (see the module docstring)."""
    return _built("corpus", _write_corpus)


def _write_standin_shared(folder: Path) -> None:
    shutil.copytree(corpus_dir(), folder / "data")
    shutil.copytree(tokenizer_dir(), folder / "assets" / "gpt2-tokenizer")


def standin_shared_dir() -> Path:
    """The suite's tokenizer and corpus laid out as the shared folder (see the module docstring)."""
    return _built("standin-shared", _write_standin_shared)
