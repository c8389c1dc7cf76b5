"""The engine under ChatSession (chat/engine.py, prefix_cache.py, options.py, stream.py): token
ids in, tokens out; the prefix cache, stopping, decoding options, and a torch.Generator per call
(reproducible seeds, no global RNG state touched, no interference between concurrent calls)."""

from __future__ import annotations

import threading

import pytest
import torch

from gpt2chat import ChatSession, get_speaker_tokens, render_messages
from gpt2chat.chat.engine import Engine

TEXTS = ["Hello there!", "How are you?", "Tell me about your weekend.", "ok"]


# --------------------------------------------------------------------------- prefix cache
def conversation(chat, texts):
    return [chat.send(t) for t in texts]


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_greedy_replies_identical_with_and_without_prefix_cache(make_session, cache_implementation):
    texts = ["Hello!", "How are you?", "Nice <sp2> weather", "Bye 😀", "wait", "what?"]
    # max_turns=4: the window slides from the third turn on; with a persona.
    cached = make_session(
        max_turns=4, persona="I am a bot.", cache_implementation=cache_implementation
    )
    plain = make_session(
        max_turns=4,
        persona="I am a bot.",
        prefix_cache=False,
        cache_implementation=cache_implementation,
    )
    assert conversation(cached, texts) == conversation(plain, texts)
    assert cached.history == plain.history


def test_prefix_cache_encodes_only_the_new_turn(make_session, tok):
    """A reply that re-tokenises to the generated ids: the next turn runs only ``<sp1> u <sp2>``."""
    tokens = get_speaker_tokens(tok)
    hello = tok("Hello", add_special_tokens=False)["input_ids"]
    assert len(hello) == 1
    bias = {(hello[0],): 50.0, (hello[0], tokens.eos_token_id): 100.0}  # "Hello" then <eos>
    chat = make_session(max_turns=20, sequence_bias=bias)
    plain = make_session(max_turns=20, sequence_bias=bias, prefix_cache=False)
    previous = 0
    for i, text in enumerate(["Hi there", "How are you today?", "Fine", "ok then"]):
        assert chat.send(text) == plain.send(text) == "Hello"
        stats = chat.last_turn
        user_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
        if i == 0:
            assert stats.reused_tokens == 0
        else:
            assert stats.reused_tokens == previous + 1  # the previous prompt and its reply
            assert stats.encoded_tokens == user_tokens + 2  # <sp1> text <sp2>
        assert plain.last_turn.reused_tokens == 0
        previous = stats.prompt_tokens


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_prefix_cache_after_reset_and_persona_change(make_session, cache_implementation):
    cached = make_session(max_turns=6, cache_implementation=cache_implementation)
    plain = make_session(max_turns=6, prefix_cache=False)
    assert conversation(cached, ["Hi", "and then?"]) == conversation(plain, ["Hi", "and then?"])
    cached.reset()
    plain.reset()
    assert cached.history == []
    assert cached.send("Hi") == plain.send("Hi")
    assert cached.last_turn.reused_tokens == 0
    cached.persona = plain.persona = "I like cats."
    assert cached.send("Do you?") == plain.send("Do you?")
    assert cached.last_turn.reused_tokens == 1  # only <bos> is shared once a persona appears


def test_prefix_cache_with_sampling_gives_the_same_replies(make_session):
    texts = ["Hi", "Tell me more", "Why?", "ok"]
    cached = make_session(do_sample=True, seed=123, max_turns=4)
    cached_replies = conversation(cached, texts)
    plain = make_session(do_sample=True, seed=123, max_turns=4, prefix_cache=False)
    assert cached_replies == conversation(plain, texts)


def test_seed_makes_sampling_reproducible_and_reset_reseeds(make_session):
    a = make_session(do_sample=True, seed=7)
    first = a.send("Hello")
    b = make_session(do_sample=True, seed=7)
    assert b.send("Hello") == first
    a.reset()
    assert a.send("Hello") == first


# --------------------------------------------------------------------------- stopping
def test_stops_on_eos_and_cleans_it(make_session, tok):
    eos = get_speaker_tokens(tok).eos_token_id
    chat = make_session(max_new_tokens=10, min_new_tokens=3, sequence_bias={(eos,): 100.0})
    reply = chat.send("Hi")
    assert chat.last_turn.generated_tokens == 4  # 3 forced tokens, then <eos>
    assert "<|endoftext|>" not in reply


def test_stops_when_the_model_starts_a_user_turn(make_session, tok):
    sp1 = get_speaker_tokens(tok).sp1_token_id
    chat = make_session(max_new_tokens=10, min_new_tokens=2, sequence_bias={(sp1,): 100.0})
    reply = chat.send("Hi")
    assert chat.last_turn.generated_tokens == 3
    assert "<sp1>" not in reply


def test_other_special_tokens_are_removed_from_the_reply(make_session, tok):
    tokens = get_speaker_tokens(tok)
    bias = {(tokens.sp2_token_id,): 100.0}
    chat = make_session(max_new_tokens=5, sequence_bias=bias)
    reply = chat.send("Hi")
    assert chat.last_turn.generated_tokens == 5  # <sp2> is not a stop token...
    assert reply == ""  # ...but never shows in the reply
    assert chat.history[-1] == {"role": "assistant", "content": ""}


# --------------------------------------------------------------------------- options
def test_default_generation_config_is_the_recipe(make_session, tok):
    tokens = get_speaker_tokens(tok)
    config = ChatSession(make_session().model, tok).generation_config
    assert (config.do_sample, config.top_p, config.top_k) == (True, 0.8, 0)
    assert config.eos_token_id == [tokens.eos_token_id, tokens.sp1_token_id]
    assert config.pad_token_id == tokens.pad_token_id


def test_greedy_drops_sampling_defaults(make_session):
    config = make_session().generation_config
    assert config.do_sample is False
    assert config.top_p is None and config.top_k is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_turns": 1}, "max_turns"),
        ({"top_p": 0.0}, "top_p"),
        ({"temperature": 0, "do_sample": True}, "temperature"),
        ({"temperature": 1e-40, "do_sample": True}, r"`temperature` must be >= 0\.001"),
        ({"temperature": float("nan"), "do_sample": True}, "temperature"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 300}, "max_new_tokens"),
        ({"topp": 0.5}, "Unknown generation option `topp`"),
        ({"eos_token_id": 1}, "eos_token_id"),
        ({"cache_implementation": "paged"}, "cache_implementation"),
        ({"max_len": 100000}, "max_len"),
    ],
)
def test_invalid_options_name_the_parameter(make_session, options, match):
    with pytest.raises(ValueError, match=match):
        make_session(**options)


def test_decoding_options_reach_generate(make_session):
    chat = make_session(max_new_tokens=10, no_repeat_ngram_size=1, repetition_penalty=1.3)
    chat.send("Hello")
    assert chat.generation_config.no_repeat_ngram_size == 1
    assert chat.generation_config.repetition_penalty == 1.3
    ids = chat.tokenizer(chat.history[-1]["content"], add_special_tokens=False)["input_ids"]
    assert chat.last_turn.generated_tokens == 10
    assert len(ids) >= 1
    sampled = make_session(do_sample=True, top_k=5, temperature=0.7, top_p=0.9, seed=0)
    sampled.send("Hello")
    assert (sampled.generation_config.top_k, sampled.generation_config.temperature) == (5, 0.7)


def test_beam_search(make_session):
    chat = make_session(num_beams=2, max_new_tokens=6)
    reply = chat.send("Hello")
    assert isinstance(reply, str)
    assert "".join(chat.stream("And you?")) == chat.history[-1]["content"]
    assert chat.last_turn.reused_tokens == 0


# --------------------------------------------------------------------------- token ids in
def prompt_of(tok, text: str) -> dict[str, list[int]]:
    return render_messages([{"role": "user", "content": text}], tok, add_generation_prompt=True)


def test_the_engine_takes_token_ids_and_gives_the_sessions_reply(gpt2, tok):
    engine = Engine(gpt2, tok, do_sample=False, max_new_tokens=8, prefix_cache=False)
    chat = ChatSession(gpt2, tok, do_sample=False, max_new_tokens=8)
    tokens = get_speaker_tokens(tok)
    for text in TEXTS:
        chat.reset()
        prompt = prompt_of(tok, text)
        reply = engine.generate(prompt["input_ids"], prompt["token_type_ids"])
        assert engine.decode(reply.token_ids) == chat.send(text)
        assert reply.stats.prompt_tokens == len(prompt["input_ids"]) == chat.last_turn.prompt_tokens
        assert reply.stats.generated_tokens == len(reply.token_ids) <= 8
        assert not set(reply.token_ids[:-1]) & {tokens.eos_token_id, tokens.sp1_token_id}
        streamed = engine.stream(prompt["input_ids"], prompt["token_type_ids"])
        assert streamed.incremental and list(streamed) == reply.token_ids
        assert streamed.reply.token_ids == reply.token_ids


def test_a_closed_token_stream_stops_and_a_failed_one_raises(gpt2, tok):
    engine = Engine(gpt2, tok, do_sample=False, max_new_tokens=40, min_new_tokens=40)
    prompt = prompt_of(tok, "Hello")
    stream = engine.stream(prompt["input_ids"], prompt["token_type_ids"])
    first = next(stream)
    stream.close()
    assert isinstance(first, int) and len(stream.reply.token_ids) < 40
    assert list(stream) == []
    with pytest.raises(ValueError, match="token_type_ids"):  # checked when asked for
        engine.stream(prompt["input_ids"], [0])

    def broken(*args):
        raise RuntimeError("a bug")

    hook = gpt2.register_forward_hook(broken)
    try:
        failing = engine.stream(prompt["input_ids"], prompt["token_type_ids"])
        with pytest.raises(RuntimeError, match="a bug"):  # raised in the consumer's thread
            list(failing)
    finally:
        hook.remove()


@pytest.mark.parametrize(
    ("args", "options", "match"),
    [
        (([],), {}, "`input_ids` must be a non-empty list"),
        (([[1, 2]],), {}, "`input_ids` must be a non-empty list"),
        (([1] * 300,), {}, "`input_ids` has 300 tokens"),
        (([1, 2, 3],), {}, "`token_type_ids` must give one type per prompt token"),
        (([1, 2, 3], [0, 0, 0]), {"generator": 7}, "`generator` must be a torch.Generator"),
    ],
)
def test_engine_calls_are_checked(gpt2, tok, args, options, match):
    engine = Engine(gpt2, tok, max_new_tokens=8, use_token_type_ids=True)
    with pytest.raises(ValueError, match=match):
        engine.generate(*args, **options)


def test_the_engine_without_token_types(tok):
    from .conftest import tiny_llama

    engine = Engine(tiny_llama(tok), tok, do_sample=False, max_new_tokens=6)
    assert engine.use_token_type_ids is False
    reply = engine.generate(prompt_of(tok, "Hello")["input_ids"])  # no token types needed
    assert 1 <= len(reply.token_ids) <= 6


# --------------------------------------------------------------------------- a generator per call
def sampler(gpt2, tok, **options):
    return Engine(gpt2, tok, max_new_tokens=12, top_p=0.95, temperature=1.5, **options)


def test_the_same_generator_seed_gives_the_same_reply_and_leaves_the_global_rng_alone(gpt2, tok):
    engine = sampler(gpt2, tok)
    ids = prompt_of(tok, "Hello")["input_ids"]
    types = prompt_of(tok, "Hello")["token_type_ids"]
    state = torch.get_rng_state()
    replies = [
        engine.generate(ids, types, generator=torch.Generator().manual_seed(seed)).token_ids
        for seed in (1, 2, 1)
    ]
    assert torch.equal(torch.get_rng_state(), state)  # neither seeded nor drawn from
    assert replies[0] == replies[2] != replies[1]


def test_a_generator_draws_what_generate_draws_after_manual_seed(gpt2, tok):
    """The seeded replies of the old global-seed sessions are reproduced exactly."""
    from transformers import GenerationConfig

    engine = sampler(gpt2, tok, use_token_type_ids=False, prefix_cache=False)
    ids = prompt_of(tok, "Hello")["input_ids"]
    config = GenerationConfig(**{**engine.generation_config.to_dict(), "eos_token_id": None})
    engine.generation_config = config
    torch.manual_seed(5)
    with torch.inference_mode():
        theirs = gpt2.generate(torch.tensor([ids]), generation_config=config)[0, len(ids) :]
    ours = engine.generate(ids, generator=torch.Generator().manual_seed(5)).token_ids
    assert ours == theirs.tolist()


def test_an_unseeded_call_follows_torch_manual_seed(gpt2, tok):
    engine = sampler(gpt2, tok)
    prompt = prompt_of(tok, "Hello")
    replies = []
    for _ in range(2):
        torch.manual_seed(3)
        replies.append(engine.generate(prompt["input_ids"], prompt["token_type_ids"]).token_ids)
    assert replies[0] == replies[1]


def test_interleaved_sessions_with_one_seed_give_the_replies_of_each_alone(gpt2, tok):
    options = {"max_new_tokens": 10, "top_p": 0.95, "temperature": 1.5, "seed": 11}
    alone = ChatSession(gpt2, tok, **options)
    expected = [alone.send(text) for text in TEXTS]
    a, b = ChatSession(gpt2, tok, **options), ChatSession(gpt2, tok, **options)
    for text, reply in zip(TEXTS, expected):
        assert a.send(text) == reply
        torch.manual_seed(99)  # what else happens meanwhile changes nothing
        assert "".join(b.stream(text)) == reply
        state = torch.get_rng_state()
        assert ChatSession(gpt2, tok, **options).send("Something else") is not None
        assert torch.equal(torch.get_rng_state(), state)
    assert len(set(expected)) > 1  # sampled


def test_concurrent_seeded_sessions_do_not_interfere(gpt2, tok):
    options = {"max_new_tokens": 10, "top_p": 0.95, "temperature": 1.5}
    expected = {seed: ChatSession(gpt2, tok, seed=seed, **options).send("Hi") for seed in (1, 2)}
    results: dict[int, list[str]] = {1: [], 2: []}

    def talk(seed: int) -> None:
        for _ in range(3):
            results[seed].append(ChatSession(gpt2, tok, seed=seed, **options).send("Hi"))

    threads = [threading.Thread(target=talk, args=(seed,)) for seed in (1, 2, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {seed: [expected[seed]] * 6 for seed in (1, 2)}


def test_beam_sampling_is_seeded_too_and_restores_the_global_rng(gpt2, tok):
    options = {"num_beams": 2, "max_new_tokens": 8, "temperature": 1.5, "top_p": 0.95}
    state = torch.get_rng_state()
    replies = [ChatSession(gpt2, tok, seed=4, **options).send("Hello") for _ in range(2)]
    assert replies[0] == replies[1]
    assert torch.equal(torch.get_rng_state(), state)
