""":class:`DialogueTrainer`: :class:`transformers.Trainer` for dialogue fine-tuning.

Thin on purpose: it owns the wiring (load the model when given a name, feed it the features
of :mod:`gpt2chat.training.inputs`, pad with :class:`gpt2chat.DialogueCollator`), the
reply-only training loss, and a token-weighted evaluation loss and perplexity. What is saved
beside the weights (model card, chat settings) is :mod:`gpt2chat.training.saving`; evaluation
after training is :mod:`gpt2chat.evaluation`. The model computes the training loss
(``num_items_in_batch`` keeps it exact under gradient accumulation and across processes);
everything else is ``transformers.Trainer``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import Trainer, TrainingArguments, set_seed

from ..chat.options import TOKEN_TYPES_ATTR
from ..collator import DialogueCollator
from ..evaluation.perplexity import token_nll
from ..loading import accepts_token_type_ids, context_size, load_tokenizer_for, unwrap_peft
from ..render import IGNORE_INDEX
from . import saving
from .arguments import DataArguments, DialogueTrainingArguments, LoraArguments, ModelArguments
from .checkpoints import CheckpointMixin, resolve_checkpoint
from .inputs import (
    dataset_sources,
    extend_for_dialogue,
    features_cache_file,
    fit_context,
    is_raw,
    prepared_features,
)
from .model_card import ModelCardInfo
from .modeling import apply_lora, load_model

logger = logging.getLogger(__name__)

__all__ = ["DialogueTrainer", "resolve_checkpoint"]


class _TokenNLL:
    """Running totals of the evaluation NLL and label-token count (already gathered)."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.tokens = 0.0

    def add(self, stats: torch.Tensor) -> None:
        self.nll += float(stats[:, 0].sum().item())
        self.tokens += float(stats[:, 1].sum().item())


class DialogueTrainer(CheckpointMixin, Trainer):
    """A :class:`transformers.Trainer` that fine-tunes a causal LM on dialogues.

    Args:
        model: a ``PreTrainedModel``, or a model name / path (``"gpt2"``, a folder, a ``.gguf``
            file) loaded with :func:`gpt2chat.training.modeling.load_model`; ``None`` loads
            ``model_args.model_name_or_path``.
        args: the training arguments (default: :class:`DialogueTrainingArguments`).
        data_collator: default :class:`gpt2chat.DialogueCollator`.
        train_dataset, eval_dataset: raw dialogues (a ``datasets.Dataset`` with ``utterances``,
            as returned by :func:`gpt2chat.load_dialogues`), rendered here with ``data_args``;
            or features already prepared by :func:`gpt2chat.prepare_dataset` (``input_ids``,
            ``labels``...). ``eval_dataset`` may be a ``{name: dataset}`` dict.
        processing_class: the tokenizer (default: the model's). Extended in place with the
            speaker tokens when it does not have them yet.
        model_args: speaker tokens, dtype, GGUF file, token-type choice (:class:`ModelArguments`).
        data_args: how raw dialogues are rendered (:class:`DataArguments`).
        peft_config: :class:`LoraArguments` (used when ``use_peft``) or a ``peft.PeftConfig``:
            train a LoRA adapter; the speaker tokens' embedding rows are trained too.
        use_token_type_ids: feed ``token_type_ids`` (the speaker of each position) to the
            model, as the original recipe does; default ``model_args.use_token_type_ids``
            (``False``: other engines feed ``input_ids`` only). Saved in ``chat_config.json``,
            which chat, serve, eval and export follow.
        **kwargs: passed to :class:`transformers.Trainer` (``callbacks``, ``optimizers``...).

    Evaluation reports ``eval_loss`` and ``eval_perplexity = exp(eval_loss)`` computed
    token-weighted over the whole evaluation set (all processes), plus ``eval_tokens``.
    """

    def __init__(
        self,
        model: Any = None,
        args: TrainingArguments | None = None,
        data_collator=None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | dict[str, datasets.Dataset] | None = None,
        processing_class=None,
        *,
        model_args: ModelArguments | None = None,
        data_args: DataArguments | None = None,
        peft_config: Any = None,
        use_token_type_ids: bool | None = None,
        **kwargs,
    ):
        if kwargs.get("model_init") is not None:
            raise ValueError(
                "DialogueTrainer does not take model_init: pass a model or a model name."
            )
        args = args if args is not None else DialogueTrainingArguments()
        model_args = model_args if model_args is not None else ModelArguments()
        data_args = data_args if data_args is not None else DataArguments()
        if isinstance(model, (str, os.PathLike)):
            model_args = dataclasses.replace(model_args, model_name_or_path=str(model))
            model = None
        self.model_args, self.data_args = model_args, data_args
        self.base_model_name = (
            None if model_args.from_scratch_config else model_args.model_name_or_path
        )

        tokenizer = processing_class
        if tokenizer is None:
            if model is not None:
                name = getattr(getattr(model, "config", None), "_name_or_path", None)
                if not name:
                    raise ValueError(
                        "Pass processing_class=<tokenizer>: the model has no name to load its "
                        "tokenizer from."
                    )
                tokenizer = load_tokenizer_for(name)
            else:
                tokenizer = load_tokenizer_for(
                    model_args.model_name_or_path,
                    tokenizer_name_or_path=model_args.tokenizer_name_or_path,
                    gguf_file=model_args.gguf_file,
                )
        if model is None:
            set_seed(args.seed)  # a from-scratch model starts from the same weights every run
            model = load_model(model_args, tokenizer=tokenizer)
        else:
            name = getattr(getattr(model, "config", None), "_name_or_path", None)
            self.base_model_name = name or None

        self.speaker_tokens = extend_for_dialogue(model, tokenizer, model_args)
        evals = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
        if any(is_raw(ds) for ds in [train_dataset, *evals]):
            self.data_args = data_args = fit_context(model, data_args)

        accepts = accepts_token_type_ids(model)
        if use_token_type_ids is None:
            use_token_type_ids = model_args.token_type_ids_choice
        if use_token_type_ids is None:
            use_token_type_ids = accepts
        elif use_token_type_ids and not accepts:
            raise ValueError(
                f"use_token_type_ids=true but {type(unwrap_peft(model)).__name__}.forward takes no "
                "token_type_ids: use 'auto' or 'false'."
            )
        self.use_token_type_ids = bool(use_token_type_ids)
        # The record in memory, for a ChatSession / evaluation on this model object (the saved
        # folder's is chat_config.json): TOKEN_TYPES_ATTR on the model.
        setattr(unwrap_peft(model), TOKEN_TYPES_ATTR, self.use_token_type_ids)
        logger.info(
            "token_type_ids are %sfed to %s",
            "" if self.use_token_type_ids else "not ",
            type(unwrap_peft(model)).__name__,
        )

        self.lora_args: LoraArguments | None = None
        if isinstance(peft_config, LoraArguments):
            if peft_config.use_peft:
                self.lora_args = peft_config
                t = self.speaker_tokens
                model = apply_lora(
                    model, peft_config, [t.bos_token_id, t.sp1_token_id, t.sp2_token_id]
                )
        elif peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)

        world, ctx = args.world_size, context_size(model)
        train_dataset = self._features(
            train_dataset, "train", tokenizer, data_args.max_train_samples, world, ctx
        )
        n_eval = data_args.max_eval_samples
        if isinstance(eval_dataset, dict):
            eval_dataset = {
                name: self._features(ds, f"eval {name}", tokenizer, n_eval, world, ctx)
                for name, ds in eval_dataset.items()
            }
        else:
            eval_dataset = self._features(eval_dataset, "eval", tokenizer, n_eval, world, ctx)
        self.dataset_sources = dataset_sources(train_dataset)

        if data_collator is None:
            data_collator = DialogueCollator(
                pad_token_id=self.speaker_tokens.pad_token_id,
                return_token_type_ids=self.use_token_type_ids,
            )
        self._token_nll = _TokenNLL()
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            **kwargs,
        )

    def _features(self, ds, label, tokenizer, max_samples, world_size, ctx):
        """:func:`~gpt2chat.training.inputs.prepared_features`; with several processes the
        main one renders raw dialogues into a cache file the others reuse."""
        cache = None
        if world_size > 1 and is_raw(ds):
            cache = features_cache_file(ds, tokenizer, self.speaker_tokens, self.data_args, label)
        return prepared_features(
            ds, label, tokenizer, self.data_args, max_samples=max_samples, ctx=ctx,
            cache_file_name=cache,
        )  # fmt: skip

    # ------------------------------------------------------------------ training
    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial=None,
        ignore_keys_for_eval=None,
        **kwargs,
    ):
        """:meth:`transformers.Trainer.train`; ``resume_from_checkpoint`` defaults to
        ``args.resume_from_checkpoint`` (set by ``--ckpt_name`` too) and accepts ``"last"``: the
        newest complete checkpoint (:mod:`gpt2chat.training.checkpoints`)."""
        if resume_from_checkpoint is None:
            resume_from_checkpoint = self.args.resume_from_checkpoint
        resume_from_checkpoint = resolve_checkpoint(
            resume_from_checkpoint, self.args.output_dir, full_state=not self.args.save_only_model
        )
        if resume_from_checkpoint:
            logger.info("Resuming from %s", resume_from_checkpoint)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint,
            trial=trial,
            ignore_keys_for_eval=ignore_keys_for_eval,
            **kwargs,
        )

    # ------------------------------------------------------------------ training loss
    def _reply_logits_only(self, model) -> bool:
        """Whether the training loss can project only the label positions onto the vocabulary:
        the model's forward takes ``logits_to_keep`` and slices with transformers'
        ``slice_logits_to_keep`` (which accepts a boolean ``(batch, seq)`` mask), and no custom
        loss, label smoothing or sequence parallelism is set."""
        cached = getattr(self, "_reply_logits_ok", None)
        if cached is None:
            import inspect
            import sys

            base = unwrap_peft(self.accelerator.unwrap_model(model))
            module = sys.modules.get(type(base).__module__)
            cached = (
                "logits_to_keep" in inspect.signature(base.forward).parameters
                and getattr(module, "slice_logits_to_keep", None) is not None
                and self.model_accepts_loss_kwargs
                and self.label_smoother is None
                and self.compute_loss_func is None
                and getattr(self.accelerator, "parallelism_config", None) is None
            )
            self._reply_logits_ok = cached
        return cached

    def _label_logits(self, model, inputs):
        """The logits (float32, one row per label token) at the positions that predict a label
        token, the LM head run there only; their targets; those positions, ``(batch, seq)``."""
        labels = inputs["labels"]
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        logits = model(**inputs, logits_to_keep=keep).logits
        return logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:][keep[:, :-1]], keep

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The parent's loss (token-weighted cross-entropy of the labels), but the LM head runs
        only at the positions that predict a label token: in dialogue examples most positions
        are context or padding, and at GPT-2's 50k-word vocabulary the head and its softmax are
        most of the step. Falls back to the parent when the model cannot do that."""
        labels = inputs.get("labels") if isinstance(inputs, dict) else None
        if return_outputs or labels is None or not self._reply_logits_only(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        logits, targets, _ = self._label_logits(model, inputs)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        if num_items_in_batch is None:
            return loss / targets.numel() if targets.numel() else loss * 0.0
        loss = loss / num_items_in_batch
        if self.args.average_tokens_across_devices:  # as the parent scales it
            scale = self.accelerator.num_processes // self.get_tp_size()
            loss = loss * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
        return loss

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The parent's scheduler; a polynomial schedule whose warmup covers every step (a
        1-step smoke run) gets one decay step, since transformers divides by their difference."""
        kind = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
        if kind == "polynomial":
            while self.args.get_warmup_steps(num_training_steps) >= num_training_steps:
                num_training_steps += 1
        return super().create_scheduler(num_training_steps, optimizer)

    # ------------------------------------------------------------------ evaluation
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The parent's step, plus the batch's per-example NLL sums and label-token counts,
        gathered across processes (duplicates of the last uneven batch dropped). When only the
        loss is wanted (no ``compute_metrics``), the LM head runs at the label positions only,
        as in training."""
        labels = inputs.get("labels") if isinstance(inputs, dict) else None
        if prediction_loss_only and labels is not None and self._reply_logits_only(model):
            return self._reply_loss_step(model, inputs)
        loss, logits, labels = super().prediction_step(
            model, inputs, prediction_loss_only=False, ignore_keys=ignore_keys
        )
        if logits is not None and labels is not None:
            scores = logits[0] if isinstance(logits, (tuple, list)) else logits
            nll, count = token_nll(scores, labels)
            stats = self.accelerator.gather_for_metrics(torch.stack([nll, count], dim=1))
            self._token_nll.add(stats)
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, labels

    @torch.no_grad()
    def _reply_loss_step(self, model, inputs):
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            logits, targets, keep = self._label_logits(model, inputs)
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none").double()
        sums = torch.zeros(keep.shape[0], dtype=torch.float64, device=keep.device)
        sums.index_add_(0, keep.nonzero()[:, 0], nll)
        counts = keep.sum(dim=1).to(torch.float64)
        self._token_nll.add(self.accelerator.gather_for_metrics(torch.stack([sums, counts], 1)))
        return (nll.sum() / max(nll.numel(), 1)).float(), None, None

    def evaluation_loop(
        self,
        dataloader,
        description,
        prediction_loss_only=None,
        ignore_keys=None,
        metric_key_prefix="eval",
    ):
        """The parent's loop; ``<prefix>_loss`` becomes the token-weighted mean NLL over the
        whole set and ``<prefix>_perplexity`` its exponential (``<prefix>_tokens``: the count)."""
        self._token_nll = _TokenNLL()
        output = super().evaluation_loop(
            dataloader,
            description,
            prediction_loss_only=prediction_loss_only,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        totals = self._token_nll
        if totals.tokens > 0:
            loss = totals.nll / totals.tokens
            output.metrics[f"{metric_key_prefix}_loss"] = loss
            output.metrics[f"{metric_key_prefix}_perplexity"] = (
                math.exp(loss) if loss < 700 else float("inf")
            )
            output.metrics[f"{metric_key_prefix}_tokens"] = int(totals.tokens)
        return output

    # ------------------------------------------------------------------ saving and the card
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as the parent does, then write the model card (``README.md``) and the chat
        settings beside it (:mod:`gpt2chat.training.saving`)."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            saving.save_beside_model(self, output_dir or self.args.output_dir)

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write gpt2chat's card (datasets, settings, final metrics, usage) to ``output_dir``
        (``push_to_hub`` calls this)."""
        if not self.is_world_process_zero():
            return
        saving.write_model_card(
            self,
            self.args.output_dir,
            model_name=model_name,
            base_model=finetuned_from,
            license=license,
            language=language,
            tags=[tags] if isinstance(tags, str) else tags,
            datasets=[dataset] if isinstance(dataset, str) else dataset,
        )

    def write_model_card(self, folder: str, **overrides) -> Path:
        """:func:`gpt2chat.training.saving.write_model_card` for this trainer."""
        return saving.write_model_card(self, folder, **overrides)

    def model_card_info(self, **overrides) -> ModelCardInfo:
        """:func:`gpt2chat.training.saving.model_card_info` for this trainer."""
        return saving.model_card_info(self, **overrides)

    def chat_settings(self):
        """:func:`gpt2chat.training.saving.chat_settings` for this trainer."""
        return saving.chat_settings(self)
