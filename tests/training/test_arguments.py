"""The argument dataclasses: the seed recipe's defaults, the seed's argument names, validation."""

from __future__ import annotations

import os

import pytest
from transformers import HfArgumentParser

from gpt2chat.training.arguments import (
    DataArguments,
    DialogueTrainingArguments,
    LoraArguments,
    ModelArguments,
    apply_config_overrides,
)

ALL = (ModelArguments, DataArguments, LoraArguments, DialogueTrainingArguments)


def parse(argv):
    return HfArgumentParser(ALL).parse_args_into_dataclasses(args=argv)


def test_defaults_are_the_seed_recipe():
    args = DialogueTrainingArguments(use_cpu=True)
    assert args.learning_rate == 2e-5
    assert args.warmup_steps == 0.1 and args.get_warmup_steps(100) == 10  # a ratio
    assert args.per_device_train_batch_size == 8 and args.num_train_epochs == 10
    assert args.seed == 0
    assert args.lr_scheduler_type.value == "polynomial" and args.lr_scheduler_kwargs == {
        "power": 2.0
    }
    assert args.eval_strategy.value == "epoch" and args.save_strategy.value == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "loss"
    assert args.greater_is_better is False
    assert args.report_to == ["tensorboard"]
    assert args.output_dir == "saved_models"


def test_seed_argument_names_are_aliases():
    model, data, _, train = parse(
        [
            "--model_type", "gpt2-medium", "--lr", "1e-4", "--batch_size", "4", "--num_epochs", "3",
            "--warmup_ratio", "0.2", "--ckpt_dir", "out", "--ckpt_name", "checkpoint-10",
            "--num_workers", "2", "--train_prefix", "train", "--valid_prefix", "valid",
            "--bos_token", "<s>", "--sp1_token", "<u>", "--sp2_token", "<b>", "--max_len", "256",
            "--max_turns", "3", "--seed", "7", "--data_dir", ".", "--use_cpu",
        ]
    )  # fmt: skip
    assert model.model_name_or_path == "gpt2-medium"
    assert (model.bos_token, model.sp1_token, model.sp2_token) == ("<s>", "<u>", "<b>")
    assert (train.learning_rate, train.per_device_train_batch_size, train.num_train_epochs) == (
        1e-4,
        4,
        3,
    )
    assert train.warmup_steps == 0.2 and train.output_dir == "out" and train.seed == 7
    assert train.dataloader_num_workers == 2
    assert train.resume_from_checkpoint == os.path.join("out", "checkpoint-10")
    assert (data.train_split, data.eval_split) == ("train", "validation")
    assert (data.max_len, data.max_turns, data.data_dir) == (256, 3, ".")


def test_pin_memory_only_when_a_gpu_trains(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    *_, train = parse(["--output_dir", "out"])
    assert train.dataloader_pin_memory is False  # no "pin_memory ... no accelerator" warning
    *_, train = parse(["--output_dir", "out", "--dataloader_pin_memory", "true"])
    assert train.dataloader_pin_memory is True  # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    *_, train = parse(["--output_dir", "out", "--use_cpu"])
    assert train.dataloader_pin_memory is False


def test_gpu_selects_cuda_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    import torch

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    DialogueTrainingArguments(gpu="1", use_cpu=True)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    with pytest.raises(ValueError, match="--gpu must be CUDA device indices"):
        DialogueTrainingArguments(gpu="cuda:0", use_cpu=True)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: DataArguments(datasets="daily_dialog,nope"),
            r"--datasets: unknown dataset\(s\) \['nope'\]",
        ),
        (
            lambda: DataArguments(data_dir="/no/such/folder"),
            "--data_dir /no/such/folder does not exist",
        ),
        (lambda: DataArguments(eval_split="dev2"), "--eval_split must be one of"),
        (lambda: DataArguments(prepared_dir="."), "not a folder written by `gpt2chat prepare`"),
        (lambda: DataArguments(max_train_samples=0), "--max_train_samples must be >= 1"),
        (
            lambda: DataArguments(validation_split_percentage=100),
            "--validation_split_percentage must be an integer from 0 to 99, got 100",
        ),
        (lambda: ModelArguments(torch_dtype="float8"), "--torch_dtype must be one of"),
        (lambda: ModelArguments(use_token_type_ids="maybe"), "--use_token_type_ids must be"),
        (lambda: ModelArguments(from_scratch_config="/no/config.json"), "does not exist"),
        (lambda: LoraArguments(lora_r=0), "--lora_r must be >= 1"),
        (lambda: LoraArguments(lora_dropout=1.0), r"--lora_dropout must be in \[0, 1\)"),
        (
            lambda: DialogueTrainingArguments(learning_rate=0, use_cpu=True),
            r"--learning_rate \(--lr\) must be > 0",
        ),
        (
            lambda: DialogueTrainingArguments(
                ckpt_name="c", resume_from_checkpoint="d", use_cpu=True
            ),
            "--ckpt_name and --resume_from_checkpoint both",
        ),
    ],
)
def test_bad_values_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_overrides_syntax():
    from transformers import GPT2Config

    with pytest.raises(ValueError, match="is not key=value"):
        apply_config_overrides(GPT2Config(), "n_layer")


def test_config_overrides_apply_with_update_from_string():
    """PretrainedConfig.update_from_string types each value by the field it replaces; an unset
    field takes JSON; every error names --config_overrides."""
    from transformers import GPT2Config

    config = apply_config_overrides(
        GPT2Config(), "n_layer=2, n_embd=64,scale_attn_weights=false,resid_pdrop=0.5,n_inner=96"
    )
    assert (config.n_layer, config.n_embd, config.resid_pdrop, config.n_inner) == (2, 64, 0.5, 96)
    assert config.scale_attn_weights is False
    assert apply_config_overrides(GPT2Config(), "summary_type=mean").summary_type == "mean"
    with pytest.raises(ValueError, match="is not key=value"):
        apply_config_overrides(GPT2Config(), "n_layer")
    with pytest.raises(ValueError, match=r"\['n_layers'\] are not fields of GPT2Config"):
        apply_config_overrides(GPT2Config(), "n_layers=1")
    with pytest.raises(ValueError, match=r"--config_overrides 'n_layer=two'.*int, float"):
        apply_config_overrides(GPT2Config(), "n_layer=two")
    with pytest.raises(ValueError, match="is not key=value"):
        ModelArguments(from_scratch_config=".", config_overrides="n_layer")


def test_a_single_file_is_split_for_train_and_validation(tmp_path):
    file = tmp_path / "chats.jsonl"
    file.write_text("{}\n")
    args = DataArguments(datasets="jsonl", data_dir=str(file))
    assert args.single_file
    assert args.train_frac_for("train") == args.train_frac_for("validation") == 0.95
    assert args.train_frac_for("test") is None  # a test file is the whole file
    assert (
        DataArguments(datasets="jsonl", data_dir=str(file), train_frac=0.8).train_frac_for("test")
        == 0.8
    )  # the explicit re-split wins (load_dialogues then refuses the test split)
    off = DataArguments(datasets="jsonl", data_dir=str(file), validation_split_percentage=0)
    assert off.train_frac_for("train") is None
    folder = DataArguments(datasets="jsonl", data_dir=str(tmp_path))
    assert not folder.single_file and folder.train_frac_for("validation") is None
