"""The demo's training stage: the base model (:mod:`.bases`) with its speaker tokens, the
bounded fine-tune (step budget and time cap) with the validation perplexity before
and after, and saving the model as a plain Hugging Face folder."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .bases import load_base, resolve_base
from .data import load_data as _load_data

if TYPE_CHECKING:
    from .arguments import DemoArguments


def _use_bf16(choice: str) -> bool:
    import torch

    if choice != "auto":
        return choice == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from ..loading import cpu_has_bf16

    return cpu_has_bf16()


def build_trainer(args: DemoArguments, model, tokenizer, train, held_out, output_dir, callbacks):
    """The demo's :class:`~gpt2chat.DialogueTrainer` (also what ``benchmarks/demo_recipes.py``
    measures): length-grouped batches, cosine schedule, bf16 autocast where supported, no
    checkpoints; ``--freeze_embeddings`` applied (with ``--use_peft``: LoRA alone, the speaker
    tokens' rows not trained)."""
    import torch

    from ..training import DialogueTrainer, DialogueTrainingArguments, LoraArguments

    if args.freeze_embeddings and not args.use_peft:
        freeze_embeddings(model)
    training_args = DialogueTrainingArguments(
        output_dir=output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=32,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        lr_scheduler_kwargs={},
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        train_sampling_strategy="group_by_length",  # batches of like lengths: less padding
        bf16=_use_bf16(args.bf16),
        use_cpu=not torch.cuda.is_available(),
        logging_steps=10,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    return DialogueTrainer(
        model,
        args=training_args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=(
            LoraArguments(use_peft=True, lora_train_speaker_embeddings=not args.freeze_embeddings)
            if args.use_peft
            else None
        ),
        callbacks=callbacks,
    )


def freeze_embeddings(model) -> None:
    """Freeze the input embedding matrix (and the output one, tied or not): with a large
    vocabulary it is most of the weights, and its gradient and optimizer state most of a
    step's cost on a CPU. The speaker tokens' rows keep their role-marker initialisation."""
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.weight.requires_grad_(False)


def _train(args: DemoArguments, out: TextIO) -> dict[str, Any]:
    """Fine-tune ``--base`` and save it to ``args.output_dir``; return the metrics."""
    import tempfile

    from transformers import ProgressCallback

    from ..loading import merge_adapter
    from ..training.callbacks import LossOnProgressBar, TimeBudgetCallback

    path, title, base = resolve_base(args.base)
    source = f"{Path(path).name} ({base.module.replace('_', '-')} package)" if base else path
    out.write(f"Loading {title} from {source}...\n")
    if base is not None and base.licence:
        out.write(f"  {base.licence}\n")
    out.flush()
    t0 = time.perf_counter()
    model, tokenizer = load_base(path, base)
    load_s = time.perf_counter() - t0

    train, held_out, summary = _load_data(args, tokenizer)
    out.write(f"  loaded in {load_s:.0f} s; {summary}\n")
    out.flush()

    with tempfile.TemporaryDirectory(prefix="gpt2chat-demo-") as scratch:
        budget = TimeBudgetCallback(args.time_budget)
        trainer = build_trainer(args, model, tokenizer, train, held_out, scratch, [budget])
        bf16 = trainer.args.bf16
        if trainer.pop_callback(ProgressCallback) is not None:  # the loss on the bar, no dicts
            trainer.add_callback(LossOnProgressBar())
        out.write("Validation perplexity before fine-tuning... ")
        out.flush()
        before = trainer.evaluate()
        out.write(f"{before['eval_perplexity']:.2f}\n")
        out.write(
            f"Fine-tuning ({args.max_steps} steps of {args.per_device_train_batch_size} "
            f"examples, lr {args.learning_rate:g}, {'bf16 autocast' if bf16 else 'fp32'}, "
            f"{_cap(args.time_budget)})...\n"
        )
        out.flush()
        t0 = time.perf_counter()
        train_result = trainer.train()
        train_s = time.perf_counter() - t0
        after = trainer.evaluate()
        out.write(
            f"  {trainer.state.global_step} steps in {train_s:.0f} s; validation perplexity "
            f"{before['eval_perplexity']:.2f} -> {after['eval_perplexity']:.2f}\n"
        )
        if budget.stopped_at is not None:
            out.write(_cut_short_note(trainer.state.global_step, args.max_steps, args.time_budget))
        if args.use_peft:  # a plain folder: the adapter merged into the weights
            merged = merge_adapter(trainer.accelerator.unwrap_model(trainer.model))
            merged.save_pretrained(args.output_dir)
            tokenizer.save_pretrained(args.output_dir)
        else:
            trainer.save_model(args.output_dir)  # model, tokenizer and model card
        _write_card(trainer, args, base)
    metrics = {
        "perplexity_before": before["eval_perplexity"],
        "perplexity_after": after["eval_perplexity"],
        "steps": trainer.state.global_step,
        "train_seconds": round(train_s, 1),
        "train_loss": train_result.training_loss,
        "stopped_by_time_budget": budget.stopped_at is not None,
        "train_examples": len(train),
        "eval_examples": len(held_out),
        "settings": asdict(args),
    }
    return metrics


def _write_card(trainer, args: DemoArguments, base) -> None:
    """The model card of the saved folder: a plain transformers model (a LoRA adapter is merged),
    fine-tuned from the base's Hub original, under its licence."""
    from ..training.model_card import render_model_card

    info = trainer.model_card_info(repo_id=str(Path(args.output_dir).resolve()))
    if info.peft:
        info.training["lora"] = f"r {info.peft['lora_r']}, merged into the weights"
        info.peft = None
    if base is not None:
        info.base_model, info.license = base.hub_id, base.licence_id
    (Path(args.output_dir) / "README.md").write_text(render_model_card(info), encoding="utf-8")


def _cap(seconds: float) -> str:
    return f"time cap {seconds:.0f} s" if seconds else "no time cap"


def _cut_short_note(steps: int, max_steps: int, seconds: float) -> str:
    """What a training stopped by ``--time_budget`` means for the replies, in plain words."""
    return (
        f"\nNOTE: training was cut short by the {seconds:.0f} s time cap after {steps} of "
        f"{max_steps} steps (the machine is slower or busier than expected). The model is "
        "under-trained: expect replies that are more generic and more often off topic than the "
        "README's transcript. To train all the steps, run `make demo ARGS=--retrain` on a "
        'quieter machine, or raise the cap: `make demo ARGS="--retrain --time_budget 0"`.\n\n'
    )
