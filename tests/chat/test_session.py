"""ChatSession on a tiny random GPT-2 with the suite's GPT-2-format tokenizer: prompts, window,
streaming, transcripts (the decoding under it: test_engine.py)."""

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


# --------------------------------------------------------------------------- checks
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
