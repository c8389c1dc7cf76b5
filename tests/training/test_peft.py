"""LoRA through peft: what trains, the adapter checkpoint, loading it back, merging it."""

from __future__ import annotations

import torch

from gpt2chat import DialogueTrainer, LoraArguments
from gpt2chat.cli import main
from gpt2chat.training import DataArguments
from gpt2chat.training.arguments import ModelArguments
from gpt2chat.training.modeling import load_model

from .helpers import daily_dialogues, save_tiny_model, training_args


def test_lora_trains_adapter_and_speaker_rows_then_loads_and_merges(tmp_path):
    base = save_tiny_model(tmp_path / "base")
    trainer = DialogueTrainer(
        str(base),
        training_args(tmp_path / "out", max_steps=2, learning_rate=5e-2, warmup_steps=0),
        train_dataset=daily_dialogues("validation", n=6),
        data_args=DataArguments(datasets="daily_dialog", max_len=48, max_train_samples=8),
        peft_config=LoraArguments(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0),
    )
    tokens = trainer.speaker_tokens
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "token_adapter" in n for n in trainable)
    assert any("c_attn" in n for n in trainable) and any("c_fc" in n for n in trainable)
    frozen_before = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad
    }
    rows_before = trainer.model.get_input_embeddings()(
        torch.tensor([tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id])
    ).detach()
    trainer.train()
    for n, p in trainer.model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
    speaker_ids = torch.tensor([tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id])
    rows_after = trainer.model.get_input_embeddings()(speaker_ids).detach()
    assert not torch.allclose(rows_after, rows_before)  # the new tokens are learned

    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    assert (out / "adapter_config.json").is_file() and (out / "README.md").is_file()
    assert "library_name: peft" in (out / "README.md").read_text()
    example = trainer.train_dataset[0]
    inputs = {"input_ids": torch.tensor([example["input_ids"]])}  # trained without token types
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**inputs).logits

    reloaded = load_model(ModelArguments(model_name_or_path=str(out)))
    reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)

    merged_dir = tmp_path / "merged"
    assert main(["export", "--model", str(out), "--output_dir", str(merged_dir)]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    assert not hasattr(plain, "peft_config")
    assert AutoTokenizer.from_pretrained(str(merged_dir)).chat_template
    from gpt2chat import ChatSettings

    saved = ChatSettings.from_pretrained(out)  # the training's window, beside the adapter
    assert saved == ChatSettings(max_turns=DataArguments().max_turns, use_token_type_ids=False)
    assert ChatSettings.from_pretrained(merged_dir) == saved  # and copied by export
    import json

    for folder in (out, merged_dir):  # where a reply ends, for any engine reading the folder
        generation = json.loads((folder / "generation_config.json").read_text())
        assert generation["eos_token_id"] == [tokens.eos_token_id, tokens.sp1_token_id]
    from gpt2chat import ChatSession

    assert ChatSession.from_pretrained(merged_dir, device="cpu").use_token_type_ids is False
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, expected, rtol=1e-4, atol=1e-4)


def test_lora_default_targets_per_architecture():
    args = LoraArguments(use_peft=True)
    assert args.target_modules_for("gpt2") == ["c_attn", "c_proj", "c_fc"]
    assert "q_proj" in args.target_modules_for("llama")
    assert args.target_modules_for("some_new_arch") == "all-linear"
    assert LoraArguments(lora_target_modules="c_attn, c_fc").target_modules_for("gpt2") == [
        "c_attn",
        "c_fc",
    ]
