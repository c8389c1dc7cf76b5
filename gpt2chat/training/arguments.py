"""Argument dataclasses shared by ``gpt2chat prepare`` / ``train`` / ``eval``.

Parsed with :class:`transformers.HfArgumentParser`; every field has a ``help`` text and is
validated in ``__post_init__``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from ..features import REPLY_SPEAKERS

DEFAULT_DATASETS = "daily_dialog,empathetic_dialogues,persona_chat,blended_skill_talk"
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: Split names the seed's ``--train_prefix`` / ``--valid_prefix`` used, and ours.
SPLIT_ALIASES = {"valid": "validation", "dev": "validation", "val": "validation"}

__all__ = [
    "DEFAULT_DATASETS",
    "DataArguments",
    "DialogueTrainingArguments",
    "LoraArguments",
    "ModelArguments",
    "parse_config_overrides",
]


def parse_config_overrides(text: str) -> dict[str, object]:
    """``'n_layer=2,n_embd=64'`` -> ``{"n_layer": 2, "n_embd": 64}`` (ints, floats, bools kept)."""
    out: dict[str, object] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"--config_overrides: {item!r} is not key=value; write e.g. 'n_layer=2,n_embd=64'."
            )
        value = value.strip()
        parsed: object = value
        if value.lower() in ("true", "false"):
            parsed = value.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    parsed = cast(value)
                    break
                except ValueError:
                    continue
        out[key.strip()] = parsed
    return out


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
            parse_config_overrides(self.config_overrides)
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


#: LoRA target modules per ``config.model_type`` (anything else: every linear layer).
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


@dataclass
class LoraArguments:
    """Parameter-efficient fine-tuning with LoRA (``peft``)."""

    use_peft: bool = field(
        default=False,
        metadata={"help": "Train a LoRA adapter instead of all the weights."},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default="auto",
        metadata={
            "help": "Comma-separated module names to adapt, 'all-linear', or 'auto': GPT-2 "
            "c_attn,c_proj,c_fc; Llama/Mistral/Qwen2 the q/k/v/o and MLP projections; other "
            "architectures every linear layer."
        },
    )
    lora_train_speaker_embeddings: bool = field(
        default=True,
        metadata={
            "help": "Also train the embedding rows of the speaker tokens (<bos>, <sp1>, <sp2>; "
            "peft trainable_token_indices), so the new tokens are learned."
        },
    )
    merge_adapter: bool = field(
        default=False,
        metadata={
            "help": "At the end of training, also write the adapter merged into the base model as "
            "a plain model to <output_dir>/merged (`gpt2chat export` does the same later)."
        },
    )

    def __post_init__(self):
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be >= 1, got {self.lora_r}.")
        if self.lora_alpha <= 0:
            raise ValueError(f"--lora_alpha must be > 0, got {self.lora_alpha}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if not self.lora_target_modules or not self.lora_target_modules.strip(", "):
            raise ValueError(
                "--lora_target_modules is empty: use 'auto', 'all-linear' or module names."
            )

    def target_modules_for(self, model_type: str | None) -> list[str] | str:
        """The modules to adapt for a model of ``config.model_type``."""
        value = self.lora_target_modules.strip()
        if value == "auto":
            targets = LORA_TARGET_MODULES.get(model_type or "")
            return list(targets) if targets else "all-linear"
        if value == "all-linear":
            return value
        return [m.strip() for m in value.split(",") if m.strip()]


@dataclass
class DialogueTrainingArguments(TrainingArguments):
    """:class:`transformers.TrainingArguments` with the seed recipe's defaults.

    Changed from ``TrainingArguments``' defaults (each also accepted under the seed's name):

    ================================  ==========================  ==========================
    argument                          default here                TrainingArguments default
    ================================  ==========================  ==========================
    ``output_dir`` (``--ckpt_dir``)   ``saved_models``            ``trainer_output``
    ``learning_rate`` (``--lr``)      ``2e-5``                    ``5e-5``
    ``warmup_steps``                  ``0.1`` (a ratio of the     ``0``
    (``--warmup_ratio``)              total steps)
    ``num_train_epochs``              ``10``                      ``3``
    (``--num_epochs``)
    ``seed``                          ``0``                       ``42``
    ``lr_scheduler_type``             ``polynomial``              ``linear``
    ``lr_scheduler_kwargs``           ``{"power": 2.0}``          ``None``
    ``eval_strategy``                 ``epoch``                   ``no``
    ``save_strategy``                 ``epoch``                   ``steps``
    ``load_best_model_at_end``        ``True``                    ``False``
    ``metric_for_best_model``         ``loss`` (token-weighted    ``None``
                                      validation loss)
    ``save_total_limit``              ``2`` (the best and the     ``None`` (all)
                                      last checkpoint)
    ``logging_steps``                 ``50``                      ``500``
    ``report_to``                     ``tensorboard``             ``none``
    ``ddp_find_unused_parameters``    ``False`` (every parameter  ``None`` (``True`` with
                                      gets a gradient)            DDP)
    ================================  ==========================  ==========================

    ``per_device_train_batch_size`` (``--batch_size``, 8) and ``dataloader_num_workers``
    (``--num_workers``, 0) keep their defaults, under the seed's names too. Added:
    ``gpu`` (the seed's ``--gpu``: sets ``CUDA_VISIBLE_DEVICES``) and ``ckpt_name`` (the seed's
    ``--ckpt_name``: resume from ``<output_dir>/<ckpt_name>``).
    """

    output_dir: str | None = field(
        default="saved_models",
        metadata={
            "help": "Where checkpoints, logs and the final model are written. Seed name: --ckpt_dir.",
            "aliases": ["--ckpt_dir"],
        },
    )
    per_device_train_batch_size: int = field(
        default=8,
        metadata={
            "help": "Batch size per device for training. Seed name: --batch_size.",
            "aliases": ["--batch_size"],
        },
    )
    num_train_epochs: float = field(
        default=10.0,
        metadata={"help": "Training epochs. Seed name: --num_epochs.", "aliases": ["--num_epochs"]},
    )
    learning_rate: float = field(
        default=2e-5,
        metadata={"help": "Peak learning rate (AdamW). Seed name: --lr.", "aliases": ["--lr"]},
    )
    lr_scheduler_type: SchedulerType | str = field(
        default="polynomial",
        metadata={"help": "Learning-rate schedule after warmup (the seed: polynomial, power 2)."},
    )
    lr_scheduler_kwargs: dict | str | None = field(
        default_factory=lambda: {"power": 2.0},
        metadata={"help": "Extra schedule arguments as JSON, e.g. '{\"power\": 2.0}'."},
    )
    warmup_steps: float = field(
        default=0.1,
        metadata={
            "help": "Warmup: a float in [0, 1) is a ratio of the total steps, an integer >= 1 a "
            "number of steps. Seed name: --warmup_ratio.",
            "aliases": ["--warmup_ratio"],
        },
    )
    logging_steps: float = field(
        default=50, metadata={"help": "Log the training loss every N optimizer steps."}
    )
    report_to: None | str | list[str] = field(  # noqa: RUF036 (HfArgumentParser needs this order)
        default="tensorboard",
        metadata={
            "help": "Where logs go: tensorboard (under <output_dir>/runs), none, all, wandb..."
        },
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."}
    )
    save_strategy: SaveStrategy | str = field(
        default="epoch", metadata={"help": "When to save a checkpoint: no, steps, epoch or best."}
    )
    save_total_limit: int | None = field(
        default=2,
        metadata={"help": "Checkpoints kept on disk (the best one is always kept)."},
    )
    load_best_model_at_end: bool = field(
        default=True,
        metadata={
            "help": "Reload the checkpoint with the best --metric_for_best_model at the end."
        },
    )
    metric_for_best_model: str | None = field(
        default="loss",
        metadata={"help": "Metric that picks the best checkpoint (the token-weighted eval loss)."},
    )
    seed: int = field(default=0, metadata={"help": "Random seed (set before the model is built)."})
    dataloader_num_workers: int = field(
        default=0,
        metadata={
            "help": "Data-loading worker processes. Seed name: --num_workers.",
            "aliases": ["--num_workers"],
        },
    )
    dataloader_pin_memory: bool | None = field(
        default=None,
        metadata={
            "help": "Pin batches in page-locked memory for faster GPU copies (default: when "
            "training on a GPU; on CPU it does nothing but warn)."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "DDP: look for parameters without gradients every step (slower; only needed "
            "for models with unused branches)."
        },
    )
    gpu: str | None = field(
        default=None,
        metadata={
            "help": "The seed's --gpu: CUDA device index(es), e.g. '0' or '0,1'; sets "
            "CUDA_VISIBLE_DEVICES before torch initialises CUDA. For several GPUs prefer "
            "torchrun / accelerate launch."
        },
    )
    ckpt_name: str | None = field(
        default=None,
        metadata={
            "help": "The seed's --ckpt_name: resume from the checkpoint folder <output_dir>/NAME "
            "(e.g. checkpoint-500)."
        },
    )

    def __post_init__(self):
        if self.gpu is not None and str(self.gpu).strip() != "":
            _select_gpus(str(self.gpu))
        if self.ckpt_name:
            if self.resume_from_checkpoint:
                raise ValueError(
                    "--ckpt_name and --resume_from_checkpoint both name a checkpoint: pass one."
                )
            self.resume_from_checkpoint = os.path.join(self.output_dir or "", self.ckpt_name)
        if self.dataloader_pin_memory is None:
            import torch

            self.dataloader_pin_memory = torch.cuda.is_available() and not self.use_cpu
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate (--lr) must be > 0, got {self.learning_rate}.")
        if self.warmup_steps < 0:
            raise ValueError(
                f"--warmup_steps (--warmup_ratio) must be >= 0, got {self.warmup_steps}."
            )
        super().__post_init__()


def _select_gpus(spec: str) -> None:
    devices = [d.strip() for d in spec.split(",") if d.strip()]
    if not all(d.isdigit() for d in devices):
        raise ValueError(f"--gpu must be CUDA device indices such as '0' or '0,1', got {spec!r}.")
    value = ",".join(devices)
    import torch

    if torch.cuda.is_initialized():
        if os.environ.get("CUDA_VISIBLE_DEVICES") != value:
            raise ValueError(
                f"--gpu {spec}: CUDA is already initialised in this process, too late to select "
                "devices; set CUDA_VISIBLE_DEVICES before starting Python instead."
            )
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = value
