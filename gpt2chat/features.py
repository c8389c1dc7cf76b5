"""``prepare_dataset``: dialogues -> training features with one ``Dataset.map``."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.fingerprint import Hasher

from .render import encode_texts, render_batch
from .tokens import SpeakerTokens, get_speaker_tokens

logger = logging.getLogger(__name__)

__all__ = ["REPLY_SPEAKERS", "DatasetStats", "dataset_statistics", "prepare_dataset"]

REPLY_SPEAKERS = ("sp2", "both")
FEATURE_COLUMNS = ["input_ids", "token_type_ids", "labels", "length", "source"]
#: The columns :func:`prepare_dataset` writes.
FEATURES = datasets.Features(
    {
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "token_type_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Sequence(datasets.Value("int32")),
        "length": datasets.Value("int32"),
        "source": datasets.Value("string"),
    }
)


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """A hash of the code that renders the features: this module, render.py (the format) and
    tokens.py (what render.py imports)."""
    digest = hashlib.sha256()
    for name in ("features.py", "render.py", "tokens.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:16]


def _main_process_first(desc: str):
    """``PartialState().main_process_first()`` when accelerate is set up, else a no-op.

    accelerate is only imported when it can matter (importing it costs more than a cache hit):
    when it is already imported (an ``Accelerator`` or ``Trainer`` is set up) or the launcher
    started several processes (``WORLD_SIZE``).
    """
    if "accelerate" not in sys.modules and int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        import contextlib

        return contextlib.nullcontext()
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
) -> pa.Table:
    """One map batch: tokenise every utterance at once, lay out all examples with
    :func:`gpt2chat.render.render_batch` (the renderer over a batch, with numpy) and return them
    as Arrow list arrays, so nothing per token goes through Python objects.
    """
    dialogues = batch["utterances"]
    sizes = np.fromiter(map(len, dialogues), dtype=np.int64, count=len(dialogues))
    encoded = encode_texts(tokenizer, [u for d in dialogues for u in d])
    personas = None
    if with_persona and "persona" in batch:
        personas = encode_texts(tokenizer, [" ".join(p or []) for p in batch["persona"]])
    owner, columns = render_batch(
        encoded,
        sizes,
        tokens,
        personas=personas,
        max_turns=max_turns,
        max_len=max_len,
        reply_speakers=reply_speakers,
    )
    sources = batch.get("source") or [""] * len(dialogues)
    arrays = [
        *(_list_array(columns["offsets"], columns[c]) for c in FEATURE_COLUMNS[:3]),
        pa.array(np.diff(columns["offsets"]).astype(np.int32)),
        pa.array(sources, pa.string()).take(pa.array(owner)),
    ]
    return pa.Table.from_arrays(arrays, schema=FEATURES.arrow_schema)


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


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


def _codes(column: pa.ChunkedArray, names: list[str]) -> np.ndarray:
    """Index of each value of ``column`` in ``names`` (-1 when absent)."""
    codes = pc.index_in(column, value_set=pa.array(names, pa.string()))
    return pc.fill_null(codes, -1).to_numpy().astype(np.int64)


def dataset_statistics(
    dialogues: datasets.Dataset, features: datasets.Dataset, reply_speakers: str = "sp2"
) -> list[DatasetStats]:
    """Per-source statistics of a :func:`prepare_dataset` result (and an ``all`` row if several).

    Computed on the Arrow columns (no Python object per row), so it costs milliseconds even on a
    cached result of millions of examples.
    """
    dlg = dialogues.with_format("arrow")  # the arrow views honour an indices mapping (select)
    dlg_source_col = dlg["source"]
    names = pc.unique(dlg_source_col).to_pylist()  # in order of first appearance
    dlg_sources = _codes(dlg_source_col, names)
    n_utts = pc.list_value_length(dlg["utterances"]).to_numpy().astype(np.int64)
    feats = features.with_format("arrow")
    feat_sources = _codes(feats["source"], names)
    lengths = feats["length"].to_numpy()
    rows = []
    groups = [(n, dlg_sources == i, feat_sources == i) for i, n in enumerate(names)]
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
    counted), rendered by :func:`gpt2chat.render.render_batch` (:func:`gpt2chat.render.render_ids`
    over a batch).

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

    Raises:
        EmptyDatasetError: ``dialogues`` has no row (a ``ValueError``).
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
    if len(dialogues) == 0:
        from .data.base import EmptyDatasetError

        raise EmptyDatasetError(
            "`dialogues` is empty: there is no dialogue to render (load_dialogues names the "
            "files and what was skipped when data has none; with train_frac, one part of the "
            "re-split may be empty: change the fraction or add dialogues)."
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
    fn_kwargs = {
        "tokenizer": tokenizer,
        "tokens": tokens,
        "max_turns": max_turns,
        "max_len": max_len,
        "reply_speakers": reply_speakers,
        "with_persona": with_persona and "persona" in dialogues.column_names,
    }
    # The datasets library fingerprints `_render_batch` by its name only, so a change of this
    # module or of the renderer would reuse stale cache files: the code is part of the key.
    fingerprint = Hasher.hash(
        [dialogues._fingerprint, "gpt2chat.prepare_dataset", _code_hash(), fn_kwargs, FEATURES]
    )

    with _main_process_first("prepare_dataset"):
        features = dialogues.map(
            _render_batch,
            batched=True,
            batch_size=batch_size,
            remove_columns=dialogues.column_names,
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            cache_file_name=cache_file_name,
            fn_kwargs=fn_kwargs,
            features=FEATURES,
            new_fingerprint=fingerprint,
            desc=desc or "Rendering dialogues into training examples",
        )
    for row in dataset_statistics(dialogues, features, reply_speakers):
        if row.skipped_replies:
            logger.warning(row.summary())
        else:
            logger.info(row.summary())
    return features
