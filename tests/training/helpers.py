"""Shared pieces of the training, evaluation and CLI tests: tiny models, the suite's data, arguments."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from ..conftest import tiny_gpt2
from ..fixtures import corpus_dir, load_tokenizer


def daily_dialog_dir() -> Path:
    """The suite's DailyDialog-format folder (see tests/fixtures.py)."""
    return corpus_dir() / "dailydialog"


@functools.cache
def _daily_dialog_split(split: str):
    from gpt2chat import load_dialogues

    return load_dialogues("daily_dialog", split, data_dir=str(daily_dialog_dir()))


def daily_dialogues(split: str = "validation", n: int = 40, start: int = 0):
    """``n`` dialogues of the suite's DailyDialog-format ``split``, from ``start``."""
    return _daily_dialog_split(split).select(range(start, start + n))


def gpt2_tokenizer():
    """The suite's GPT-2-format tokenizer (fresh, not extended)."""
    return load_tokenizer()


def tiny_model(n_positions: int = 128, seed: int = 0, dropout: float = 0.0):
    """The tiny random GPT-2 of tests/conftest.py, without dropout unless asked."""
    model = tiny_gpt2(n_positions=n_positions, seed=seed)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = dropout
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    return model


def tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)


def save_tiny_model(folder: Path, n_positions: int = 128) -> Path:
    """A tiny random GPT-2 and the suite's (not extended) GPT-2-format tokenizer in ``folder``."""
    tiny_model(n_positions=n_positions).save_pretrained(str(folder))
    gpt2_tokenizer().save_pretrained(str(folder))
    return folder


def write_jsonl(path: Path, dialogues) -> Path:
    """Real dialogues as a gpt2chat JSON-lines file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"utterances": d}) + "\n" for d in dialogues["utterances"]))
    return path


def training_args(output_dir, **overrides):
    """Tiny, quiet, CPU-only :class:`DialogueTrainingArguments` for tests."""
    from gpt2chat import DialogueTrainingArguments

    values = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "learning_rate": 3e-3,
        "num_train_epochs": 1,
        "logging_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
        "eval_strategy": "no",
        "load_best_model_at_end": False,
        "dataloader_pin_memory": False,
    }
    values.update(overrides)
    return DialogueTrainingArguments(**values)


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def manual_perplexity(model, features, use_token_type_ids: bool) -> tuple[float, int]:
    """exp(sum of NLL over all label tokens / their number), one example at a time."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for ex in features:
            ids = torch.tensor([ex["input_ids"]])
            kwargs = (
                {"token_type_ids": torch.tensor([ex["token_type_ids"]])}
                if use_token_type_ids
                else {}
            )
            logits = model(input_ids=ids, **kwargs).logits[0, :-1].double()
            labels = torch.tensor(ex["labels"][1:])
            keep = labels != -100
            logp = torch.log_softmax(logits, dim=-1)[keep, labels[keep]]
            total -= float(logp.sum())
            count += int(keep.sum())
    return float(torch.exp(torch.tensor(total / count, dtype=torch.float64))), count
