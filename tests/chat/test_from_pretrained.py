"""ChatSession.from_pretrained (checkpoint folder, PEFT adapter folder), models without token types,
devices and dtypes (their resolution itself: tests/test_loading.py)."""

from __future__ import annotations

import pytest
import torch

from gpt2chat import ChatSession, get_speaker_tokens

from .conftest import base_tokenizer, fresh_chat_tokenizer, tiny_chat_gpt2, tiny_llama

TEXTS = ["Hello there!", "How are you?", "Nice <sp2> weather today", "Bye 😀"]
GREEDY = {"do_sample": False, "max_new_tokens": 6}


def replies(chat, texts=TEXTS):
    return [chat.send(t) for t in texts]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny GPT-2 + speaker tokens saved with plain ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("checkpoint")
    model = tiny_chat_gpt2()
    tokenizer = fresh_chat_tokenizer()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_from_pretrained_checkpoint_folder(saved_model):
    folder, model, tokenizer = saved_model
    chat = ChatSession.from_pretrained(folder, device="cpu", **GREEDY)
    assert chat.tokens == get_speaker_tokens(tokenizer)
    assert chat.use_token_type_ids and chat.model.dtype == torch.float32
    assert chat.max_len == 256
    assert replies(chat) == replies(ChatSession(model, tokenizer, **GREEDY))


def test_from_pretrained_passes_session_options(saved_model):
    folder, _, _ = saved_model
    chat = ChatSession.from_pretrained(
        str(folder), "cpu", max_turns=3, persona="I am a bot.", top_p=0.9, seed=1
    )
    assert (chat.max_turns, chat.persona, chat.generation_config.top_p) == (3, "I am a bot.", 0.9)


def test_from_pretrained_refuses_a_model_without_speaker_tokens(tmp_path):
    from ..conftest import tiny_gpt2

    tiny_gpt2().save_pretrained(tmp_path)
    base_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="add_speaker_tokens"):
        ChatSession.from_pretrained(tmp_path, device="cpu")
    chat = ChatSession.from_pretrained(tmp_path, device="cpu", add_tokens=True, **GREEDY)
    assert isinstance(chat.send("Hi"), str)


def test_from_pretrained_missing_folder(tmp_path):
    with pytest.raises(OSError):
        ChatSession.from_pretrained(tmp_path / "nope", device="cpu")


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    """Base saved as a plain GPT-2 (no speaker tokens); the adapter folder holds LoRA weights,
    the trained speaker-token rows and the extended tokenizer (as LoRA training saves them).
    Returns the folder and the greedy replies of the in-memory adapter model."""
    from ..conftest import save_tiny_lora_adapter

    _, adapter_dir, peft_model, tokenizer = save_tiny_lora_adapter(tmp_path_factory.mktemp("lora"))
    expected = replies(ChatSession(peft_model, tokenizer, **GREEDY))
    assert expected != replies(ChatSession(tiny_chat_gpt2(), tokenizer, **GREEDY))
    return adapter_dir, expected


@pytest.mark.parametrize("merge", [True, False])
def test_from_pretrained_peft_adapter_folder(adapter_folder, merge):
    adapter_dir, expected = adapter_folder
    chat = ChatSession.from_pretrained(adapter_dir, device="cpu", merge_adapter=merge, **GREEDY)
    assert chat.use_token_type_ids
    assert hasattr(chat.model, "peft_config") is not merge
    assert replies(chat) == expected


def test_llama_style_model_without_token_types(tok):
    model = tiny_llama(tok)
    cached = ChatSession(model, tok, max_turns=4, **GREEDY)
    assert not cached.use_token_type_ids
    assert cached.max_len == 256
    plain = ChatSession(model, tok, max_turns=4, prefix_cache=False, **GREEDY)
    assert replies(cached) == replies(plain)
    streamed = ChatSession(model, tok, max_turns=4, **GREEDY)
    assert ["".join(streamed.stream(t)) for t in TEXTS] == [m["content"] for m in plain.history][
        1::2
    ]


def test_token_type_ids_detection_can_be_overridden(gpt2, tok, monkeypatch):
    chat = ChatSession(gpt2, tok, use_token_type_ids=False, **GREEDY)
    seen = {}
    original = gpt2.generate

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(gpt2, "generate", spy)
    chat.send("Hi")
    assert "token_type_ids" not in seen
    ChatSession(gpt2, tok, **GREEDY).send("Hi")
    assert seen["token_type_ids"].shape == seen["attention_mask"].shape


def test_bfloat16_on_cpu(saved_model):
    folder, _, _ = saved_model
    chat = ChatSession.from_pretrained(folder, device="cpu", dtype="bfloat16", **GREEDY)
    assert chat.model.dtype == torch.bfloat16
    assert all(isinstance(r, str) for r in replies(chat, TEXTS[:2]))


def test_cuda_refused_without_a_gpu(saved_model):
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    with pytest.raises(ValueError, match="CUDA is not available"):
        ChatSession.from_pretrained(saved_model[0], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_cuda(saved_model, dtype):
    folder, _, _ = saved_model
    cached = ChatSession.from_pretrained(folder, device="cuda", dtype=dtype, max_turns=4, **GREEDY)
    assert cached.model.device.type == "cuda"
    plain = ChatSession.from_pretrained(
        folder, device="cuda", dtype=dtype, max_turns=4, prefix_cache=False, **GREEDY
    )
    assert replies(cached) == replies(plain)
    assert "".join(cached.stream("again")) == cached.history[-1]["content"]
