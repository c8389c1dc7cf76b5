"""How a training run goes: :class:`DialogueTrainingArguments` (``TrainingArguments`` with the
seed recipe's defaults and the seed's argument names) and :class:`LoraArguments` (``peft``).

Parsed with :class:`transformers.HfArgumentParser`; re-exported by
:mod:`gpt2chat.training.arguments`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

__all__ = ["LORA_TARGET_MODULES", "DialogueTrainingArguments", "LoraArguments"]


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
