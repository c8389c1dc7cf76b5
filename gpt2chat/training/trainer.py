""":class:`DialogueTrainer`: :class:`transformers.Trainer` for dialogue fine-tuning.

Thin on purpose: it loads the model when given a name, adds the speaker tokens, renders raw
dialogue datasets with :func:`gpt2chat.prepare_dataset`, pads with
:class:`gpt2chat.DialogueCollator`, and reports a token-weighted evaluation loss and perplexity.
The model computes the training loss (``num_items_in_batch`` keeps it exact under gradient
accumulation and across processes); everything else is ``transformers.Trainer``.
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

from ..chat.settings import ChatSettings
from ..collator import DialogueCollator
from ..extend import add_speaker_tokens
from ..features import prepare_dataset
from ..render import IGNORE_INDEX
from ..tokens import CONFIG_KEY, SpeakerTokens, get_speaker_tokens
from .arguments import DataArguments, DialogueTrainingArguments, LoraArguments, ModelArguments
from .checkpoints import CheckpointMixin, resolve_checkpoint
from .model_card import ModelCardInfo, render_model_card
from .modeling import (
    accepts_token_type_ids,
    apply_lora,
    context_size,
    load_model,
    load_tokenizer_for,
    unwrap_peft,
)

logger = logging.getLogger(__name__)

__all__ = ["DialogueTrainer", "resolve_checkpoint", "token_nll"]

CARD_NAME = "README.md"


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example summed next-token NLL and number of supervised tokens (float64).

    Position ``t`` predicts ``labels[t + 1]``, as in the model's own causal-LM loss; ``-100``
    labels are ignored.
    """
    shift_labels = labels[:, 1:]
    sums = torch.zeros(labels.shape[0], dtype=torch.float64, device=labels.device)
    for i in range(labels.shape[0]):  # one row at a time: float32 logits of a row only
        row = torch.nn.functional.cross_entropy(
            logits[i, :-1].float(),
            shift_labels[i].long(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        sums[i] = row.double()
    counts = (shift_labels != IGNORE_INDEX).sum(dim=1).to(torch.float64)
    return sums, counts


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


class _TokenNLL:
    """Running totals of the evaluation NLL and label-token count (already gathered)."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.tokens = 0.0

    def add(self, stats: torch.Tensor) -> None:
        self.nll += float(stats[:, 0].sum().item())
        self.tokens += float(stats[:, 1].sum().item())


def _raw(ds) -> bool:
    """Whether ``ds`` holds dialogues to render (not prepared features)."""
    return (
        isinstance(ds, datasets.Dataset)
        and "utterances" in ds.column_names
        and "input_ids" not in ds.column_names
    )


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

        self.speaker_tokens = self._extend(model, tokenizer, model_args)
        evals = eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset]
        if any(_raw(ds) for ds in [train_dataset, *evals]):
            self.data_args = data_args = self._fit_context(model, data_args)

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
        self.dataset_sources = self._sources(train_dataset)

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

    # ------------------------------------------------------------------ preparation
    @staticmethod
    def _extend(model, tokenizer, model_args: ModelArguments) -> SpeakerTokens:
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

    @staticmethod
    def _fit_context(model, data_args: DataArguments) -> DataArguments:
        """The render settings for raw dialogues: ``max_len`` at most the model's context. The
        default (1024) shrinks to a smaller context; an explicit larger value is an error.
        Prepared features are checked by their lengths instead (:meth:`_features`)."""
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

    def _features(self, ds, label, tokenizer, max_samples, world_size, ctx):
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
            d = self.data_args
            features = prepare_dataset(
                ds,
                tokenizer,
                **d.render_kwargs,
                num_proc=d.preprocessing_num_workers,
                desc=f"Rendering {label} examples",
                cache_file_name=self._cache_file(ds, tokenizer, label) if world_size > 1 else None,
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

    def _cache_file(self, dialogues: datasets.Dataset, tokenizer, label: str) -> str:
        """An Arrow file keyed to the inputs, so the main process renders and the others reuse."""
        from datasets.fingerprint import Hasher

        from .. import __version__

        d = self.data_args
        key = Hasher.hash(
            [
                _content_hash(dialogues),
                sorted(tokenizer.get_vocab().items()),
                self.speaker_tokens.to_dict(),
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

    @staticmethod
    def _sources(ds) -> list[str]:
        if isinstance(ds, datasets.Dataset) and "source" in ds.column_names:
            return sorted(s for s in ds.unique("source") if s)
        return []

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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The parent's loss (token-weighted cross-entropy of the labels), but the LM head runs
        only at the positions that predict a label token: in dialogue examples most positions
        are context or padding, and at GPT-2's 50k-word vocabulary the head and its softmax are
        most of the step. Falls back to the parent when the model cannot do that."""
        labels = inputs.get("labels") if isinstance(inputs, dict) else None
        if return_outputs or labels is None or not self._reply_logits_only(model):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        logits = model(**inputs, logits_to_keep=keep).logits
        targets = labels[:, 1:][keep[:, :-1]]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets, reduction="sum"
        )
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
        gathered across processes (duplicates of the last uneven batch dropped)."""
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
        """Save as the parent does, then write the model card (``README.md``) beside it."""
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            folder = output_dir or self.args.output_dir
            self.write_model_card(folder)
            self.chat_settings().save_pretrained(
                folder,
                generation_config=unwrap_peft(self.model).generation_config,
                tokens=self.speaker_tokens,
            )

    def chat_settings(self) -> ChatSettings:
        """The settings saved with the model (``generation_config.json`` and ``chat_config.json``,
        read by ``ChatSession.from_pretrained``, ``gpt2chat chat``, ``serve`` and ``eval``): the
        base model's decoding, when it has saved settings (fine-tuning the demo model keeps its
        decoding), with this training's ``max_turns`` (chat sees the history window the model
        learned from) and whether it fed ``token_type_ids``."""
        base = getattr(unwrap_peft(self.model).config, "name_or_path", None)
        saved = None
        if base:
            try:
                saved = ChatSettings.from_pretrained(base)
            except ValueError as err:  # a broken file in the base folder: not worth failing
                logger.warning("Ignoring the base model's chat settings: %s", err)
        return dataclasses.replace(
            saved or ChatSettings(),
            max_turns=max(2, self.data_args.max_turns),
            use_token_type_ids=self.use_token_type_ids,
        )

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
        """Write gpt2chat's card (datasets, settings, final metrics, usage) to ``output_dir``."""
        if not self.is_world_process_zero():
            return
        datasets_ = [dataset] if isinstance(dataset, str) else dataset
        self.write_model_card(
            self.args.output_dir,
            model_name=model_name,
            base_model=finetuned_from,
            license=license,
            language=language,
            tags=[tags] if isinstance(tags, str) else tags,
            datasets=datasets_,
        )

    def model_card_info(self, **overrides) -> ModelCardInfo:
        """What the card says, from the trainer's state (``overrides`` replace fields)."""
        args = self.args
        repo = args.hub_model_id or str(Path(args.output_dir).resolve())
        name = (args.hub_model_id or Path(args.output_dir).resolve().name).split("/")[-1]
        world = max(args.world_size, 1)
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        training = {
            "learning_rate": args.learning_rate,
            "lr_scheduler": f"{getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)}"
            + (f" {args.lr_scheduler_kwargs}" if args.lr_scheduler_kwargs else ""),
            "warmup_steps": args.warmup_steps,
            "num_train_epochs": args.num_train_epochs,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "processes": world,
            "total_train_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * world,
            "optimizer": getattr(args.optim, "value", args.optim),
            "weight_decay": args.weight_decay,
            "max_grad_norm": args.max_grad_norm,
            "precision": precision,
            "seed": args.seed,
            "max_len": self.data_args.max_len,
            "max_turns": self.data_args.max_turns,
            "reply_speakers": self.data_args.reply_speakers,
            "with_persona": self.data_args.with_persona,
            "token_type_ids": self.use_token_type_ids,
        }
        if self.state.global_step:
            training["steps_trained"] = self.state.global_step
            training["epochs_trained"] = round(float(self.state.epoch or 0), 2)
        peft = None
        if self.lora_args is not None:
            la = self.lora_args
            peft = {
                "lora_r": la.lora_r,
                "lora_alpha": la.lora_alpha,
                "lora_dropout": la.lora_dropout,
                "target_modules": la.target_modules_for(
                    getattr(unwrap_peft(self.model).config, "model_type", None)
                ),
                "speaker_token_embeddings_trained": la.lora_train_speaker_embeddings,
            }
        t = self.speaker_tokens
        info = ModelCardInfo(
            model_name=name,
            repo_id=repo,
            base_model=self.base_model_name,
            datasets=self.dataset_sources
            or (self.data_args.dataset_names if self.data_args.prepared_dir is None else []),
            training=training,
            metrics=self.final_metrics(),
            peft=peft,
            speaker_tokens={
                "bos_token": t.bos_token,
                "sp1_token": t.sp1_token,
                "sp2_token": t.sp2_token,
            },
            use_token_type_ids=self.use_token_type_ids,
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(info, key, value)
        return info

    def final_metrics(self) -> dict[str, float]:
        """The evaluation metrics of the best checkpoint (else the latest evaluation)."""
        evals = [h for h in self.state.log_history if "eval_loss" in h]
        if not evals:
            return {}
        chosen = evals[-1]
        best = self.state.best_global_step
        if best and self.args.load_best_model_at_end:
            at_best = [h for h in evals if h.get("step") == best]
            chosen = at_best[-1] if at_best else chosen
        keep = ("eval_loss", "eval_perplexity", "eval_tokens", "epoch", "step")
        metrics = {k: chosen[k] for k in keep if k in chosen}
        train = [h for h in self.state.log_history if "train_loss" in h]
        if train:
            metrics["train_loss"] = train[-1]["train_loss"]
        return metrics

    def write_model_card(self, folder: str, **overrides) -> Path:
        """Write the card to ``folder/README.md`` (main process only) and return its path."""
        path = Path(folder) / CARD_NAME
        if not self.is_world_process_zero():
            return path
        if not self.args.hub_model_id:
            overrides.setdefault("repo_id", str(Path(folder).resolve()))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_model_card(self.model_card_info(**overrides)), encoding="utf-8")
        return path
