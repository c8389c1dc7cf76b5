"""``gpt2chat train``: fine-tune a causal LM on dialogues (the seed's ``train.py``).

Also what every process of ``torchrun ... -m gpt2chat train`` and
``accelerate launch ... -m gpt2chat train`` runs.
"""

from __future__ import annotations

from . import parse

DESCRIPTION = (
    "Fine-tune GPT-2 (or any causal LM) into a chatbot with transformers.Trainer. Every argument "
    "of the original scripts is accepted under its old name (--model_type, --lr, --batch_size, "
    "--num_epochs, --ckpt_dir, --ckpt_name, --gpu, ...); see the README seed-argument map. Several "
    "processes: torchrun --nproc_per_node N -m gpt2chat train ..., or accelerate launch "
    "[--config_file examples/accelerate/<file>.yaml] -m gpt2chat train ..."
)


def cmd_train(argv: list[str]) -> int:
    from ..training.arguments import (
        DataArguments,
        DialogueTrainingArguments,
        LoraArguments,
        ModelArguments,
    )
    from ..training.run import run_training

    model_args, data_args, lora_args, training_args = parse(
        (ModelArguments, DataArguments, LoraArguments, DialogueTrainingArguments),
        argv,
        "gpt2chat train",
        DESCRIPTION,
    )
    summary = run_training(model_args, data_args, lora_args, training_args)
    if summary.is_main_process:
        print(summary.format())
    return 0
