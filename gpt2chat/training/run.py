"""What ``gpt2chat train`` does, as a library function: data -> :class:`DialogueTrainer` ->
train (or resume) -> final evaluation -> save (plus a merged model, a Hub push) -> a summary."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from ..data import load_dialogues
from ..extend import add_speaker_tokens
from ..loading import load_tokenizer_for, merge_adapter
from ..tokens import get_speaker_tokens, load_tokenizer
from .arguments import DataArguments, DialogueTrainingArguments, LoraArguments, ModelArguments
from .trainer import DialogueTrainer

logger = logging.getLogger(__name__)

__all__ = ["TrainingSummary", "load_training_data", "run_training"]


@dataclass
class TrainingSummary:
    """Where the results are and how good they are."""

    output_dir: str
    best_checkpoint: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    train_metrics: dict[str, Any] = field(default_factory=dict)
    merged_dir: str | None = None
    pushed_to: str | None = None
    is_main_process: bool = True
    eval_flags: str = "--split test"

    def format(self) -> str:
        lines = ["", "Training finished."]
        lines.append(f"  final model:      {self.output_dir}")
        if self.best_checkpoint:
            lines.append(f"  best checkpoint:  {self.best_checkpoint}")
        for key in ("eval_loss", "eval_perplexity"):
            if key in self.metrics:
                lines.append(f"  {key + ':':<17} {self.metrics[key]:.4f}")
        if "train_loss" in self.train_metrics:
            lines.append(f"  train_loss:       {self.train_metrics['train_loss']:.4f}")
        if self.merged_dir:
            lines.append(f"  merged model:     {self.merged_dir}")
        if self.pushed_to:
            lines.append(f"  pushed to:        https://huggingface.co/{self.pushed_to}")
        chat_path = self.merged_dir or self.output_dir
        lines += [
            "",
            f"Chat with it:      gpt2chat chat --model_path {chat_path}",
            f"Evaluate it:       gpt2chat eval --model {chat_path} {self.eval_flags}",
            f"TensorBoard:       tensorboard --logdir {Path(self.output_dir) / 'runs'}",
        ]
        return "\n".join(lines)


def _prepared_tokenizer(model_args: ModelArguments, prepared_dir: str):
    """The base model's tokenizer extended like ``prepared_dir/tokenizer`` (ids checked)."""
    saved = load_tokenizer(str(Path(prepared_dir) / "tokenizer"))
    recorded = get_speaker_tokens(saved)
    for arg in ("bos_token", "sp1_token", "sp2_token"):
        if getattr(model_args, arg) != getattr(recorded, arg) and getattr(
            model_args, arg
        ) != getattr(ModelArguments, arg):
            raise ValueError(
                f"--{arg} {getattr(model_args, arg)!r} differs from the {getattr(recorded, arg)!r} "
                f"the data in --prepared_dir {prepared_dir} was prepared with."
            )
        setattr(model_args, arg, getattr(recorded, arg))
    tokenizer = load_tokenizer_for(
        model_args.model_name_or_path,
        tokenizer_name_or_path=model_args.tokenizer_name_or_path,
        gguf_file=model_args.gguf_file,
    )
    tokens = add_speaker_tokens(
        tokenizer,
        bos_token=recorded.bos_token,
        sp1_token=recorded.sp1_token,
        sp2_token=recorded.sp2_token,
    )
    if (
        len(tokenizer) != len(saved)
        or tokens != recorded
        or tokenizer.get_vocab() != saved.get_vocab()
    ):
        raise ValueError(
            f"--prepared_dir {prepared_dir} was prepared with another tokenizer than the one of "
            f"--model_name_or_path {model_args.model_name_or_path}: run `gpt2chat prepare` again "
            "with the same model."
        )
    return tokenizer


def load_training_data(
    model_args: ModelArguments, data_args: DataArguments, training_args: DialogueTrainingArguments
) -> tuple[datasets.Dataset, datasets.Dataset | None, Any]:
    """The train and eval datasets (raw dialogues, or prepared features) and the tokenizer."""
    wants_eval = (
        str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    )
    if data_args.prepared_dir:
        root = Path(data_args.prepared_dir)
        tokenizer = _prepared_tokenizer(model_args, data_args.prepared_dir)
        if not (root / data_args.train_split).is_dir():
            raise ValueError(
                f"--prepared_dir {root} has no {data_args.train_split}/ split; prepare it with "
                f"`gpt2chat prepare --splits {data_args.train_split},{data_args.eval_split}`."
            )
        train = datasets.load_from_disk(str(root / data_args.train_split))
        eval_ = None
        if (root / data_args.eval_split).is_dir():
            eval_ = datasets.load_from_disk(str(root / data_args.eval_split))
        elif wants_eval:
            raise ValueError(
                f"--prepared_dir {root} has no {data_args.eval_split}/ split to evaluate on; "
                "prepare it, or pass --eval_strategy no --load_best_model_at_end false."
            )
        return train, eval_, tokenizer

    tokenizer = load_tokenizer_for(
        model_args.model_name_or_path,
        tokenizer_name_or_path=model_args.tokenizer_name_or_path,
        gguf_file=model_args.gguf_file,
    )
    common = {"data_dir": data_args.data_dir, "normalize": data_args.normalize_text}
    splits = [data_args.train_split] + ([data_args.eval_split] if wants_eval else [])
    held_out = any(
        data_args.train_frac is None and data_args.train_frac_for(s) is not None for s in splits
    )
    if held_out:
        logger.info(
            "--data_dir %s is one file: the last %d %% of its dialogues are the validation "
            "split, the rest the train split (--validation_split_percentage; 0 uses the whole "
            "file for both).",
            data_args.data_dir,
            data_args.validation_split_percentage,
        )
    loaded = [
        load_dialogues(data_args.dataset_names, s, train_frac=data_args.train_frac_for(s), **common)
        for s in splits
    ]
    if held_out and any(len(d) == 0 for d in loaded):
        raise ValueError(
            f"--data_dir {data_args.data_dir} has too few dialogues to hold out "
            f"{data_args.validation_split_percentage} % of them for validation and train on the "
            "rest: add dialogues, give a folder with train.jsonl and validation.jsonl, or pass "
            "--eval_strategy no --load_best_model_at_end false --validation_split_percentage 0."
        )
    return loaded[0], (loaded[1] if wants_eval else None), tokenizer


def eval_command_flags(data_args: DataArguments) -> str:
    """The ``gpt2chat eval`` flags that evaluate on the data a training run held out: the same
    datasets, files and rendering options, on the test split — or, for a single file or
    ``--train_frac``, on the validation split (a re-split has no test split)."""
    import shlex

    if data_args.prepared_dir:
        root = Path(data_args.prepared_dir)
        split = "test" if (root / "test").is_dir() else data_args.eval_split
        return f"--prepared_dir {shlex.quote(str(root))} --split {split}"
    defaults = DataArguments.__dataclass_fields__
    names = ["datasets", "data_dir", "train_frac", "max_turns", "max_len", "reply_speakers"]
    names += ["with_persona", "normalize_text"]
    if data_args.single_file:
        names.append("validation_split_percentage")
    flags = [
        f"--{name} {shlex.quote(str(getattr(data_args, name)))}"
        for name in names
        if getattr(data_args, name) is not None
        and getattr(data_args, name) != defaults[name].default
    ]
    resplit = data_args.train_frac_for("validation") is not None
    flags.append(f"--split {'validation' if resplit else 'test'}")
    return " ".join(flags)


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    lora_args: LoraArguments,
    training_args: DialogueTrainingArguments,
    *,
    callbacks: list | None = None,
) -> TrainingSummary:
    """Fine-tune as ``gpt2chat train`` does and return a :class:`TrainingSummary`.

    Every process of a ``torchrun`` / ``accelerate launch`` run calls this; only the main
    process writes files.
    """
    train, eval_, tokenizer = load_training_data(model_args, data_args, training_args)
    trainer = DialogueTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train,
        eval_dataset=eval_,
        processing_class=tokenizer,
        model_args=model_args,
        data_args=data_args,
        peft_config=lora_args,
        callbacks=callbacks,
    )
    result = trainer.train()
    train_metrics = dict(result.metrics)
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    metrics: dict[str, Any] = {}
    if trainer.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.save_model()  # the final (best) model and its card, in output_dir
    trainer.save_state()

    pushed = None
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
        pushed = trainer.hub_model_id

    merged_dir = None
    if lora_args.use_peft and lora_args.merge_adapter:
        merged_dir = str(Path(training_args.output_dir) / "merged")
        if trainer.is_world_process_zero():
            merged = merge_adapter(trainer.accelerator.unwrap_model(trainer.model))
            merged.save_pretrained(merged_dir)
            tokenizer.save_pretrained(merged_dir)
            trainer.lora_args, lora = None, trainer.lora_args
            trainer.write_model_card(merged_dir)
            trainer.lora_args = lora
            logger.info("Merged model written to %s", merged_dir)
        trainer.accelerator.wait_for_everyone()
    summary = TrainingSummary(
        output_dir=training_args.output_dir,
        best_checkpoint=trainer.state.best_model_checkpoint,
        metrics=metrics,
        train_metrics=train_metrics,
        merged_dir=merged_dir,
        pushed_to=pushed,
        is_main_process=trainer.is_world_process_zero(),
        eval_flags=eval_command_flags(data_args),
    )
    # Every process reaches the end before the process group is destroyed: a process that
    # destroys it while another is still saving can leave that one blocked at exit.
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    if training_args.world_size > 1:
        # Gloo's worker threads still release the last collectives' tensors, which needs the GIL,
        # while the DDP reducer's destructor (when the trainer goes) joins those threads holding
        # it: a rare hang at exit (pytorch/pytorch#56297). Let them finish first.
        time.sleep(0.5)
    return summary
