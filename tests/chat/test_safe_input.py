"""User text is plain text: special-token strings, empty, huge, control characters, emoji."""

from __future__ import annotations

import pytest

from gpt2chat import get_speaker_tokens


@pytest.mark.parametrize("text", ["<sp2>", "<bos>", "<|endoftext|>", "<sp1> hi <sp2> <bos>"])
def test_special_token_strings_stay_plain_text(make_session, tok, text):
    tokens = get_speaker_tokens(tok)
    chat = make_session()
    prompt = chat.render_prompt(text)["input_ids"]
    # Only the format's own special tokens: <bos> <sp1> ... <sp2>
    assert prompt[:2] == [tokens.bos_token_id, tokens.sp1_token_id]
    assert prompt[-1] == tokens.sp2_token_id
    body = prompt[2:-1]
    special = {tokens.bos_token_id, tokens.sp1_token_id, tokens.sp2_token_id, tokens.eos_token_id}
    assert not special & set(body)
    chat.send(text)
    assert chat.history[0] == {"role": "user", "content": text}  # recorded as typed
    again = chat.render_prompt("next")["input_ids"]
    assert again.count(tokens.sp2_token_id) == 2  # the reply's and the new generation prompt
    assert again.count(tokens.bos_token_id) == 1
    assert tokens.eos_token_id not in again


@pytest.mark.parametrize("text", ["", " ", "   \n\t  ", "\u3000"])
def test_empty_or_whitespace_input_is_refused(make_session, text):
    chat = make_session()
    with pytest.raises(ValueError, match="empty"):
        chat.send(text)
    assert chat.history == [] and chat.last_turn is None


def test_non_string_input_is_refused(make_session):
    with pytest.raises(ValueError, match="`text` must be a string"):
        make_session().send(None)


@pytest.mark.parametrize("unit", ["word ", "a", "日本語 ", "<sp2>"])
def test_very_long_input_is_cut_to_fit(make_session, unit):
    chat = make_session(max_new_tokens=16)
    chat.send("Hi")
    text = (unit * (20_000 // len(unit) + 1))[:20_000]
    assert len(text) == 20_000
    reply = chat.send(text)
    assert isinstance(reply, str)
    stats = chat.last_turn
    assert stats.truncated_input
    assert stats.prompt_tokens + 16 <= chat.max_len
    kept = chat.history[-2]["content"]
    assert 0 < len(kept) < len(text) and text.startswith(kept)
    assert chat.render_prompt("short")["input_ids"]  # the next turn still renders


def test_control_characters_and_emoji(make_session, tok):
    text = "hi\x00\x01\x07\x1b[31m red \x7f\u200b\u2060 tab\there 😀🎉👍🏽 \r\n ok"
    chat = make_session()
    reply = chat.send(text)
    assert isinstance(reply, str)
    assert chat.history[0]["content"] == text
    streamed = "".join(chat.stream("🙂" * 50))
    assert streamed == chat.history[-1]["content"]
