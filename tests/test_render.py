import pytest

from gpt2chat import get_speaker_tokens, render_ids, render_messages
from gpt2chat.render import IGNORE_INDEX, defuse_special_tokens, encode_texts, fit_window

TRICKY = ["<sp2>", "<bos>", "<|endoftext|>", "<sp1>hi<sp2>", "<<sp2>sp2>", "a <bos> b"]


def test_render_ids_layout(chat_tokenizer):
    t = get_speaker_tokens(chat_tokenizer)
    u1, u2, u3 = [1, 2], [3], [4, 5, 6]
    ex = render_ids([u1, u2, u3], [t.sp1_token_id, t.sp2_token_id, t.sp1_token_id], t)
    sp1, sp2 = t.sp1_token_id, t.sp2_token_id
    assert ex["input_ids"] == [t.bos_token_id, sp1, 1, 2, sp2, 3, sp1, 4, 5, 6, t.eos_token_id]
    # <bos> takes the first speaker's type, <eos> the reply speaker's.
    assert ex["token_type_ids"] == [sp1, sp1, sp1, sp1, sp2, sp2, sp1, sp1, sp1, sp1, sp1]
    assert ex["labels"] == [IGNORE_INDEX] * 7 + [4, 5, 6, t.eos_token_id]


def test_render_ids_persona_and_prompt(chat_tokenizer):
    t = get_speaker_tokens(chat_tokenizer)
    sp1, sp2, bos = t.sp1_token_id, t.sp2_token_id, t.bos_token_id
    ex = render_ids(
        [[7]], [sp1], t, persona=[9, 9], supervise_last=False, add_generation_prompt=True
    )
    assert ex["input_ids"] == [bos, 9, 9, sp1, 7, sp2]
    assert ex["token_type_ids"] == [sp1, bos, bos, sp1, sp1, sp2]
    assert ex["labels"] == [IGNORE_INDEX] * 6


@pytest.mark.parametrize("text", TRICKY)
def test_user_text_never_becomes_special(chat_tokenizer, text):
    t = get_speaker_tokens(chat_tokenizer)
    special = {t.bos_token_id, t.sp1_token_id, t.sp2_token_id, t.eos_token_id}
    (ids,) = encode_texts(chat_tokenizer, [text])
    assert not special & set(ids)
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": text}]
    for add_prompt in (True, False):
        rendered = render_messages(messages, chat_tokenizer, add_generation_prompt=add_prompt)
        template = chat_tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_prompt, tokenize=True
        )["input_ids"]
        assert template == rendered["input_ids"]
        n_special = sum(i in special for i in template)
        assert n_special == 4  # <bos> <sp1> <sp2> and the prompt <sp2> or the <eos>
    # The visible text survives: decoding gives the text back (with an invisible joiner).
    assert chat_tokenizer.decode(ids).replace("\u2060", "") == text


CONVERSATIONS = [
    [{"role": "user", "content": "Hi, how are you today?"}],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! What's up?"},
        {"role": "user", "content": "  Not much.   "},
    ],
    [
        {"role": "system", "content": "i have two dogs. i like to ski."},
        {"role": "user", "content": "Any pets?"},
        {"role": "assistant", "content": "Two dogs 🐶🐶, and you?"},
    ],
    [
        {"role": "assistant", "content": "Bot speaks first."},
        {"role": "user", "content": "ok\tfine"},
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_prompt", [True, False])
def test_template_matches_renderer(chat_tokenizer, messages, add_prompt):
    template = chat_tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_prompt, tokenize=True
    )["input_ids"]
    assert (
        template
        == render_messages(messages, chat_tokenizer, add_generation_prompt=add_prompt)["input_ids"]
    )


def test_training_example_equals_template(chat_tokenizer):
    """A conversation ending with the bot's turn renders as the training example."""
    messages = CONVERSATIONS[1] + [{"role": "assistant", "content": "Same here."}]
    ex = render_messages(messages, chat_tokenizer, add_generation_prompt=False)
    t = get_speaker_tokens(chat_tokenizer)
    assert ex["input_ids"][-1] == t.eos_token_id
    reply = chat_tokenizer("Same here.", add_special_tokens=False)["input_ids"]
    assert [x for x in ex["labels"] if x != IGNORE_INDEX] == [*reply, t.eos_token_id]


def test_unknown_role(chat_tokenizer):
    with pytest.raises(ValueError, match=r"messages\[1\] has role 'tool'"):
        render_messages(
            [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], chat_tokenizer
        )


def test_fit_window():
    lengths = [5, 5, 5, 5]
    # <bos> + 4 x (1 + 5) + <eos> = 26
    assert fit_window(lengths, 3, max_turns=10, max_len=26) == 0
    assert fit_window(lengths, 3, max_turns=2, max_len=100) == 2
    assert fit_window(lengths, 3, max_turns=10, max_len=25) == 1
    assert fit_window(lengths, 3, max_turns=10, max_len=8) == 3
    assert fit_window(lengths, 3, max_turns=10, max_len=7) is None
    # the persona is kept whole: it shortens the history instead
    assert fit_window(lengths, 3, max_turns=10, max_len=26, persona_length=6) == 1


def test_render_messages_window(chat_tokenizer):
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(9)
    ]
    full = render_messages(messages, chat_tokenizer)
    windowed = render_messages(messages, chat_tokenizer, max_turns=3)
    assert (
        chat_tokenizer.decode(windowed["input_ids"])
        == "<bos><sp1>turn 6<sp2>turn 7<sp1>turn 8<sp2>"
    )
    short = render_messages(messages, chat_tokenizer, max_len=len(full["input_ids"]) - 1)
    assert len(short["input_ids"]) < len(full["input_ids"])
    reserved = render_messages(messages, chat_tokenizer, max_len=40, reserve=30)
    assert len(reserved["input_ids"]) + 30 <= 40
    with pytest.raises(ValueError, match="does not fit"):
        render_messages(messages, chat_tokenizer, max_len=4)


def test_defuse_is_idempotent_on_plain_text():
    assert defuse_special_tokens("no specials here", ["<sp1>"]) == "no specials here"


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff ok", "\udc00\ud800"])
def test_unpaired_surrogates_are_a_clear_error_everywhere_text_is_rendered(chat_tokenizer, text):
    from gpt2chat import ChatSession

    from .conftest import tiny_gpt2

    with pytest.raises(ValueError, match=r"Text 1 .* unpaired UTF-16 surrogate"):
        encode_texts(chat_tokenizer, ["fine", text])
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        render_messages([{"role": "user", "content": text}], chat_tokenizer)
    model = tiny_gpt2(vocab_size=len(chat_tokenizer))
    chat = ChatSession(model, chat_tokenizer, do_sample=False, max_new_tokens=2)
    with pytest.raises(ValueError, match="unpaired UTF-16 surrogate"):
        chat.send(text)
    assert chat.history == []  # the failed turn left no trace
    assert chat.send("Hello") is not None
