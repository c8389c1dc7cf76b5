"""DialogueTrainer on a tiny random GPT-2 with the real GPT-2 tokenizer and real DailyDialog data."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from gpt2chat import DialogueTrainer, render_messages
from gpt2chat.training import DataArguments

from .helpers import (
    daily_dialogues,
    gpt2_tokenizer,
    manual_perplexity,
    state_of,
    tiny_model,
    training_args,
)

MAX_LEN = 48


class CorruptAfterEpoch(TrainerCallback):
    """Adds large noise to every weight at the end of an epoch, so a later checkpoint is worse."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if round(state.epoch) == self.epoch:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """3 epochs of 4 steps, evaluated before training and after every epoch; the weights are
    corrupted after epoch 2, so the best checkpoint is epoch 1's (step 4)."""
    out = tmp_path_factory.mktemp("run")
    dialogues = daily_dialogues("validation", n=24)
    trainer = DialogueTrainer(
        tiny_model(),
        training_args(
            out,
            num_train_epochs=3,
            eval_strategy="epoch",
            save_strategy="epoch",
            load_best_model_at_end=True,
            eval_on_start=True,
            save_total_limit=2,
            learning_rate=1e-2,
        ),
        train_dataset=dialogues.select(range(16)),
        eval_dataset=dialogues.select(range(16, 24)),
        processing_class=gpt2_tokenizer(),
        data_args=DataArguments(
            datasets="daily_dialog", max_len=MAX_LEN, max_train_samples=16, max_eval_samples=8
        ),
        callbacks=[CorruptAfterEpoch(2)],
    )
    initial = state_of(trainer.model)
    trainer.train()
    return {"trainer": trainer, "initial": initial, "out": out, "final": trainer.evaluate()}


def evals(trainer):
    return {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}


def test_loss_decreases(run):
    history = run["trainer"].state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[3] < losses[0] - 0.3  # the 4th step's training loss vs the 1st
    by_step = evals(run["trainer"])
    assert by_step[4] < by_step[0] - 0.3  # evaluation loss after epoch 1 vs before training


def test_every_parameter_changes(run):
    trained = load_file(str(run["out"] / "checkpoint-4" / "model.safetensors"))
    assert trained
    for name, value in trained.items():
        assert name in run["initial"]
        assert not torch.equal(value, run["initial"][name]), f"{name} did not change"


def test_best_checkpoint_has_the_lowest_eval_loss_and_is_loaded_at_the_end(run):
    trainer, out = run["trainer"], run["out"]
    saved = {s: loss for s, loss in evals(trainer).items() if s > 0}
    assert sorted(saved) == [4, 8, 12]
    best_step = min(saved, key=saved.get)
    assert best_step == 4  # the corruption after epoch 2 made the later ones worse
    assert trainer.state.best_model_checkpoint == str(out / f"checkpoint-{best_step}")
    # save_total_limit=2 keeps the best and the last checkpoint
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-4"]
    best = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    final = trainer.model.state_dict()
    for name, value in best.items():
        torch.testing.assert_close(final[name], value, rtol=0, atol=0)
    assert run["final"]["eval_loss"] == pytest.approx(saved[4], rel=1e-9)


def test_perplexity_is_token_weighted_and_matches_an_independent_computation(run):
    trainer, metrics = run["trainer"], run["final"]
    assert not trainer.use_token_type_ids  # the default: input_ids only, as other engines feed
    ppl, count = manual_perplexity(trainer.model, trainer.eval_dataset, use_token_type_ids=False)
    assert metrics["eval_tokens"] == count
    assert metrics["eval_perplexity"] == pytest.approx(ppl, rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(
        torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-6
    )


def test_checkpoint_loads_with_plain_transformers(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(run["out"] / "checkpoint-4")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for token in ("<bos>", "<sp1>", "<sp2>"):
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [
            tokenizer.convert_tokens_to_ids(token)
        ]
    messages = [{"role": "user", "content": "Hi, how are you?"}, {"role": "assistant", "content": "Fine."},
                {"role": "user", "content": "Great!"}]  # fmt: skip
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert ids["input_ids"] == render_messages(messages, tokenizer)["input_ids"]
    example = run["trainer"].eval_dataset[0]
    inputs = {"input_ids": torch.tensor([example["input_ids"]])}
    with torch.no_grad():
        expected = run["trainer"].model(**inputs).logits
        torch.testing.assert_close(model(**inputs).logits, expected)


def test_model_card_is_written_on_every_save(run):
    card = (run["out"] / "checkpoint-4" / "README.md").read_text()
    for text in ("daily_dialog", "learning_rate", "eval_perplexity", "ChatSession", "AutoTokenizer",
                 "token_type_ids", "library_name: transformers"):  # fmt: skip
        assert text in card
    assert (run["out"] / "checkpoint-12" / "README.md").is_file()


def test_saves_chat_settings_with_the_training_window(run, tmp_path):
    """chat_config.json beside every save: the training's max_turns, and the base model's own
    decoding settings when it had some (fine-tuning the demo model keeps its decoding)."""
    from transformers import AutoModelForCausalLM

    from gpt2chat import ChatSettings

    saved = ChatSettings.from_pretrained(run["out"] / "checkpoint-4")
    assert saved == ChatSettings(max_turns=5, use_token_type_ids=False)
    import json

    tokens = run["trainer"].speaker_tokens
    generation = json.loads((run["out"] / "checkpoint-4" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokens.eos_token_id, tokens.sp1_token_id]
    assert (generation["do_sample"], generation["top_p"], generation["max_new_tokens"]) == (
        True, 0.8, 64
    )  # fmt: skip
    base = tmp_path / "base"
    tiny_model().save_pretrained(base)
    tuned = ChatSettings(max_turns=5, temperature=0.7, top_p=0.9, num_candidates=4)
    tuned.save_pretrained(base)
    trainer = DialogueTrainer(
        AutoModelForCausalLM.from_pretrained(base),
        training_args(tmp_path / "out", max_steps=1),
        train_dataset=daily_dialogues("validation", n=4),
        processing_class=gpt2_tokenizer(),
        data_args=DataArguments(datasets="daily_dialog", max_len=MAX_LEN, max_turns=3),
    )
    trainer.save_model()
    saved = ChatSettings.from_pretrained(tmp_path / "out")
    assert saved == ChatSettings(
        max_turns=3, temperature=0.7, top_p=0.9, num_candidates=4, use_token_type_ids=False
    )


def _short_run(tmp_path, batch_size: int, accumulation: int, steps: int = 3):
    dialogues = daily_dialogues("validation", n=12)
    trainer = DialogueTrainer(
        tiny_model(),
        training_args(
            tmp_path / f"bs{batch_size}x{accumulation}",
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=steps,
            optim="sgd",  # Adam would amplify float rounding in near-zero gradients
            learning_rate=1.0,
            warmup_steps=0,
            lr_scheduler_type="constant",
        ),
        train_dataset=dialogues,
        processing_class=gpt2_tokenizer(),
        data_args=DataArguments(datasets="daily_dialog", max_len=MAX_LEN, max_train_samples=12),
    )
    lengths = trainer.train_dataset["length"]
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer.model, losses, lengths


def test_gradient_accumulation_gives_the_large_batch_result(tmp_path):
    """4 examples per step as one batch or as 2 accumulated batches of 2 (examples of different
    lengths): the loss is normalised by the label tokens of the whole step, so same result."""
    big, big_losses, lengths = _short_run(tmp_path, batch_size=4, accumulation=1)
    small, small_losses, _ = _short_run(tmp_path, batch_size=2, accumulation=2)
    assert len(set(lengths)) > 3  # variable-length batches
    assert small_losses == pytest.approx(big_losses, rel=1e-5)
    for (name, a), b in zip(big.state_dict().items(), small.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
