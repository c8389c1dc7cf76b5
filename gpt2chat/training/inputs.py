"""What a model is fed for training or evaluation: the speaker tokens added to the model and
its tokenizer, the render settings fitted to the model's context, and the features (raw
dialogues rendered with :func:`gpt2chat.prepare_dataset`, or prepared features checked).

Used by :class:`gpt2chat.DialogueTrainer` and :func:`gpt2chat.evaluate_model`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import datasets

from ..extend import add_speaker_tokens
from ..features import prepare_dataset
from ..loading import context_size, unwrap_peft
from ..tokens import CONFIG_KEY, SpeakerTokens, get_speaker_tokens
from .arguments import DataArguments, ModelArguments

logger = logging.getLogger(__name__)

__all__ = [
    "dataset_sources",
    "extend_for_dialogue",
    "features_cache_file",
    "fit_context",
    "is_raw",
    "prepared_features",
]


def is_raw(ds) -> bool:
    """Whether ``ds`` holds dialogues to render (not prepared features)."""
    return (
        isinstance(ds, datasets.Dataset)
        and "utterances" in ds.column_names
        and "input_ids" not in ds.column_names
    )


def extend_for_dialogue(
    model, tokenizer, model_args: ModelArguments | None = None
) -> SpeakerTokens:
    """Add the speaker tokens of ``model_args`` to ``tokenizer`` and ``model`` (in place) and
    return them. A tokenizer extended before (a gpt2chat checkpoint, ``gpt2chat prepare``)
    keeps its tokens; a PEFT model's tokenizer must already have them."""
    model_args = model_args if model_args is not None else ModelArguments()
    rows = unwrap_peft(model).get_input_embeddings().weight.shape[0]
    if hasattr(model, "peft_config"):  # an adapter model: its tokens were added before
        tokens = get_speaker_tokens(tokenizer)
        if len(tokenizer) > rows:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the PEFT model's embeddings "
                f"{rows} rows: load the tokenizer saved with the adapter."
            )
        return tokens
    wanted = {k: getattr(model_args, k) for k in ("bos_token", "sp1_token", "sp2_token")}
    recorded = tokenizer.init_kwargs.get(CONFIG_KEY)
    if recorded:
        # An extended tokenizer (a gpt2chat checkpoint, `gpt2chat prepare`): its tokens win
        # over the defaults; explicitly different ones are an error (add_speaker_tokens).
        defaults = {k: getattr(ModelArguments, k) for k in wanted}
        wanted = {k: recorded[k] if wanted[k] == defaults[k] else wanted[k] for k in wanted}
        if len(tokenizer) > rows:
            # With a base model: grow the embeddings from the mean of the existing rows.
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return add_speaker_tokens(tokenizer, model, **wanted)


def fit_context(model, data_args: DataArguments) -> DataArguments:
    """The render settings for raw dialogues: ``max_len`` at most the model's context. The
    default (1024) shrinks to a smaller context; an explicit larger value is an error.
    Prepared features are checked by their lengths instead (:func:`prepared_features`)."""
    ctx = context_size(model)
    if ctx is None or data_args.max_len <= ctx:
        return data_args
    default = DataArguments.__dataclass_fields__["max_len"].default
    if data_args.max_len == default:
        logger.info("max_len: the model's context, %d positions (default %d)", ctx, default)
        return dataclasses.replace(data_args, max_len=ctx)
    raise ValueError(
        f"--max_len {data_args.max_len} is larger than the model's context ({ctx} "
        f"positions): pass --max_len {ctx} or less."
    )


def prepared_features(
    ds,
    label: str,
    tokenizer,
    data_args: DataArguments,
    *,
    max_samples: int | None = None,
    ctx: int | None = None,
    cache_file_name: str | None = None,
) -> datasets.Dataset | None:
    """The features of ``ds``: raw dialogues (``utterances``) rendered with ``data_args``, or
    prepared features (``input_ids`` and ``labels``) as they are; the first ``max_samples``;
    checked against the model's context ``ctx``. ``label`` names the dataset in errors."""
    if ds is None:
        return None
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(
            f"The {label} dataset must be a datasets.Dataset, got {type(ds).__name__}."
        )
    if "input_ids" in ds.column_names:
        if "labels" not in ds.column_names:
            raise ValueError(
                f"The {label} dataset has input_ids but no labels: render it with "
                "gpt2chat.prepare_dataset (or pass raw dialogues with 'utterances')."
            )
        features = ds
    elif "utterances" in ds.column_names:
        features = prepare_dataset(
            ds,
            tokenizer,
            **data_args.render_kwargs,
            num_proc=data_args.preprocessing_num_workers,
            desc=f"Rendering {label} examples",
            cache_file_name=cache_file_name,
        )
    else:
        raise ValueError(
            f"The {label} dataset has neither 'utterances' (raw dialogues) nor 'input_ids' "
            f"(prepared features); its columns are {ds.column_names}."
        )
    if max_samples is not None and len(features) > max_samples:
        features = features.select(range(max_samples))
    if ctx is not None and "length" in features.column_names and len(features):
        longest = max(features.data.column("length").to_pylist())
        if longest > ctx:
            raise ValueError(
                f"The {label} dataset has examples of {longest} tokens, more than the model's "
                f"context ({ctx} positions): prepare it again with --max_len {ctx} or less."
            )
    return features


def _content_hash(ds: datasets.Dataset) -> str:
    """A hash of a dataset's rows (its fingerprint is not always the same in every process)."""
    import pyarrow as pa
    from datasets.fingerprint import Hasher

    table = ds.with_format(None).data.table
    if ds._indices is not None:
        table = ds.flatten_indices().data.table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    hasher = Hasher()
    hasher.update(sink.getvalue().to_pybytes())
    return hasher.hexdigest()


def features_cache_file(
    dialogues: datasets.Dataset,
    tokenizer,
    tokens: SpeakerTokens,
    data_args: DataArguments,
    label: str,
) -> str:
    """An Arrow file keyed to the inputs, so the main process renders and the others reuse."""
    from datasets.fingerprint import Hasher

    from .. import __version__

    d = data_args
    key = Hasher.hash(
        [
            _content_hash(dialogues),
            sorted(tokenizer.get_vocab().items()),
            tokens.to_dict(),
            d.max_turns,
            d.max_len,
            d.reply_speakers,
            d.with_persona,
            __version__,
        ]
    )
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "gpt2chat"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"features-{label.replace(' ', '_')}-{key}.arrow")


def dataset_sources(ds) -> list[str]:
    """The dataset names in a ``source`` column (for the model card)."""
    if isinstance(ds, datasets.Dataset) and "source" in ds.column_names:
        return sorted(s for s in ds.unique("source") if s)
    return []
