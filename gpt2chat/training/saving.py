"""What :class:`gpt2chat.DialogueTrainer` writes beside the weights on every save: the model
card (``README.md``, built here from the trainer's state and rendered by
:mod:`gpt2chat.training.model_card`) and the chat settings (``generation_config.json`` and
``chat_config.json``, read by ``ChatSession.from_pretrained``, chat, serve, eval and export).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..chat.settings import ChatSettings
from ..loading import unwrap_peft
from .model_card import ModelCardInfo, render_model_card

if TYPE_CHECKING:
    from .trainer import DialogueTrainer

logger = logging.getLogger(__name__)

__all__ = [
    "CARD_NAME",
    "chat_settings",
    "final_metrics",
    "model_card_info",
    "save_beside_model",
    "write_model_card",
]

CARD_NAME = "README.md"


def save_beside_model(trainer: DialogueTrainer, folder: str) -> None:
    """Write the model card and the chat settings into ``folder`` (a saved model)."""
    write_model_card(trainer, folder)
    chat_settings(trainer).save_pretrained(
        folder,
        generation_config=unwrap_peft(trainer.model).generation_config,
        tokens=trainer.speaker_tokens,
    )


def chat_settings(trainer: DialogueTrainer) -> ChatSettings:
    """The settings saved with the model: the base model's decoding, when it has saved settings
    (fine-tuning the demo model keeps its decoding), with this training's ``max_turns`` (chat
    sees the history window the model learned from) and whether it fed ``token_type_ids``."""
    base = getattr(unwrap_peft(trainer.model).config, "name_or_path", None)
    saved = None
    if base:
        try:
            saved = ChatSettings.from_pretrained(base)
        except ValueError as err:  # a broken file in the base folder: not worth failing
            logger.warning("Ignoring the base model's chat settings: %s", err)
    return dataclasses.replace(
        saved or ChatSettings(),
        max_turns=max(2, trainer.data_args.max_turns),
        use_token_type_ids=trainer.use_token_type_ids,
    )


def _training_settings(trainer: DialogueTrainer) -> dict:
    args, data = trainer.args, trainer.data_args
    world = max(args.world_size, 1)
    scheduler = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    training = {
        "learning_rate": args.learning_rate,
        "lr_scheduler": f"{scheduler}"
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
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
        "max_len": data.max_len,
        "max_turns": data.max_turns,
        "reply_speakers": data.reply_speakers,
        "with_persona": data.with_persona,
        "token_type_ids": trainer.use_token_type_ids,
    }
    if trainer.state.global_step:
        training["steps_trained"] = trainer.state.global_step
        training["epochs_trained"] = round(float(trainer.state.epoch or 0), 2)
    return training


def model_card_info(trainer: DialogueTrainer, **overrides) -> ModelCardInfo:
    """What the card says, from the trainer's state (``overrides`` replace fields)."""
    args, data = trainer.args, trainer.data_args
    peft = None
    if trainer.lora_args is not None:
        la = trainer.lora_args
        peft = {
            "lora_r": la.lora_r,
            "lora_alpha": la.lora_alpha,
            "lora_dropout": la.lora_dropout,
            "target_modules": la.target_modules_for(
                getattr(unwrap_peft(trainer.model).config, "model_type", None)
            ),
            "speaker_token_embeddings_trained": la.lora_train_speaker_embeddings,
        }
    t = trainer.speaker_tokens
    info = ModelCardInfo(
        model_name=(args.hub_model_id or Path(args.output_dir).resolve().name).split("/")[-1],
        repo_id=args.hub_model_id or str(Path(args.output_dir).resolve()),
        base_model=trainer.base_model_name,
        datasets=trainer.dataset_sources
        or (data.dataset_names if data.prepared_dir is None else []),
        training=_training_settings(trainer),
        metrics=final_metrics(trainer),
        peft=peft,
        speaker_tokens={
            "bos_token": t.bos_token,
            "sp1_token": t.sp1_token,
            "sp2_token": t.sp2_token,
        },
        use_token_type_ids=trainer.use_token_type_ids,
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(info, key, value)
    return info


def final_metrics(trainer: DialogueTrainer) -> dict[str, float]:
    """The evaluation metrics of the best checkpoint (else the latest evaluation)."""
    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    if not evals:
        return {}
    chosen = evals[-1]
    best = trainer.state.best_global_step
    if best and trainer.args.load_best_model_at_end:
        at_best = [h for h in evals if h.get("step") == best]
        chosen = at_best[-1] if at_best else chosen
    keep = ("eval_loss", "eval_perplexity", "eval_tokens", "epoch", "step")
    metrics = {k: chosen[k] for k in keep if k in chosen}
    train = [h for h in history if "train_loss" in h]
    if train:
        metrics["train_loss"] = train[-1]["train_loss"]
    return metrics


def write_model_card(trainer: DialogueTrainer, folder: str, **overrides) -> Path:
    """Write the card to ``folder/README.md`` (main process only) and return its path."""
    path = Path(folder) / CARD_NAME
    if not trainer.is_world_process_zero():
        return path
    if not trainer.args.hub_model_id:
        overrides.setdefault("repo_id", str(Path(folder).resolve()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_card(model_card_info(trainer, **overrides)), encoding="utf-8")
    return path
