"""``prepare_dataset``: dialogues -> training features with one ``Dataset.map``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets
import numpy as np

from .render import encode_texts, fit_window, render_ids
from .tokens import SpeakerTokens, get_speaker_tokens

logger = logging.getLogger(__name__)

__all__ = ["REPLY_SPEAKERS", "DatasetStats", "dataset_statistics", "prepare_dataset"]

REPLY_SPEAKERS = ("sp2", "both")
FEATURE_COLUMNS = ["input_ids", "token_type_ids", "labels", "length", "source"]


def _main_process_first(desc: str):
    """``PartialState().main_process_first()`` when accelerate is set up, else a no-op."""
    try:
        from accelerate import PartialState

        return PartialState().main_process_first()
    except Exception:  # pragma: no cover - accelerate is a dependency, but stay robust
        import contextlib

        return contextlib.nullcontext()


def _render_batch(
    batch: dict[str, list],
    *,
    tokenizer,
    tokens: SpeakerTokens,
    max_turns: int,
    max_len: int,
    reply_speakers: str,
    with_persona: bool,
) -> dict[str, list]:
    dialogues = batch["utterances"]
    flat = [u for d in dialogues for u in d]
    encoded = encode_texts(tokenizer, flat)
    personas: list[list[int] | None] = [None] * len(dialogues)
    if with_persona and "persona" in batch:
        texts = [" ".join(p or []) for p in batch["persona"]]
        enc = encode_texts(tokenizer, texts)
        personas = [e or None for e in enc]
    sources = batch.get("source") or [""] * len(dialogues)
    out: dict[str, list] = {c: [] for c in FEATURE_COLUMNS}
    sp1, sp2 = tokens.sp1_token_id, tokens.sp2_token_id
    pos = 0
    for d, dialogue in enumerate(dialogues):
        utts = encoded[pos : pos + len(dialogue)]
        pos += len(dialogue)
        lengths = [len(u) for u in utts]
        persona = personas[d]
        first_reply, step = (1, 2) if reply_speakers == "sp2" else (1, 1)
        for h in range(first_reply, len(utts), step):
            start = fit_window(
                lengths,
                h,
                max_turns=max_turns,
                max_len=max_len,
                persona_length=len(persona or ()),
                reserve=1,
            )
            if start is None:
                continue
            # The replier is always <sp2>: utterances with the reply's parity are sp2's.
            speakers = [sp2 if (h - j) % 2 == 0 else sp1 for j in range(start, h + 1)]
            ex = render_ids(utts[start : h + 1], speakers, tokens, persona=persona)
            out["input_ids"].append(ex["input_ids"])
            out["token_type_ids"].append(ex["token_type_ids"])
            out["labels"].append(ex["labels"])
            out["length"].append(len(ex["input_ids"]))
            out["source"].append(sources[d])
    return out


@dataclass
class DatasetStats:
    """Counts for one data source: what went in, what came out, what was skipped."""

    source: str
    dialogues: int
    utterances: int
    examples: int
    skipped_replies: int
    mean_length: float
    p95_length: float
    max_length: int

    def summary(self) -> str:
        return (
            f"{self.source}: {self.dialogues} dialogues, {self.utterances} utterances -> "
            f"{self.examples} examples ({self.skipped_replies} replies skipped: too long for "
            f"max_len); tokens mean {self.mean_length:.1f} / p95 {self.p95_length:.0f} / "
            f"max {self.max_length}"
        )


def _candidate_replies(n_utterances: np.ndarray, reply_speakers: str) -> np.ndarray:
    return n_utterances // 2 if reply_speakers == "sp2" else np.maximum(n_utterances - 1, 0)


def dataset_statistics(
    dialogues: datasets.Dataset, features: datasets.Dataset, reply_speakers: str = "sp2"
) -> list[DatasetStats]:
    """Per-source statistics of a :func:`prepare_dataset` result (and an ``all`` row if several)."""
    dlg_sources = np.asarray(dialogues.data.column("source").to_pylist())
    n_utts = np.asarray(
        dialogues.data.column("utterances")
        .combine_chunks()
        .value_lengths()
        .to_numpy(zero_copy_only=False)
    )
    feat_sources = np.asarray(features.data.column("source").to_pylist())
    lengths = features.data.column("length").to_numpy()
    rows = []
    names = list(dict.fromkeys(dlg_sources.tolist()))
    groups = [(n, dlg_sources == n, feat_sources == n) for n in names]
    if len(names) > 1:
        groups.append(("all", np.ones_like(dlg_sources, bool), np.ones_like(feat_sources, bool)))
    for name, dmask, fmask in groups:
        lens = lengths[fmask]
        examples = int(fmask.sum())
        rows.append(
            DatasetStats(
                source=name,
                dialogues=int(dmask.sum()),
                utterances=int(n_utts[dmask].sum()),
                examples=examples,
                skipped_replies=int(_candidate_replies(n_utts[dmask], reply_speakers).sum())
                - examples,
                mean_length=float(lens.mean()) if examples else 0.0,
                p95_length=float(np.percentile(lens, 95)) if examples else 0.0,
                max_length=int(lens.max()) if examples else 0,
            )
        )
    return rows


def prepare_dataset(
    dialogues: datasets.Dataset,
    tokenizer,
    *,
    max_turns: int = 5,
    max_len: int = 1024,
    reply_speakers: str = "sp2",
    with_persona: bool = False,
    num_proc: int | None = None,
    batch_size: int = 256,
    load_from_cache_file: bool | None = None,
    desc: str | None = None,
    cache_file_name: str | None = None,
) -> datasets.Dataset:
    """Turn dialogues into training features with one batched, cached ``Dataset.map``.

    One example per reply turn: the reply plus up to ``max_turns - 1`` preceding utterances
    (fewer when needed to fit ``max_len``; a reply that cannot fit even alone is skipped and
    counted), rendered by :func:`gpt2chat.render.render_ids`.

    Args:
        dialogues: rows with ``utterances`` (and ``source``, optional ``persona``), as returned
            by :func:`gpt2chat.load_dialogues`.
        tokenizer: a tokenizer extended by :func:`gpt2chat.add_speaker_tokens`.
        max_turns: utterances per example, the reply included.
        max_len: maximum tokens per example (at most the model's context size).
        reply_speakers: ``"sp2"``: only the second speaker's turns are replies (the original
            recipe); ``"both"``: every turn after the first is a reply, roles swapped so the
            replier is always ``<sp2>``.
        with_persona: render the dialogue's ``persona`` sentences after ``<bos>``.
        num_proc: processes for ``Dataset.map``.
        batch_size: dialogues per map batch.
        load_from_cache_file: reuse the datasets cache (default: the datasets library's setting).
        desc: progress-bar label.
        cache_file_name: write the features to this Arrow file, and reuse the file when it
            exists (unless ``load_from_cache_file=False``). The main process renders first, so
            processes sharing a filesystem render once; the caller keys the name to the inputs.

    Returns:
        A ``datasets.Dataset`` with ``input_ids``, ``token_type_ids``, ``labels``, ``length``
        and ``source``.
    """
    if not isinstance(dialogues, datasets.Dataset):
        raise ValueError(
            f"`dialogues` must be a datasets.Dataset (from gpt2chat.load_dialogues), got "
            f"{type(dialogues).__name__}."
        )
    if "utterances" not in dialogues.column_names:
        raise ValueError(
            f"`dialogues` needs an 'utterances' column (list of strings per dialogue); it has "
            f"{dialogues.column_names}."
        )
    if not isinstance(max_turns, int) or max_turns < 1:
        raise ValueError(f"`max_turns` must be an integer >= 1, got {max_turns!r}.")
    if not isinstance(max_len, int) or max_len < 4:
        raise ValueError(f"`max_len` must be an integer >= 4, got {max_len!r}.")
    if reply_speakers not in REPLY_SPEAKERS:
        raise ValueError(
            f"`reply_speakers` must be one of {REPLY_SPEAKERS}, got {reply_speakers!r}."
        )
    if with_persona and "persona" not in dialogues.column_names:
        logger.warning("with_persona=True but the dialogues have no 'persona' column; ignored.")
    tokens = get_speaker_tokens(tokenizer)
    if "source" not in dialogues.column_names:
        dialogues = dialogues.add_column("source", ["custom"] * len(dialogues))

    with _main_process_first("prepare_dataset"):
        features = dialogues.map(
            _render_batch,
            batched=True,
            batch_size=batch_size,
            remove_columns=dialogues.column_names,
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            cache_file_name=cache_file_name,
            fn_kwargs={
                "tokenizer": tokenizer,
                "tokens": tokens,
                "max_turns": max_turns,
                "max_len": max_len,
                "reply_speakers": reply_speakers,
                "with_persona": with_persona and "persona" in dialogues.column_names,
            },
            features=datasets.Features(
                {
                    "input_ids": datasets.Sequence(datasets.Value("int32")),
                    "token_type_ids": datasets.Sequence(datasets.Value("int32")),
                    "labels": datasets.Sequence(datasets.Value("int32")),
                    "length": datasets.Value("int32"),
                    "source": datasets.Value("string"),
                }
            ),
            desc=desc or "Rendering dialogues into training examples",
        )
    for row in dataset_statistics(dialogues, features, reply_speakers):
        if row.skipped_replies:
            logger.warning(row.summary())
        else:
            logger.info(row.summary())
    return features
