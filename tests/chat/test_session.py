"""ChatSession on a tiny random GPT-2 with the real GPT-2 tokenizer: prompts, window, prefix cache,
stopping, streaming, options, transcripts."""

from __future__ import annotations

import json

import datasets
import pytest

from gpt2chat import (
    ChatSession,
    encode_texts,
    get_speaker_tokens,
    prepare_dataset,
    render_messages,
)

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def alternate(texts):
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]


# --------------------------------------------------------------------------- prompts
def test_send_records_user_and_reply(make_session):
    chat = make_session()
    reply = chat.send("Hello there!")
    assert isinstance(reply, str)
    assert chat.history == [
        {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": reply},
    ]
    chat.history[0]["content"] = "changed"  # a copy: the session's history is not touched
    assert chat.history[0]["content"] == "Hello there!"
    assert chat.last_turn.generated_tokens <= 8


def test_prompt_ids_equal_the_training_renderer(make_session, tok):
    """For every reply of a dialogue, the chat prompt is the training example minus reply + eos."""
    utterances = [
        "Hi, how are you?",
        "Fine, thanks. And you?",
        "Great! Any plans for the weekend?",
        "I will go hiking <sp2> with friends.",
        "Sounds fun. Where?",
        "In the mountains near the lake.",
    ]
    features = prepare_dataset(
        datasets.Dataset.from_dict({"utterances": [utterances]}), tok, max_turns=3, max_len=256
    )
    assert len(features) == 3
    tokens = get_speaker_tokens(tok)
    chat = make_session(max_turns=3)
    for k, h in enumerate(range(1, len(utterances), 2)):
        chat.history = alternate(utterances[: h - 1])
        prompt = chat.render_prompt(utterances[h - 1])
        example = features[k]
        n = len(prompt["input_ids"])
        assert prompt["input_ids"] == example["input_ids"][:n]
        assert prompt["token_type_ids"] == example["token_type_ids"][:n]
        assert prompt["input_ids"][-1] == tokens.sp2_token_id
        (reply_ids,) = encode_texts(tok, [utterances[h]])
        assert example["input_ids"][n:] == [*reply_ids, tokens.eos_token_id]


def test_prompt_equals_the_chat_template(make_session, tok):
    chat = make_session(max_turns=10, persona="I love hiking.")
    chat.history = alternate(["Hi!", "Hello, who are you?"])
    prompt = chat.render_prompt("A hiker <bos> like you.")
    messages = chat.messages_for("A hiker <bos> like you.")
    assert messages[0] == {"role": "system", "content": "I love hiking."}
    templated = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt["input_ids"] == tok(templated, add_special_tokens=False)["input_ids"]


def test_window_holds_the_last_max_turns_minus_one_messages(make_session, tok):
    chat = make_session(max_turns=3)
    chat.history = alternate(WORDS[:6])
    prompt = chat.render_prompt("seven")
    # Seed semantics: max_turns utterances per exchange, the reply included -> 2 in the prompt.
    expected = render_messages(
        [*alternate(WORDS[:6])[-1:], {"role": "user", "content": "seven"}], tok
    )
    assert prompt["input_ids"] == expected["input_ids"]
    assert prompt["token_type_ids"] == expected["token_type_ids"]
    assert tok.decode(prompt["input_ids"]) == "<bos><sp2>six<sp1>seven<sp2>"


def test_window_is_cropped_by_whole_utterances_to_fit_the_context(make_session, tok):
    history = alternate([f"{w} " * 6 for w in WORDS])  # 6 tokens each
    chat = make_session(max_turns=50, max_len=40, max_new_tokens=16)
    chat.history = history
    prompt = chat.render_prompt("last one")
    assert len(prompt["input_ids"]) + 16 <= 40
    kept = [m for m in history if f"{m['content'].strip()}" in tok.decode(prompt["input_ids"])]
    # whatever was kept is a suffix of whole messages, rendered exactly as the renderer does
    suffix = history[len(history) - len(kept) :]
    assert kept == suffix and 0 < len(kept) < len(history)
    expected = render_messages([*suffix, {"role": "user", "content": "last one"}], tok)
    assert prompt["input_ids"] == expected["input_ids"]
    reply = chat.send("last one")  # and generation fits
    assert isinstance(reply, str)
    assert chat.last_turn.prompt_tokens + chat.last_turn.generated_tokens <= 40


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


# --------------------------------------------------------------------------- streaming
def test_stream_yields_the_same_text_as_send(make_session):
    streamed = make_session(max_new_tokens=12)
    sent = make_session(max_new_tokens=12)
    for text in ["Hello there!", "How is it going?", "Good 😀"]:
        pieces = list(streamed.stream(text))
        assert "".join(pieces) == sent.send(text)
        assert all(pieces)
    assert streamed.history == sent.history


def test_abandoned_stream_records_nothing_and_the_session_goes_on(make_session):
    chat = make_session(max_new_tokens=12)
    plain = make_session(max_new_tokens=12, prefix_cache=False)
    chat.send("Hi")
    plain.send("Hi")
    pieces = chat.stream("Tell me a story")
    next(pieces, None)
    pieces.close()
    assert len(chat.history) == 2
    assert chat.send("Tell me a story") == plain.send("Tell me a story")


def test_stream_refuses_bad_input_before_generating(make_session):
    chat = make_session()
    with pytest.raises(ValueError, match="empty"):
        chat.stream("   ")
    assert chat.history == []


def test_send_while_streaming_is_refused(make_session):
    chat = make_session(max_new_tokens=12)
    pieces = chat.stream("Hello")
    next(pieces)
    with pytest.raises(RuntimeError, match="still being streamed"):
        chat.send("again")
    pieces.close()
    chat.send("again")


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


def test_untokenized_tokenizer_is_refused(gpt2, gpt2_tokenizer):
    with pytest.raises(ValueError, match="add_speaker_tokens"):
        ChatSession(gpt2, gpt2_tokenizer)


def test_model_without_speaker_embeddings_is_refused(tok):
    from ..conftest import tiny_gpt2

    with pytest.raises(ValueError, match="embeddings"):
        ChatSession(tiny_gpt2(), tok)


# --------------------------------------------------------------------------- transcripts
def test_transcript_roundtrip(make_session, tmp_path):
    chat = make_session(persona="I am a pirate.")
    chat.send("Ahoy!")
    chat.send("Where is the treasure? 😀")
    path = chat.save_transcript(tmp_path / "t.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["persona"] == "I am a pirate."
    assert data["messages"] == chat.history
    other = make_session()
    other.load_transcript(path)
    assert other.history == chat.history and other.persona == chat.persona
    assert other.send("Next!") == chat.send("Next!")


def test_load_a_plain_message_list_and_reject_bad_files(make_session, tmp_path):
    chat = make_session()
    plain = tmp_path / "messages.json"
    plain.write_text(
        json.dumps(
            [
                {"role": "system", "content": "Be nice."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ]
        )
    )
    chat.load_transcript(plain)
    assert chat.persona == "Be nice." and len(chat.history) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}')
    with pytest.raises(ValueError, match="robot"):
        chat.load_transcript(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not a JSON transcript"):
        chat.load_transcript(bad)
    with pytest.raises(FileNotFoundError):
        chat.load_transcript(tmp_path / "missing.json")
