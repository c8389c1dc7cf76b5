"""Context guidance (``ChatSession(guidance_scale=...)``): equal to a from-scratch reference, for
models with and without token types, across turns (prefix cache), and validated."""

from __future__ import annotations

import pytest
import torch

from gpt2chat import ChatSession, get_speaker_tokens, render_messages
from gpt2chat.chat.guidance import ContextGuidanceLogitsProcessor

from .conftest import tiny_llama

MESSAGES = ["Hi there, how are you?", "I failed my exam today.", "What do you do on weekends?"]


def reference_reply(model, tok, messages, scale, n_new, use_types):
    """Greedy guided decoding with full forward passes (no cache): the definition."""
    tokens = get_speaker_tokens(tok)
    cond = render_messages(messages, tok, add_generation_prompt=True)
    uncond = render_messages([], tok, add_generation_prompt=True)
    assert uncond["input_ids"] == [tokens.bos_token_id, tokens.sp2_token_id]

    def log_probs(rendered, reply):
        ids = torch.tensor([rendered["input_ids"] + reply])
        kwargs = {}
        if use_types:
            types = rendered["token_type_ids"] + [tokens.sp2_token_id] * len(reply)
            kwargs["token_type_ids"] = torch.tensor([types])
        with torch.no_grad():
            return torch.log_softmax(model(ids, **kwargs).logits[0, -1].float(), dim=-1)

    reply: list[int] = []
    for _ in range(n_new):
        mixed = scale * log_probs(cond, reply) - (scale - 1) * log_probs(uncond, reply)
        reply.append(int(mixed.argmax()))
        if reply[-1] in (tokens.eos_token_id, tokens.sp1_token_id):
            reply.pop()
            break
    return tok.decode(reply, skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_guided_greedy_reply_equals_the_reference_over_turns(arch, gpt2, tok):
    model = gpt2 if arch == "gpt2" else tiny_llama(tok)
    use_types = arch == "gpt2"
    options = {"do_sample": False, "max_new_tokens": 8, "max_turns": 20}  # the window never slides
    session = ChatSession(model, tok, guidance_scale=2.0, **options)
    plain = ChatSession(model, tok, **options)
    assert session.use_token_type_ids is use_types
    history: list[dict[str, str]] = []
    differs = False
    for text in MESSAGES:  # later turns start from the prefix cache of the earlier ones
        messages = [*history, {"role": "user", "content": text}]
        reply = session.send(text)
        assert reply == reference_reply(model, tok, messages, 2.0, 8, use_types)
        plain.history = history
        differs |= plain.send(text) != reply
        history = session.history
    assert session.last_turn.reused_tokens > 0
    assert differs, "guidance 2.0 changed no greedy reply of the random model"


def test_guidance_scale_one_is_plain_decoding(make_session):
    guided, plain = make_session(guidance_scale=1.0), make_session()
    for text in MESSAGES:
        assert guided.send(text) == plain.send(text)


def test_guidance_with_a_persona_uses_it_in_both_branches(gpt2, tok):
    session = ChatSession(
        gpt2, tok, do_sample=False, max_new_tokens=6, guidance_scale=1.5, persona="I love dogs."
    )
    prompt = session.render_prompt("Hello")["input_ids"]
    processor = session.engine._guidance(
        len(prompt), session.engine.no_conversation_prompt(session.persona)
    )
    persona = tok("I love dogs.")["input_ids"]
    tokens = get_speaker_tokens(tok)
    assert processor.unconditional_ids == [tokens.bos_token_id, *persona, tokens.sp2_token_id]
    reply = session.send("Hello")
    messages = [{"role": "system", "content": "I love dogs."}, {"role": "user", "content": "Hello"}]
    cond = render_messages(messages, tok)
    assert cond["input_ids"][: len(persona) + 1] == processor.unconditional_ids[:-1]
    assert isinstance(reply, str)


def test_sampling_with_guidance_keeps_the_nucleus(gpt2, tok):
    """Applied after top-p / top-k, guidance never brings back a token they removed."""
    processor = ContextGuidanceLogitsProcessor(gpt2, 0.0, prompt_length=3, unconditional_ids=[1, 2])
    scores = torch.full((1, gpt2.config.vocab_size), float("-inf"))
    scores[0, [5, 9]] = torch.tensor([1.0, 2.0])
    ids = torch.tensor([[7, 8, 9]])
    mixed = processor(ids, scores)
    assert torch.isneginf(mixed[0]).sum() == gpt2.config.vocab_size - 2
    assert torch.isfinite(mixed[0, [5, 9]]).all()
    session = ChatSession(gpt2, tok, top_p=0.5, max_new_tokens=8, guidance_scale=1.5, seed=0)
    assert isinstance(session.send("Hello there"), str)


def test_in_a_session_guidance_sees_the_scores_after_temperature_and_top_p(gpt2, tok, monkeypatch):
    """generate runs user processors before its own warpers; the session builds the warpers
    itself so guidance gets the tempered nucleus (the rest already -inf)."""
    seen = []
    original = ContextGuidanceLogitsProcessor.__call__

    def spy(self, input_ids, scores):
        seen.append((int(torch.isneginf(scores).sum()), float(scores.max())))
        return original(self, input_ids, scores)

    monkeypatch.setattr(ContextGuidanceLogitsProcessor, "__call__", spy)
    session = ChatSession(
        gpt2, tok, top_p=0.05, temperature=0.5, max_new_tokens=4, guidance_scale=1.5, seed=0
    )
    prompt = session.render_prompt("Hello there")
    session.send("Hello there")
    assert seen and all(removed > 0 for removed, _ in seen)
    # and the raw logits were divided by the temperature before guidance saw them
    with torch.inference_mode():
        ids = torch.tensor([prompt["input_ids"]])
        raw = gpt2(ids, token_type_ids=torch.tensor([prompt["token_type_ids"]])).logits[0, -1]
    assert seen[0][1] == pytest.approx(float(raw.max()) / 0.5, rel=1e-4)


def test_guidance_scale_from_a_generation_config_is_applied_by_the_session(gpt2, tok):
    from transformers import GenerationConfig

    session = ChatSession(
        gpt2, tok, generation_config=GenerationConfig(guidance_scale=1.5, do_sample=False)
    )
    assert session.guidance_scale == 1.5
    assert session.generation_config.guidance_scale is None  # not transformers' own processor


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"guidance_scale": -1}, "guidance_scale` must be a number >= 0"),
        ({"guidance_scale": "high"}, "guidance_scale` must be a number >= 0"),
        ({"guidance_scale": 1.5, "num_beams": 2}, "not beam search"),
    ],
)
def test_bad_guidance_options_are_refused(make_session, options, match):
    with pytest.raises(ValueError, match=match):
        make_session(**options)


def test_greedy_guidance_matches_transformers_own_for_a_model_without_token_types(tok):
    """Same tokens as ``generate(guidance_scale=..., negative_prompt_ids=<bos> <sp2>)`` where the
    two can agree: greedy (no warpers to order against) and no token types."""
    model = tiny_llama(tok)
    tokens = get_speaker_tokens(tok)
    session = ChatSession(model, tok, do_sample=False, max_new_tokens=8, guidance_scale=2.0)
    for text in MESSAGES:
        session.reset()
        reply = session.send(text)
        ids = torch.tensor([render_messages([{"role": "user", "content": text}], tok)["input_ids"]])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=8,
            guidance_scale=2.0,
            negative_prompt_ids=torch.tensor([[tokens.bos_token_id, tokens.sp2_token_id]]),
            eos_token_id=[tokens.eos_token_id, tokens.sp1_token_id],
            pad_token_id=tokens.pad_token_id,
        )
        theirs = [t for t in out[0, ids.shape[1] :].tolist()]
        if theirs and theirs[-1] in (tokens.eos_token_id, tokens.sp1_token_id):
            theirs.pop()
        assert reply == tok.decode(theirs, skip_special_tokens=True).strip()
