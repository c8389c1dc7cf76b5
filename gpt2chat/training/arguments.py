"""The argument dataclasses shared by ``gpt2chat prepare`` / ``train`` / ``eval``
(:class:`ModelArguments`, :class:`DataArguments`; :class:`LoraArguments` and
:class:`DialogueTrainingArguments` re-exported from :mod:`.training_arguments`) and
``--config_overrides`` applied to a config.

Parsed with :class:`transformers.HfArgumentParser`; every field has a ``help`` text and is
validated in ``__post_init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..features import REPLY_SPEAKERS
from .training_arguments import LORA_TARGET_MODULES, DialogueTrainingArguments, LoraArguments

DEFAULT_DATASETS = "daily_dialog,empathetic_dialogues,persona_chat,blended_skill_talk"
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Split names the seed's ``--train_prefix`` / ``--valid_prefix`` used, and ours.
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}

__all__ = [
    "DEFAULT_DATASETS",
    "LORA_TARGET_MODULES",
    "DataArguments",
    "DialogueTrainingArguments",
    "LoraArguments",
    "ModelArguments",
    "apply_config_overrides",
]


def _override_items(text: str) -> list[tuple[str, str]]:
    """``'n_layer=2, n_embd=64'`` -> ``[("n_layer", "2"), ("n_embd", "64")]``; a clear error
    for an item that is not ``key=value``."""
    items = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or "=" in value:
            raise ValueError(
                f"--config_overrides: {item!r} is not key=value; write e.g. 'n_layer=2,n_embd=64'."
            )
        items.append((key.strip(), value.strip()))
    return items


def apply_config_overrides(config, text: str):
    """Apply ``--config_overrides`` (``'n_layer=2,n_embd=64'``) to a ``PretrainedConfig`` with
    its :meth:`~transformers.PretrainedConfig.update_from_string` (values take the type of the
    field they replace: int, float, ``true``/``false``, string); a field unset (``None``, e.g.
    GPT-2's ``n_inner``) takes the value as JSON, else as a string. Returns ``config``.

    Raises:
        ValueError: naming ``--config_overrides``, for an item that is not ``key=value``, keys
            that are not fields of the config, or a value of the wrong type.
    """
    import json

    items = _override_items(text)
    unknown = [k for k, _ in items if not hasattr(config, k)]
    if unknown:
        raise ValueError(
            f"--config_overrides: {unknown} are not fields of {type(config).__name__}."
        )
    typed = [(k, v) for k, v in items if getattr(config, k) is not None]
    for key, value in items:
        if getattr(config, key) is None:
            try:
                setattr(config, key, json.loads(value))
            except ValueError:
                setattr(config, key, value)
    if typed:
        try:
            config.update_from_string(",".join(f"{k}={v}" for k, v in typed))
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"--config_overrides {text!r}: {err}. Each value must have the type of the "
                f"{type(config).__name__} field it replaces (int, float, true/false, string)."
            ) from err
    return config


@dataclass
class ModelArguments:
    """Which model / tokenizer to start from and the dialogue format's special tokens."""

    model_name_or_path: str = field(
        default="gpt2",
        metadata={
            "help": "Hub id or local folder of the base model (gpt2, gpt2-medium, "
            "microsoft/DialoGPT-small, a checkpoint folder...), or a .gguf file. "
            "Seed name: --model_type.",
            "aliases": ["--model_type"],
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer to use if not the model's (a folder with tokenizer files, or "
            "GPT-2's raw vocab.json + merges.txt)."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={
            "help": "Name of a .gguf file inside --model_name_or_path (a folder or Hub repo). A "
            "--model_name_or_path that is itself a .gguf file needs no --gguf_file. The weights "
            "are dequantized to --torch_dtype."
        },
    )
    from_scratch_config: str | None = field(
        default=None,
        metadata={
            "help": "Train from scratch: a folder with a config.json, or a .json config file; the "
            "model is randomly initialised from it (the tokenizer still comes from "
            "--tokenizer_name_or_path or --model_name_or_path)."
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "With --from_scratch_config: comma-separated key=value pairs that override "
            "the config, e.g. 'n_layer=2,n_embd=64,n_head=2'."
        },
    )
    torch_dtype: str | None = field(
        default=None,
        metadata={
            "help": "dtype the weights are loaded in: float32, bfloat16, float16 or auto (the "
            "checkpoint's). Unset: float32 (train in mixed precision with --bf16/--fp16).",
            "choices": list(TORCH_DTYPES),
        },
    )
    use_token_type_ids: str = field(
        default="false",
        metadata={
            "help": "Feed token_type_ids (the speaker of each position) to the model, as the "
            "original recipe did: 'true' (GPT-2 takes them), 'false' (the default: vLLM, "
            "llama.cpp and transformers' pipeline feed input_ids only, so the model chats the "
            "same there) or 'auto' (when the model's forward accepts them). Recorded in the "
            "saved chat_config.json; chat, serve, eval and export follow it.",
            "choices": ["auto", "true", "false"],
        },
    )
    bos_token: str = field(default="<bos>", metadata={"help": "Start-of-dialogue token."})
    sp1_token: str = field(default="<sp1>", metadata={"help": "First speaker's (user's) token."})
    sp2_token: str = field(default="<sp2>", metadata={"help": "Second speaker's (bot's) token."})

    def __post_init__(self):
        if not self.model_name_or_path:
            raise ValueError("--model_name_or_path must not be empty.")
        if self.torch_dtype is not None and self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(
                f"--torch_dtype must be one of {', '.join(TORCH_DTYPES)}, got {self.torch_dtype!r}."
            )
        if isinstance(self.use_token_type_ids, bool):
            self.use_token_type_ids = str(self.use_token_type_ids).lower()
        if str(self.use_token_type_ids).lower() not in ("auto", "true", "false"):
            raise ValueError(
                "--use_token_type_ids must be 'auto', 'true' or 'false', got "
                f"{self.use_token_type_ids!r}."
            )
        self.use_token_type_ids = str(self.use_token_type_ids).lower()
        if self.config_overrides and not self.from_scratch_config:
            raise ValueError(
                "--config_overrides only applies to a model built from scratch: add "
                "--from_scratch_config <folder or config.json>."
            )
        if self.config_overrides:
            _override_items(self.config_overrides)  # the syntax; the keys once the config loads
        if self.from_scratch_config is not None:
            from pathlib import Path

            if not Path(self.from_scratch_config).exists():
                raise ValueError(
                    f"--from_scratch_config {self.from_scratch_config} does not exist: pass a "
                    "folder holding config.json or a .json config file."
                )

    @property
    def token_type_ids_choice(self) -> bool | None:
        """``None`` for auto-detection, else the forced choice."""
        return {"auto": None, "true": True, "false": False}[self.use_token_type_ids]


@dataclass
class DataArguments:
    """Which dialogues to train on and how to turn them into examples."""

    datasets: str = field(
        default=DEFAULT_DATASETS,
        metadata={
            "help": "Comma-separated dataset names: daily_dialog, empathetic_dialogues, "
            "persona_chat, blended_skill_talk, chitchat, jsonl."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder with the datasets' files (one sub-folder per dataset name, e.g. "
            "data/daily_dialog/), or a .jsonl file for --datasets jsonl. Unset: download."
        },
    )
    train_frac: float | None = field(
        default=None,
        metadata={
            "help": "Re-split as the original scripts did: merge all official splits, the first "
            "train_frac of the dialogues for training, the rest for validation (e.g. 0.85). "
            "Unset: the official splits."
        },
    )
    validation_split_percentage: int = field(
        default=5,
        metadata={
            "help": "When --data_dir is one file (your .jsonl, which would otherwise be every "
            "split) and --train_frac is unset: its last N %% of dialogues are the validation "
            "split and the rest the train split, so training never evaluates on the dialogues "
            "it learns from (as run_clm.py does). 0: every split is the whole file."
        },
    )
    max_turns: int = field(
        default=5, metadata={"help": "Utterances per example, the reply included."}
    )
    max_len: int = field(
        default=1024,
        metadata={
            "help": "Maximum tokens per example: at most the model's context; the default 1024 "
            "shrinks to a smaller context."
        },
    )
    reply_speakers: str = field(
        default="sp2",
        metadata={
            "help": "'sp2': only the second speaker's turns are replies (original recipe); "
            "'both': every turn is a reply, roles swapped so the replier is <sp2>."
        },
    )
    with_persona: bool = field(
        default=False,
        metadata={"help": "Put Persona-Chat / BST persona sentences after <bos>."},
    )
    normalize_text: bool = field(
        default=True,
        metadata={"help": "Turn tokenised text ('Hi , there .') into natural text."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for the Dataset.map steps."}
    )
    prepared_dir: str | None = field(
        default=None,
        metadata={
            "help": "Train on features saved by `gpt2chat prepare --output_dir DIR` instead of "
            "loading --datasets (DIR/<split>/ and DIR/tokenizer/)."
        },
    )
    train_split: str = field(
        default="train",
        metadata={
            "help": "Split to train on. Seed name: --train_prefix.",
            "aliases": ["--train_prefix"],
        },
    )
    eval_split: str = field(
        default="validation",
        metadata={
            "help": "Split to evaluate on every epoch ('valid' means 'validation'). Seed name: "
            "--valid_prefix.",
            "aliases": ["--valid_prefix"],
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only the first N training examples (quick runs, debugging)."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Keep only the first N evaluation examples (quick runs, debugging)."},
    )

    def __post_init__(self):
        from ..data import OFFICIAL_SPLITS, available_datasets

        self.train_split = SPLIT_ALIASES.get(self.train_split, self.train_split)
        self.eval_split = SPLIT_ALIASES.get(self.eval_split, self.eval_split)
        for arg, value in (("train_split", self.train_split), ("eval_split", self.eval_split)):
            if value not in OFFICIAL_SPLITS:
                raise ValueError(
                    f"--{arg} must be one of {', '.join(OFFICIAL_SPLITS)} (or 'valid'), got "
                    f"{value!r}."
                )
        for arg in ("max_train_samples", "max_eval_samples"):
            if getattr(self, arg) is not None and getattr(self, arg) < 1:
                raise ValueError(f"--{arg} must be >= 1, got {getattr(self, arg)}.")
        if self.prepared_dir is not None:
            from pathlib import Path

            if not (Path(self.prepared_dir) / "tokenizer").is_dir():
                raise ValueError(
                    f"--prepared_dir {self.prepared_dir} is not a folder written by `gpt2chat "
                    "prepare` (it has no tokenizer/ sub-folder). Run `gpt2chat prepare "
                    f"--output_dir {self.prepared_dir}` first."
                )

        names = self.dataset_names
        if not names:
            raise ValueError("--datasets is empty: name at least one dataset.")
        unknown = [n for n in names if n not in available_datasets()]
        if unknown:
            raise ValueError(
                f"--datasets: unknown dataset(s) {unknown}. Available: "
                f"{', '.join(available_datasets())}."
            )
        if self.train_frac is not None and not 0.0 < self.train_frac < 1.0:
            raise ValueError(f"--train_frac must be between 0 and 1, got {self.train_frac}.")
        if (
            isinstance(self.validation_split_percentage, bool)
            or not isinstance(self.validation_split_percentage, int)
            or not 0 <= self.validation_split_percentage < 100
        ):
            raise ValueError(
                "--validation_split_percentage must be an integer from 0 to 99, got "
                f"{self.validation_split_percentage!r}."
            )
        if self.max_turns < 1:
            raise ValueError(f"--max_turns must be >= 1, got {self.max_turns}.")
        if self.max_len < 4:
            raise ValueError(f"--max_len must be >= 4, got {self.max_len}.")
        if self.reply_speakers not in REPLY_SPEAKERS:
            raise ValueError(
                f"--reply_speakers must be one of {REPLY_SPEAKERS}, got {self.reply_speakers!r}."
            )
        if self.data_dir is not None:
            from pathlib import Path

            if not Path(self.data_dir).exists():
                raise ValueError(
                    f"--data_dir {self.data_dir} does not exist. Point it at the folder holding "
                    "the datasets' files, or leave it unset to download them."
                )

    @property
    def render_kwargs(self) -> dict:
        """The example-rendering options, as keyword arguments of
        :func:`gpt2chat.prepare_dataset` / :func:`gpt2chat.evaluate_model`."""
        return {
            "max_turns": self.max_turns,
            "max_len": self.max_len,
            "reply_speakers": self.reply_speakers,
            "with_persona": self.with_persona,
        }

    @property
    def single_file(self) -> bool:
        """``--data_dir`` is one file (a ``.jsonl``): the data of every split unless re-split."""
        from pathlib import Path

        return self.data_dir is not None and Path(self.data_dir).is_file()

    def train_frac_for(self, split: str) -> float | None:
        """The ``train_frac`` that :func:`gpt2chat.load_dialogues` gets for ``split``:
        ``--train_frac`` when given; else, for the train and validation splits of a single-file
        ``--data_dir``, ``1 - validation_split_percentage / 100``; else ``None`` (the official
        splits, or the whole file)."""
        if self.train_frac is not None:
            return self.train_frac
        if (
            split in ("train", "validation")
            and self.single_file
            and self.validation_split_percentage
        ):
            return 1.0 - self.validation_split_percentage / 100.0
        return None

    @property
    def dataset_names(self) -> list[str]:
        return [n.strip() for n in self.datasets.split(",") if n.strip()]
