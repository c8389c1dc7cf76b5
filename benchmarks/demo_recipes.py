"""The demo's fine-tuning recipes on a base model, side by side at the same wall-clock budget.

For each recipe: a short probe sets how many steps fit in ``--seconds`` (the probe's first
steps are slower than average, so the runs come out shorter than the budget); a real run of
that many steps (cosine schedule over them) gives the seconds per step and the held-out
perplexity after it (the ``mask`` recipe: the probe's pace only). Recipes:

* ``full``: every weight trained (the demo's default recipe);
* ``freeze``: the token embeddings frozen (``--freeze_embeddings``; tied output layer too);
* ``mask``: the embeddings trainable but their gradient masked to the speaker tokens' rows (a
  gradient hook: the same backward and optimizer work as ``full``; probe only);
* ``lora``: a LoRA adapter (r 16, the speaker rows trained through peft's
  ``trainable_token_indices``), learning rate 3e-4;
* ``lora_freeze``: the same LoRA adapter with the embeddings frozen (no speaker rows trained).

Usage (the numbers in docs/demo-tuning.md came from the first line)::

    python -m benchmarks.demo_recipes --base gemma3-270m --seconds 200
    python -m benchmarks.demo_recipes --base smollm2 --recipes full --seconds 200
    python -m benchmarks.demo_recipes --quick     # a tiny run that checks the harness
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from transformers import TrainerCallback

RECIPES = ("full", "freeze", "mask", "lora", "lora_freeze")


class _StepTimes(TrainerCallback):
    """Records when each optimizer step ends."""

    def __init__(self):
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.ends = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def _recipe_args(args, recipe: str, max_steps: int):
    return replace(
        args,
        max_steps=max_steps,
        freeze_embeddings=recipe in ("freeze", "lora_freeze"),
        use_peft=recipe.startswith("lora"),
        learning_rate=3e-4 if recipe.startswith("lora") else args.learning_rate,
        time_budget=0,
    )


def _run(args, recipe, folder, train, held_out, max_steps, evaluate):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt2chat.demo.training import build_trainer

    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if recipe == "mask":
        emb = model.get_input_embeddings().weight
        keep = torch.zeros(emb.shape[0], 1)
        keep[_speaker_ids(tokenizer)] = 1.0
        emb.register_hook(lambda grad: grad * keep.to(grad.dtype))
    times = _StepTimes()
    with tempfile.TemporaryDirectory() as scratch:
        run_args = _recipe_args(args, recipe, max_steps)
        trainer = build_trainer(run_args, model, tokenizer, train, held_out, scratch, [times])
        trainer.train()
        ppl = trainer.evaluate()["eval_perplexity"] if evaluate else None
    steps = [b - a for a, b in zip(times.ends, times.ends[1:])]
    return steps, ppl


def _speaker_ids(tokenizer) -> list[int]:
    from gpt2chat.tokens import get_speaker_tokens

    tokens = get_speaker_tokens(tokenizer)
    return [tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id]


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="gemma3-270m")
    parser.add_argument("--recipes", default="full,freeze,mask,lora")
    parser.add_argument("--seconds", type=float, default=200.0, help="training budget per recipe")
    parser.add_argument("--probe_steps", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a tiny model and data: the harness")
    opts = parser.parse_args(argv)
    recipes = [r.strip() for r in opts.recipes.split(",") if r.strip()]
    for r in recipes:
        if r not in RECIPES:
            parser.error(f"--recipes: unknown recipe {r!r}; choose from {', '.join(RECIPES)}")

    from gpt2chat.demo import DemoArguments
    from gpt2chat.demo.bases import load_base, resolve_base
    from gpt2chat.demo.data import load_data

    with tempfile.TemporaryDirectory(prefix="demo-recipes-") as work:
        folder = Path(work) / "base"
        if opts.quick:  # the suite's tiny GPT-2 and tokenizer, a slice of the data
            from tests.training.helpers import save_tiny_model

            tiny = save_tiny_model(Path(work) / "tiny")
            args = DemoArguments(
                base=str(tiny),
                max_train_samples=64,
                eval_samples=8,
                per_device_train_batch_size=2,
                output_dir=work,
            )
            opts.seconds, opts.probe_steps = 1.0, 1
        else:
            args = DemoArguments(base=opts.base, output_dir=work)
        t0 = time.perf_counter()
        path, title, base = resolve_base(args.base)
        model, tokenizer = load_base(path, base)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        del model
        print(f"{title}: loaded and saved as fp32 in {time.perf_counter() - t0:.0f} s")
        train, held_out, summary = load_data(args, tokenizer)
        print(summary)

        rows = []
        for recipe in recipes:
            probe, _ = _run(args, recipe, folder, train, held_out, opts.probe_steps + 1, False)
            per_step = sum(probe[1:]) / max(len(probe) - 1, 1) if len(probe) > 1 else probe[0]
            if recipe == "mask":
                rows.append((recipe, per_step, None, None, None))
                continue
            steps = max(1, int(opts.seconds / per_step))
            times, ppl = _run(args, recipe, folder, train, held_out, steps, True)
            rows.append((recipe, per_step, steps, sum(times), ppl))
        from transformers import AutoModelForCausalLM

        from gpt2chat.demo.training import build_trainer

        model = AutoModelForCausalLM.from_pretrained(folder)
        trainer = build_trainer(args, model, tokenizer, train, held_out, work + "/eval", [])
        before = trainer.evaluate()["eval_perplexity"]

    print(f"\n{title}, {platform.processor() or platform.machine()}, budget {opts.seconds:.0f} s")
    print(f"{'recipe':11} {'s/step':>7} {'steps/min':>9} {'steps':>6} {'train s':>8} {'ppl':>16}")
    for recipe, per_step, steps, secs, ppl in rows:
        per_step = secs / steps if steps else per_step  # the run's own pace, else the probe's
        tail = (
            f"{steps:6d} {secs:8.0f} {before:7.1f} -> {ppl:5.1f}"
            if steps is not None
            else f"{'-':>6} {'-':>8} {'(speed only)':>16}"
        )
        print(f"{recipe:11} {per_step:7.2f} {60 / per_step:9.1f} {tail}")
    pace = {r[0]: (r[3] / r[2] if r[2] else r[1]) for r in rows}
    if "full" in pace:
        ratios = ", ".join(f"{r} {pace['full'] / p:.2f}x" for r, p in pace.items() if r != "full")
        print(f"steps per minute vs full fine-tuning: {ratios}")
    return [
        (r, p, steps, secs, before, ppl) for (r, _, steps, secs, ppl), p in zip(rows, pace.values())
    ]


if __name__ == "__main__":
    main()
