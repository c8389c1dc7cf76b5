"""Training speed: reply tokens learned per second on CPU, the seed's loop vs ``DialogueTrainer``
(and TRL's ``SFTTrainer`` as a peer).

Run ``.venv/bin/python -m benchmarks.train`` (``--quick`` for a tiny smoke run). The model is a
small randomly initialised GPT-2 (default 6 layers, 384 wide; ``--n_layer`` / ``--n_embd``), the
tokenizer the real GPT-2 one (``$GPT2CHAT_SHARED/assets/gpt2-tokenizer``) extended with the
speaker tokens, the data DailyDialog (``$GPT2CHAT_SHARED/data/dailydialog``). It prints

* speed: every case trains the same ``--steps`` optimiser steps of ``--batch_size`` on the same
  ``steps * batch_size`` examples (one epoch of them, so the same reply tokens: the label tokens
  != -100 actually trained, counted from the batches) and reports reply tokens/s:

  - ``seed loop`` (:mod:`benchmarks.seed_train_baseline`): shuffled batches padded to the batch
    maximum, fp32, a hand-written AdamW loop;
  - ``DialogueTrainer``: length-grouped batches (``train_sampling_strategy="group_by_length"``)
    and bf16 autocast when the CPU has native bf16 (avx512_bf16 / amx_bf16);
  - ``TRL SFTTrainer``: ``assistant_only_loss`` on the same dialogues as ``messages`` (one
    example per dialogue, every assistant turn learned: its reply tokens differ from the other
    two, hence tokens/s, not seconds, are compared), same model, batch size and precision knobs;

* quality: each case trains for the same wall-clock budget (``--budget`` seconds, same learning
  rate, constant schedule), then the token-weighted validation perplexity of the reply tokens
  is computed by one shared function on the same DailyDialog validation examples;
* last, one line: the ratios of DialogueTrainer's reply tokens/s to the seed loop's and TRL's.

Each case runs in a fresh process; the speed runs are interleaved over ``--repeats`` rounds and
the medians reported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time

from . import _common as C

MODULE = "benchmarks.train"
CASES = ("seed", "ours", "trl")
LABELS = {"seed": "seed loop (fp32, shuffled)", "ours": "DialogueTrainer", "trl": "TRL SFTTrainer"}

#: The chat template given to TRL: the gpt2chat format (``<bos>``, ``<sp1>`` user turns, ``<sp2>``
#: assistant turns, ``<eos>`` after a final assistant turn) with ``{% generation %}`` markers
#: around every assistant text (and the final ``<eos>``), which ``assistant_only_loss`` needs.
#: TRL's usual set-up, whole dialogues with every assistant turn learned; the template gpt2chat
#: saves marks the final turn only, as one training example per reply does (that one is tested
#: with SFTTrainer in tests/test_render.py).
TRL_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- '<sp1>' + (message['content'] | trim) -}}"
    "{%- else -%}{{- '<sp2>' -}}{%- generation -%}{{- message['content'] | trim -}}"
    "{%- if loop.last -%}{{- eos_token -}}{%- endif -%}{%- endgeneration -%}"
    "{%- endif -%}{%- endfor -%}"
)


# --------------------------------------------------------------------------- shared setup
def setup(a: argparse.Namespace):
    """Tokenizer (extended), a fresh model (seeded), train / validation features, dialogues."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2chat import add_speaker_tokens, load_dialogues, prepare_dataset
    from gpt2chat.tokens import load_tokenizer

    if a.threads:
        torch.set_num_threads(a.threads)
    tokenizer = load_tokenizer(str(C.require_shared("assets", "gpt2-tokenizer")))
    add_speaker_tokens(tokenizer)
    data_dir = C.require_shared("data", "dailydialog")
    train = load_dialogues("daily_dialog", "train", data_dir)
    valid = load_dialogues("daily_dialog", "validation", data_dir)
    valid = valid.select(range(min(a.eval_dialogues, len(valid))))
    n_examples = a.steps * a.batch_size
    # Enough dialogues for the examples (DailyDialog: ~3.7 replies per dialogue).
    train = train.select(range(min(len(train), n_examples)))
    kw = {"max_turns": 5, "max_len": 1024, "reply_speakers": "sp2"}
    feats = prepare_dataset(train, tokenizer, **kw)
    feats = feats.select(range(min(len(feats), n_examples)))
    valid_feats = prepare_dataset(valid, tokenizer, **kw)
    torch.manual_seed(0)
    heads = max(1, a.n_embd // 64)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=1024, n_embd=a.n_embd, n_layer=a.n_layer,
        n_head=heads, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    return tokenizer, model, feats, valid_feats, train


def validation_perplexity(model, features, *, token_type_ids: bool, batch_size: int = 16) -> dict:
    """Token-weighted perplexity of the label tokens (the replies) of ``features``, fp32."""
    import torch
    import torch.nn.functional as F

    from gpt2chat import DialogueCollator

    collate = DialogueCollator(pad_token_id=model.config.eos_token_id)
    order = sorted(range(len(features)), key=lambda i: features[i]["length"])
    rows = features.select_columns(["input_ids", "token_type_ids", "labels"])
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            batch = collate([rows[i] for i in order[s : s + batch_size]])
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"] if token_type_ids else None,
            ).logits.float()
            labels = batch["labels"][:, 1:]
            nll += float(
                F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
            )
            count += int((labels != -100).sum())
    return {"eval_perplexity": math.exp(nll / count), "eval_tokens": count}


# --------------------------------------------------------------------------- the cases
class _Clock:
    """A ``TrainerCallback`` timing the training loop (``on_train_begin`` -> end) and stopping
    it after ``budget`` seconds."""

    def __new__(cls, budget: float | None):
        from transformers import TrainerCallback

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                self.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if budget is not None and time.perf_counter() - self.start >= budget:
                    control.should_training_stop = True

            def on_train_end(self, args, state, control, **kw):
                self.seconds = time.perf_counter() - self.start
                self.steps = state.global_step

        return Clock()


class _Counting:
    """Wraps a collator; adds up the label tokens != -100 of the batches it builds."""

    def __init__(self, collate) -> None:
        self.collate, self.tokens = collate, 0

    def __call__(self, examples):
        batch = self.collate(examples)
        self.tokens += int((batch["labels"] != -100).sum())
        return batch


def _trainer_args(a, out: str, budget: float | None, n_rows: int) -> dict:
    steps = a.steps if budget is None else 10**6
    return {
        "output_dir": out,
        "per_device_train_batch_size": a.batch_size,
        "max_steps": steps,
        "learning_rate": a.lr,
        "lr_scheduler_type": "constant",
        "lr_scheduler_kwargs": {},
        "warmup_steps": 0,
        "weight_decay": 0.01,  # torch.optim.AdamW's default, as in the seed loop
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": [],
        "seed": 0,
        "bf16": a.bf16,
        "use_cpu": True,
        "disable_tqdm": True,
        "load_best_model_at_end": False,
        "train_sampling_strategy": "group_by_length" if a.group_by_length else "random",
    }


def run_case(a: argparse.Namespace) -> dict:
    tokenizer, model, feats, valid_feats, dialogues = setup(a)
    budget = a.budget if a.mode == "quality" else None
    result: dict = {"case": a.case, "mode": a.mode}
    if a.case == "seed":
        from .seed_train_baseline import train_seed

        out = train_seed(
            model, feats, pad_id=tokenizer.pad_token_id, batch_size=a.batch_size,
            learning_rate=a.lr, max_steps=a.steps if budget is None else None,
            time_budget=budget,
        )  # fmt: skip
        if budget is not None:  # repeat the (shuffled) epoch until the budget is spent
            while out["seconds"] < budget:
                more = train_seed(
                    model, feats, pad_id=tokenizer.pad_token_id, batch_size=a.batch_size,
                    learning_rate=a.lr, seed=out["steps"], time_budget=budget - out["seconds"],
                )  # fmt: skip
                out = {k: out[k] + more[k] for k in out}
        result.update(out)
        tt = True
    elif a.case == "ours":
        from gpt2chat import DialogueCollator
        from gpt2chat.training import DialogueTrainer, DialogueTrainingArguments

        with tempfile.TemporaryDirectory() as tmp:
            args = DialogueTrainingArguments(**_trainer_args(a, tmp, budget, len(feats)))
            collate = _Counting(DialogueCollator(pad_token_id=tokenizer.pad_token_id))
            clock = _Clock(budget)
            trainer = DialogueTrainer(
                model, args=args, train_dataset=feats, processing_class=tokenizer,
                data_collator=collate, callbacks=[clock],
            )  # fmt: skip
            trainer.train()
        result.update(steps=clock.steps, reply_tokens=collate.tokens, seconds=clock.seconds)
        tt = trainer.use_token_type_ids
    else:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        n = a.steps * a.batch_size
        conv = dialogues.select(range(min(n, len(dialogues))))
        messages = [
            [
                {"role": "user" if i % 2 == 0 else "assistant", "content": u}
                for i, u in enumerate(utts)
            ]
            for utts in conv["utterances"]
        ]
        # A dialogue must end with the assistant (the learned side): drop a trailing user turn.
        messages = [m[:-1] if m[-1]["role"] == "user" else m for m in messages if len(m) > 1]
        tokenizer.chat_template = TRL_TEMPLATE
        with tempfile.TemporaryDirectory() as tmp:
            kw = _trainer_args(a, tmp, budget, len(messages))
            kw.pop("load_best_model_at_end")
            config = SFTConfig(
                **kw, assistant_only_loss=True, max_length=1024, dataset_num_proc=None
            )
            clock = _Clock(budget)
            trainer = SFTTrainer(
                model=model, args=config, train_dataset=Dataset.from_dict({"messages": messages}),
                processing_class=tokenizer, callbacks=[clock],
            )  # fmt: skip
            collate = _Counting(trainer.data_collator)
            trainer.data_collator = collate
            trainer.train()
        result.update(steps=clock.steps, reply_tokens=collate.tokens, seconds=clock.seconds)
        tt = False
    result["tok_s"] = result["reply_tokens"] / result["seconds"]
    if a.mode == "quality":
        result.update(validation_perplexity(model, valid_feats, token_type_ids=tt))
    return result


# --------------------------------------------------------------------------- driver
def _case_args(a: argparse.Namespace) -> list[str]:
    out = [
        f"--n_layer={a.n_layer}", f"--n_embd={a.n_embd}", f"--batch_size={a.batch_size}",
        f"--steps={a.steps}", f"--budget={a.budget}", f"--lr={a.lr}",
        f"--eval_dialogues={a.eval_dialogues}",
    ]  # fmt: skip
    if a.threads:
        out.append(f"--threads={a.threads}")
    out.append("--bf16" if a.bf16 else "--no-bf16")
    if not a.group_by_length:
        out.append("--no-group_by_length")
    return out


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, few steps: a smoke run")
    p.add_argument("--n_layer", type=int, default=None, help="layers (default 6; quick 2)")
    p.add_argument("--n_embd", type=int, default=None, help="width (default 384; quick 64)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="steps per speed run (default 24)")
    p.add_argument("--budget", type=float, default=None, help="seconds of training (quality)")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (all cases)")
    p.add_argument("--eval_dialogues", type=int, default=None, help="validation dialogues")
    p.add_argument("--repeats", type=int, default=None, help="interleaved speed rounds")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for DialogueTrainer/TRL (default: when the CPU has it)")  # fmt: skip
    p.add_argument("--group_by_length", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated: seed,ours,trl")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the cases in this process, not each in a fresh one (smoke tests)",
    )
    p.add_argument("--no-quality", dest="quality", action="store_false",
                   help="skip the same-budget perplexity runs")  # fmt: skip
    return p


def _defaults(a: argparse.Namespace) -> argparse.Namespace:
    quick = a.quick
    for key, full, small in (
        ("n_layer", 6, 2), ("n_embd", 384, 64), ("steps", 24, 4), ("budget", 60.0, 2.0),
        ("eval_dialogues", 100, 8), ("repeats", 1, 1),
    ):  # fmt: skip
        if getattr(a, key, None) is None:
            setattr(a, key, small if quick else full)
    if a.bf16 is None:  # native bf16 matmuls on this CPU, where bf16 autocast pays off
        from gpt2chat.loading import cpu_has_bf16

        a.bf16 = cpu_has_bf16()
    return a


def _worker_args(argv: list[str]) -> argparse.Namespace:
    p = _parser("worker")
    p.add_argument("--case", choices=CASES, required=True)
    p.add_argument("--mode", choices=("speed", "quality"), required=True)
    return _defaults(p.parse_args(argv))


def _worker(argv: list[str]) -> None:
    C.worker_result(run_case(_worker_args(argv)))


def _run(common: list[str], case: str, mode: str, in_process: bool) -> dict:
    args = [*common, f"--case={case}", f"--mode={mode}"]
    if in_process:
        return json.loads(json.dumps(run_case(_worker_args(args))))
    return C.run_worker(MODULE, args)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        _worker(argv[1:])
        return {}
    a = _defaults(_parser("python -m benchmarks.train").parse_args(argv))
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    common = _case_args(a)
    info = C.machine_info()
    print(C.format_machine(info))
    print(
        f"model: GPT-2 {a.n_layer} layers x {a.n_embd} wide (random init), real GPT-2 tokenizer; "
        f"DailyDialog; batch {a.batch_size}, {a.steps} steps per speed run, lr {a.lr}; "
        f"bf16 autocast (ours, TRL): {a.bf16}; length-grouped: {a.group_by_length}; "
        f"threads {a.threads or 'default'}\n"
    )

    def speed(case):
        return lambda r: _run(common, case, "speed", a.in_process)

    sp = C.interleave({c: speed(c) for c in cases}, a.repeats)
    quality = {}
    if a.quality:
        for c in cases:
            quality[c] = _run(common, c, "quality", a.in_process)
    rows, result = [], {"speed": {}, "quality": quality, "machine": info, "args": vars(a)}
    for c in cases:
        m = sp[c]
        tok_s = m.median("tok_s")
        q = quality.get(c, {})
        rows.append([
            LABELS[c], int(m.median("steps")), int(m.median("reply_tokens")), m.median("seconds"),
            tok_s, m.spread("tok_s"), q.get("steps", float("nan")),
            q.get("eval_perplexity", float("nan")),
        ])  # fmt: skip
        result["speed"][c] = {"tok_s": tok_s, "runs": m.runs}
    print(C.format_table(
        ["case", "steps", "reply tokens", "seconds", "reply tok/s", "tok/s range",
         f"steps in {a.budget:g} s", f"val ppl after {a.budget:g} s"], rows,
    ))  # fmt: skip
    parts = []
    if "ours" in cases:
        ours = result["speed"]["ours"]["tok_s"]
        for c, name in (("seed", "seed loop"), ("trl", "TRL SFTTrainer")):
            if c in cases:
                r = ours / result["speed"][c]["tok_s"]
                result[f"ratio_{c}"] = r
                ppl = ""
                if "ours" in quality and c in quality:
                    ppl = (
                        f" (val ppl {quality['ours']['eval_perplexity']:.1f} vs "
                        f"{quality[c]['eval_perplexity']:.1f})"
                    )
                parts.append(f"{r:.2f}x {name}{ppl}")
    print("\nratio: DialogueTrainer reply tokens/s = " + "; ".join(parts))
    return result


if __name__ == "__main__":
    main()
