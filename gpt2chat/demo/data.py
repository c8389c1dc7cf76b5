"""The demo's data stage: chitchat (+ DailyDialog) rendered as training features, filtered for
replies that react to what was said, some examples without the conversation (the unconditional
side of context guidance), and the held-out validation slice."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import datasets

    from .arguments import DemoArguments

logger = logging.getLogger(__name__)


def load_data(args: DemoArguments, tokenizer) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """Training features (reply-length filtered) and the held-out slice; a one-line summary."""
    from ..data import load_dialogues
    from ..features import prepare_dataset
    from ..tokens import get_speaker_tokens

    names: list[str] = ["chitchat"]
    data_dirs: list[str | None] = [None]
    if args.data_dir:
        dd = Path(args.data_dir)
        names.append("daily_dialog")
        data_dirs.append(str(dd / "dailydialog") if (dd / "dailydialog").is_dir() else str(dd))
    kwargs = {
        "max_turns": args.max_turns,
        "max_len": args.max_len,
        "reply_speakers": "both",
    }
    splits = {}
    for split in ("train", "validation"):
        dialogues = load_dialogues(names, split, data_dir=data_dirs if len(names) > 1 else None)
        splits[split] = prepare_dataset(
            dialogues, tokenizer, desc=f"Rendering the demo's {split} examples", **kwargs
        )
    train, skipped = _filter_replies(
        splits["train"],
        tokenizer,
        args.min_reply_tokens,
        args.max_reply_tokens,
        args.skip_replies,
        reactive=args.reactive_replies,
    )
    train = train.shuffle(seed=args.seed)
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    unconditional = round(args.unconditional_fraction * len(train))
    if unconditional:  # the data is shuffled: its first rows are a random subset
        train = train.map(
            _drop_conversation,
            with_indices=True,
            desc="Leaving the conversation out of some examples",
            fn_kwargs={"count": unconditional, "tokens": get_speaker_tokens(tokenizer)},
        )
    held_out = splits["validation"].shuffle(seed=0)
    held_out = held_out.select(range(min(args.eval_samples, len(held_out))))
    summary = (
        f"data: {' + '.join(names)}, {len(train):,} training examples "
        f"({sum(skipped.values()):,} skipped: {skipped['reply length']:,} reply outside "
        f"{args.min_reply_tokens}-{args.max_reply_tokens} tokens, "
        f"{skipped['--skip_replies']:,} matching --skip_replies, "
        f"{skipped['not reactive']:,} not reacting to a statement), "
        f"{len(held_out)} held-out validation examples"
        + (f"; {unconditional:,} of them without the conversation" if unconditional else "")
    )
    return train, held_out, summary


#: A reply that reacts to what was said: an interjection, an evaluation or a question word.
REACTION_PATTERN = (
    r"^\W*(oh+|ooh+|wow|aw+|congrat\w*|sorry|i'?m (so |really )?sorry|that'?s|that (sucks|is)|"
    r"nice|no way|really|dang|ugh|yay|omg|no+|good for you|awesome|cool|whoa|shoot|bummer|yikes|"
    r"what|how|why|when|where|which|who)\b"
)
#: Replies that fit any statement (the "dull responses" of the dialogue literature): not a reaction.
GENERIC_REPLY_PATTERN = (
    r"^\W*((what|how) about (you|u)|how are (you|u)( doing)?|how('?s| is) it going|and (you|u)|"
    r"(you|u)|same|me too|yeah|yes|no|ok(ay)?|cool|nice|wow|oh|really|lol)\W*$"
)
_SKIP_REASONS = ("reply length", "--skip_replies", "not reactive")


def _skip_codes(
    batch, tokenizer, sp1_id, low, high, regex, reaction, generic
) -> dict[str, list[int]]:
    """Per example: 0 keep, else 1 + the index of the first reason in ``_SKIP_REASONS``."""
    replies = [[t for t in labels if t != -100] for labels in batch["labels"]]
    texts = tokenizer.batch_decode(replies, skip_special_tokens=True)
    contexts = []
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        first = next((i for i, t in enumerate(labels) if t != -100), len(labels))
        start = next((i for i in range(first - 1, -1, -1) if ids[i] == sp1_id), None)
        # the message replied to: from its <sp1> to the reply's <sp2> (none when cut by max_len)
        contexts.append(ids[start + 1 : first - 1] if start is not None else [])
    said = tokenizer.batch_decode(contexts, skip_special_tokens=True)
    codes = []
    for reply, text, message in zip(replies, texts, said):
        text, message = text.strip(), message.strip()
        if not low + 1 <= len(reply) <= high + 1:
            codes.append(1)
        elif regex is not None and regex.search(text):
            codes.append(2)
        elif (
            reaction is not None
            and message
            and not message.endswith("?")
            and (generic.search(text) or ("?" not in text and not reaction.search(text)))
        ):
            codes.append(3)
        else:
            codes.append(0)
    return {"skip": codes}


def _drop_conversation(example: dict, index: int, count: int, tokens) -> dict:
    """The first ``count`` examples become ``<bos> <sp2> reply <eos>`` (rendered by the same
    :func:`gpt2chat.render.render_ids`); the others are returned as they are."""
    if index >= count:
        return example
    from ..render import render_ids

    labels = example["labels"]
    first = next(i for i, t in enumerate(labels) if t != -100)
    reply = [t for t in labels[first:] if t != -100][:-1]  # without its <eos>
    rendered = render_ids([reply], [tokens.sp2_token_id], tokens)
    assert rendered["labels"][2:] == labels[first:], "the reply is the end of the example"
    return {**example, **rendered, "length": len(rendered["input_ids"])}


def _filter_replies(
    features: datasets.Dataset,
    tokenizer,
    low: int,
    high: int,
    pattern: str | None,
    reactive: bool = False,
) -> tuple[datasets.Dataset, dict[str, int]]:
    """Keep examples whose supervised reply has ``low..high`` tokens (its eos not counted), does
    not match ``pattern`` and, with ``reactive``, reacts to a statement (:data:`REACTION_PATTERN`
    or a question, but not a reply that fits any statement, :data:`GENERIC_REPLY_PATTERN`;
    replies to questions are kept). Returns the kept examples and how many were
    skipped for each reason (each example counted once, for its first reason); logs them."""
    from ..tokens import get_speaker_tokens

    coded = features.map(
        _skip_codes,
        batched=True,
        desc="Filtering the training replies",
        fn_kwargs={
            "tokenizer": tokenizer,
            "sp1_id": get_speaker_tokens(tokenizer).sp1_token_id,
            "low": low,
            "high": high,
            "regex": re.compile(pattern, re.IGNORECASE) if pattern else None,
            "reaction": re.compile(REACTION_PATTERN, re.IGNORECASE) if reactive else None,
            "generic": re.compile(GENERIC_REPLY_PATTERN, re.IGNORECASE),
        },
    )
    codes = np.asarray(coded.with_format("numpy")["skip"])
    counts = {reason: int((codes == i + 1).sum()) for i, reason in enumerate(_SKIP_REASONS)}
    kept = features.select(np.flatnonzero(codes == 0))
    logger.info(
        "Skipped %d of %d training examples: %s.",
        len(features) - len(kept),
        len(features),
        ", ".join(f"{n} {reason}" for reason, n in counts.items() if n) or "none",
    )
    return kept, counts
