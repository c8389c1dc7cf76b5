"""Training's model: the model a :class:`~gpt2chat.training.ModelArguments` describes (a
from-scratch config with overrides, or a reference loaded by
:func:`gpt2chat.loading.load_causal_lm`) and the LoRA wrapper put around it.

Loading itself (device, dtype, GGUF, adapters, tokenizers, path checks) and the model facts
(``unwrap_peft``, ``context_size``, ``accepts_token_type_ids``) are :mod:`gpt2chat.loading`.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..loading import load_causal_lm, resolve_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .arguments import LoraArguments, ModelArguments

logger = logging.getLogger(__name__)

__all__ = ["apply_lora", "load_model"]


def _from_scratch(model_args: ModelArguments) -> PreTrainedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    from .arguments import apply_config_overrides

    source = Path(model_args.from_scratch_config)
    if source.is_file():
        values = json.loads(source.read_text())
        model_type = values.pop("model_type", None)
        if not model_type:
            raise ValueError(
                f"--from_scratch_config {source} has no 'model_type' key (e.g. \"gpt2\")."
            )
        config = AutoConfig.for_model(model_type, **values)
    else:
        config = AutoConfig.from_pretrained(str(source))
    if model_args.config_overrides:
        apply_config_overrides(config, model_args.config_overrides)
    dtype = resolve_dtype(model_args.torch_dtype, default="float32")
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32 if dtype == "auto" else dtype
    )
    logger.info(
        "Built a %s from scratch (%.1fM parameters)",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


def load_model(
    model_args: ModelArguments, *, tokenizer: PreTrainedTokenizerBase | None = None
) -> PreTrainedModel:
    """The causal LM ``model_args`` describes, to train.

    ``from_scratch_config`` set: a randomly initialised model from that config (with
    ``config_overrides``). Otherwise :func:`gpt2chat.loading.load_causal_lm` of
    ``model_name_or_path`` (+ ``gguf_file``) in ``torch_dtype`` (default float32); an adapter
    folder comes back a ``peft.PeftModel`` resized to ``tokenizer``, to train further.
    """
    if model_args.from_scratch_config:
        return _from_scratch(model_args)
    return load_causal_lm(
        model_args.model_name_or_path,
        dtype=resolve_dtype(model_args.torch_dtype, default="float32"),
        gguf_file=model_args.gguf_file,
        tokenizer=tokenizer,
    )


def apply_lora(model, lora_args: LoraArguments, speaker_token_ids: list[int] | None = None):
    """Wrap ``model`` in a LoRA ``PeftModel`` (the speaker tokens' embedding rows trained too)."""
    from peft import LoraConfig, get_peft_model

    targets = lora_args.target_modules_for(getattr(model.config, "model_type", None))
    config = LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=(
            sorted(set(speaker_token_ids))
            if lora_args.lora_train_speaker_embeddings and speaker_token_ids
            else None
        ),
    )
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        peft_model = get_peft_model(model, config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    logger.info(
        "LoRA on %s: %d trainable parameters of %d (%.2f%%)",
        targets,
        trainable,
        total,
        100 * trainable / max(total, 1),
    )
    return peft_model
