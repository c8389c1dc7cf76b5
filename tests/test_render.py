"""gpt2chat.render: the format, in all its forms: render_ids / render_messages (one example),
render_batch (the same function over a batch, property-tested against them) and the chat
template (generated from the format, tested equal to render_messages on every case)."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt2chat import get_speaker_tokens, render_ids, render_messages
from gpt2chat.render import (
    IGNORE_INDEX,
    defuse_special_tokens,
    encode_texts,
    fit_window,
    render_batch,
)
from gpt2chat.tokens import SpeakerTokens

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


# --- render_batch: render_ids + fit_window(reserve=1) over a batch -----------------------------

#: Made-up special ids, outside the text ids the strategies draw (0..49).
BATCH_TOKENS = SpeakerTokens(
    bos_token="<bos>", sp1_token="<sp1>", sp2_token="<sp2>", eos_token="<eos>",
    pad_token="<eos>", bos_token_id=100, sp1_token_id=101, sp2_token_id=102,
    eos_token_id=103, pad_token_id=103,
)  # fmt: skip


def _examples_one_by_one(dialogues, personas, tokens, *, max_turns, max_len, reply_speakers):
    """``(dialogue index, render_ids(...))`` of every reply whose window fit_window finds."""
    out = []
    for i, utts in enumerate(dialogues):
        persona = personas[i] if personas is not None else None
        step = 2 if reply_speakers == "sp2" else 1
        for h in range(1, len(utts), step):
            start = fit_window(
                [len(u) for u in utts],
                h,
                max_turns=max_turns,
                max_len=max_len,
                persona_length=len(persona or ()),
                reserve=1,
            )
            if start is None:
                continue
            speakers = [
                tokens.sp2_token_id if (h - j) % 2 == 0 else tokens.sp1_token_id
                for j in range(start, h + 1)
            ]
            out.append((i, render_ids(utts[start : h + 1], speakers, tokens, persona=persona)))
    return out


def _examples_of_batch(dialogues, personas, tokens, **kwargs):
    encoded = [u for d in dialogues for u in d]
    sizes = np.array([len(d) for d in dialogues], np.int64)
    owner, columns = render_batch(encoded, sizes, tokens, personas=personas, **kwargs)
    offsets = columns["offsets"]
    assert len(offsets) == len(owner) + 1 and offsets[0] == 0
    assert offsets[-1] == len(columns["input_ids"])
    names = ("input_ids", "token_type_ids", "labels")
    assert all(columns[c].dtype == np.int32 and len(columns[c]) == offsets[-1] for c in names)
    return [
        (int(d), {c: columns[c][offsets[k] : offsets[k + 1]].tolist() for c in names})
        for k, d in enumerate(owner)
    ]


_text_ids = st.lists(st.integers(0, 49), max_size=6)  # empty utterances included


@st.composite
def _batches(draw):
    dialogues = draw(st.lists(st.lists(_text_ids, max_size=7), max_size=6))
    personas = None  # absent; else one per dialogue, some empty
    if draw(st.booleans()):
        personas = [draw(st.lists(st.integers(0, 49), max_size=5)) for _ in dialogues]
    kwargs = {
        "max_turns": draw(st.integers(1, 6)),
        "max_len": draw(st.integers(2, 40)),  # small: windows are cropped and replies skipped
        "reply_speakers": draw(st.sampled_from(["sp2", "both"])),
    }
    return dialogues, personas, kwargs


@settings(max_examples=400)
@given(batch=_batches())
def test_render_batch_is_render_ids_on_fit_window_example_by_example(batch):
    dialogues, personas, kwargs = batch
    got = _examples_of_batch(dialogues, personas, BATCH_TOKENS, **kwargs)
    assert got == _examples_one_by_one(dialogues, personas, BATCH_TOKENS, **kwargs)


def test_render_batch_cases_the_property_must_reach():
    """A few cases by hand: the window cropped, a reply skipped, a persona kept whole, roles
    swapped for a reply of the first speaker."""
    t = BATCH_TOKENS
    bos, sp1, sp2, eos = t.bos_token_id, t.sp1_token_id, t.sp2_token_id, t.eos_token_id
    dialogues = [[[1, 2], [3], [4, 5, 6], [7]], [[8]], [[9], [10] * 20]]
    personas = [[40], [], [41]]
    kwargs = {"max_turns": 3, "max_len": 8, "reply_speakers": "both"}
    got = _examples_of_batch(dialogues, personas, t, **kwargs)
    assert [(d, ex["input_ids"]) for d, ex in got] == [
        (0, [bos, 40, sp1, 1, 2, sp2, 3, eos]),
        (0, [bos, 40, sp2, 4, 5, 6, eos]),  # cropped to the reply, the persona kept
        (0, [bos, 40, sp2, 7, eos]),
    ]
    assert got == _examples_one_by_one(dialogues, personas, t, **kwargs)
    # The 20-token reply of dialogue 2 does not fit max_len=8 even alone: no example.
    assert all(d != 2 for d, _ in got)
    ((_, swapped),) = _examples_of_batch(
        [[[1], [2], [3]]], None, t, max_turns=3, max_len=64, reply_speakers="both"
    )[1:]
    assert swapped["input_ids"] == [bos, sp2, 1, sp1, 2, sp2, 3, eos]
    assert swapped["token_type_ids"] == [sp2, sp2, sp2, sp1, sp1, sp2, sp2, sp2]
    assert swapped["labels"] == [IGNORE_INDEX] * 6 + [3, eos]


# --- the chat template: generated from the format, equal to render_messages ---------------------


def _template_ids(tokenizer, messages, add_generation_prompt):
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"] if hasattr(out, "keys") else out)


PERSONA = {"role": "system", "content": "  i like tea. i have a <sp2> cat 🐈.  "}
#: Message texts the template must render exactly as the renderer does.
TEXTS = [
    "Hello there!",
    "  leading and trailing whitespace \n\t ",
    "",
    "   ",
    "<sp1>",
    "<|endoftext|>",
    "<bos>",
    "you <sp2>are<sp1> me <|endoftext|> <bos>",
    "<<sp1>> <sp1<sp1>> <|endoftext|<|endoftext|>>",
    "<\u2060sp1> already defused",
    "héllo wörld, 日本語, Ελληνικά, emoji 🐶🐶, combining e\u0301",
    "tabs\tand\nnew lines\r\n",
]


def _conversations():
    """(id, messages): with and without a persona, ending with the user or the assistant,
    starting with either, each text of TEXTS in every role."""
    for i, text in enumerate(TEXTS):
        body = [
            {"role": "user", "content": text},
            {"role": "assistant", "content": f"{text} / {TEXTS[(i + 1) % len(TEXTS)]}"},
            {"role": "user", "content": TEXTS[(i + 2) % len(TEXTS)]},
            {"role": "assistant", "content": text},
        ]
        for persona in (None, PERSONA, {"role": "system", "content": text}):
            head = [persona] if persona else []
            for end in (1, 2, 3, 4):
                yield f"text{i}-{'persona' if persona else 'none'}-{end}", head + body[:end]
            yield f"text{i}-{'persona' if persona else 'none'}-bot-first", head + body[1:]
    yield "persona-only", [PERSONA]


CASES = dict(_conversations())


@pytest.mark.parametrize("add_prompt", [True, False])
def test_template_equals_renderer_on_every_case(chat_tokenizer, add_prompt):
    t = get_speaker_tokens(chat_tokenizer)
    special = {t.bos_token_id, t.sp1_token_id, t.sp2_token_id, t.eos_token_id}
    for name, messages in CASES.items():
        rendered = render_messages(messages, chat_tokenizer, add_generation_prompt=add_prompt)
        template = _template_ids(chat_tokenizer, messages, add_prompt)
        assert template == rendered["input_ids"], name
        # Defused: the special ids are the layout's only (<bos>, one per turn, <eos>/prompt).
        body = [m for m in messages if m["role"] != "system"]
        ends_reply = not add_prompt and bool(body) and body[-1]["role"] == "assistant"
        expected = 1 + len(body) + int(ends_reply) + int(add_prompt)
        assert sum(i in special for i in template) == expected, name


@pytest.mark.parametrize("add_prompt", [True, False])
@pytest.mark.parametrize("with_persona", [False, True])
def test_template_equals_renderer_on_the_window_it_keeps(chat_tokenizer, add_prompt, with_persona):
    """render_messages(max_turns=k) is the template on the last k messages, and
    render_messages(max_len=L) the template on the longest suffix that fits L (the persona
    kept whole)."""
    head = [PERSONA] if with_persona else []
    body = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{TEXTS[i % len(TEXTS)]} {i}"}
        for i in range(8)
    ]
    for end in (7, 8):  # ending with the user, with the assistant
        messages = head + body[:end]
        for k in range(1, end + 2):
            got = render_messages(
                messages, chat_tokenizer, add_generation_prompt=add_prompt, max_turns=k
            )["input_ids"]
            assert got == _template_ids(chat_tokenizer, head + body[:end][-k:], add_prompt), k
        suffixes = [
            _template_ids(chat_tokenizer, head + body[n:end], add_prompt) for n in range(end)
        ]
        for max_len in range(1, len(suffixes[0]) + 3):
            for reserve in (0, 3):
                fitting = [ids for ids in suffixes if len(ids) + reserve <= max_len]
                kwargs = {"max_len": max_len, "reserve": reserve}
                if not fitting:
                    with pytest.raises(ValueError, match="does not fit"):
                        render_messages(
                            messages, chat_tokenizer, add_generation_prompt=add_prompt, **kwargs
                        )
                    continue
                got = render_messages(
                    messages, chat_tokenizer, add_generation_prompt=add_prompt, **kwargs
                )["input_ids"]
                assert got == fitting[0], kwargs  # the longest suffix that fits


_FRAGMENTS = [
    "hi", "a b", " ", "\n", "é", "🐶", "日本", "<", ">", "|", "sp1", "sp2", "bos", "<sp1>",
    "<sp2>", "<bos>", "<|endoftext|>", "endoftext", "\u2060",
]  # fmt: skip
_text = st.lists(st.sampled_from(_FRAGMENTS), max_size=6).map("".join)


@st.composite
def _messages(draw):
    roles = draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=6))
    messages = [{"role": r, "content": draw(_text)} for r in roles]
    if draw(st.booleans()):
        messages.insert(0, {"role": "system", "content": draw(_text)})
    return messages


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    messages=_messages(),
    add_prompt=st.booleans(),
    max_turns=st.one_of(st.none(), st.integers(1, 6)),
)
def test_template_equals_renderer_property(chat_tokenizer, messages, add_prompt, max_turns):
    """Random conversations over an alphabet of special-token pieces: the template on what the
    window keeps gives render_messages' ids, and no typed text becomes a special token."""
    rendered = render_messages(
        messages, chat_tokenizer, add_generation_prompt=add_prompt, max_turns=max_turns
    )["input_ids"]
    head = messages[:1] if messages[0]["role"] == "system" else []
    body = messages[len(head) :]
    kept = head + body[-max_turns:] if max_turns else messages
    assert rendered == _template_ids(chat_tokenizer, kept, add_prompt)
    t = get_speaker_tokens(chat_tokenizer)
    special = {t.bos_token_id, t.sp1_token_id, t.sp2_token_id, t.eos_token_id}
    n_body = len(kept) - len(head)
    ends_reply = not add_prompt and body[-1]["role"] == "assistant"
    assert sum(i in special for i in rendered) == 1 + n_body + int(ends_reply) + int(add_prompt)


def _windows(utterances, max_turns, persona=None):
    """The messages of each training example of one dialogue (replies by <sp2>), in order."""
    for r in range(1, len(utterances), 2):
        start = max(0, r - max_turns + 1)
        roles = ["assistant" if (i - r) % 2 == 0 else "user" for i in range(start, r + 1)]
        messages = [{"role": ro, "content": u} for ro, u in zip(roles, utterances[start : r + 1])]
        yield ([{"role": "system", "content": " ".join(persona)}] if persona else []) + messages


@pytest.mark.parametrize("with_persona", [False, True])
def test_the_template_marks_exactly_what_training_supervises(
    chat_tokenizer, data_dir, with_persona
):
    """apply_chat_template(..., return_assistant_tokens_mask=True) on each training example's
    messages marks the tokens prepare_dataset supervises: the reply and its <eos>."""
    import datasets

    from gpt2chat import load_dialogues, prepare_dataset

    dialogues = load_dialogues("daily_dialog", "validation", data_dir=data_dir).select(range(25))
    if with_persona:
        persona = [["i like tea.", "i have a <sp2> cat."]] * len(dialogues)
        dialogues = datasets.Dataset.from_dict(
            {"utterances": dialogues["utterances"], "persona": persona}
        )
    features = prepare_dataset(
        dialogues, chat_tokenizer, max_turns=3, max_len=1024, with_persona=with_persona
    )
    examples = iter(features)
    compared = 0
    for row in dialogues:
        for messages in _windows(row["utterances"], 3, row.get("persona")):
            example = next(examples)
            out = chat_tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            assert out["input_ids"] == example["input_ids"]
            assert out["assistant_masks"] == [int(x != -100) for x in example["labels"]]
            compared += 1
    assert compared == len(features) > 50


def test_trl_assistant_only_loss_learns_what_we_learn(chat_tokenizer, data_dir, tmp_path):
    """TRL's SFTTrainer(assistant_only_loss=True) on our template supervises exactly the tokens
    prepare_dataset supervises, and trains."""
    trl = pytest.importorskip("trl")
    import datasets

    from gpt2chat import load_dialogues, prepare_dataset

    from .conftest import tiny_gpt2

    dialogues = load_dialogues("daily_dialog", "validation", data_dir=data_dir).select(range(6))
    features = prepare_dataset(dialogues, chat_tokenizer, max_turns=3, max_len=1024)
    messages = [m for row in dialogues for m in _windows(row["utterances"], 3)]
    model = tiny_gpt2(vocab_size=len(chat_tokenizer))
    config = trl.SFTConfig(
        output_dir=str(tmp_path), assistant_only_loss=True, max_steps=2,
        per_device_train_batch_size=4, report_to="none", use_cpu=True, max_length=1024,
        logging_steps=1, save_strategy="no", dataset_num_proc=None, disable_tqdm=True,
    )  # fmt: skip
    trainer = trl.SFTTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_dict({"messages": messages}),
        processing_class=chat_tokenizer,
    )
    assert len(trainer.train_dataset) == len(features)
    for theirs, ours in zip(trainer.train_dataset, features):
        assert theirs["input_ids"] == ours["input_ids"]
        batch = trainer.data_collator([theirs])
        assert batch["labels"][0].tolist() == ours["labels"]
    trainer.train()
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)


def test_template_of_a_tokenizer_with_thousands_of_special_tokens(gpt2_tokenizer):
    """Gemma has 6,324 added tokens: the template still compiles (no recursion in Jinja), defuses
    each typed one as the renderer does, and marks the supervised reply."""
    from gpt2chat import add_speaker_tokens

    extra = [f"<unused{i}>" for i in range(6500)]
    gpt2_tokenizer.add_special_tokens({"additional_special_tokens": extra})
    add_speaker_tokens(gpt2_tokenizer)
    messages = [
        {"role": "system", "content": "I type <unused6499> and <sp2> for fun"},
        {"role": "user", "content": "Hi <unused0><unused1> <|endoftext|>"},
        {"role": "assistant", "content": "Hello <unused17>!"},
    ]
    for prompt, conversation in ((True, messages[:2]), (False, messages)):
        ids = gpt2_tokenizer.apply_chat_template(
            conversation, add_generation_prompt=prompt, tokenize=True, return_dict=True
        )["input_ids"]
        expected = render_messages(conversation, gpt2_tokenizer, add_generation_prompt=prompt)
        assert list(ids) == expected["input_ids"]
        assert not set(ids) & set(gpt2_tokenizer.convert_tokens_to_ids(extra))  # all defused
    out = gpt2_tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    learned = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert gpt2_tokenizer.decode(learned).replace("\u2060", "") == "Hello <unused17>!<|endoftext|>"
