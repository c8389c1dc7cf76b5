# ruff: noqa: RUF001  (DailyDialog's curly apostrophes are the point of these tests)
"""normalize_text: tokenised corpus text back to natural text, without harming natural text."""

from __future__ import annotations

import time

import pytest

from gpt2chat.data.normalize import normalize_text

from ..conftest import require_shared

TOKENISED = [
    (
        "Say , Jim , how about going for a few beers after dinner ?",
        "Say, Jim, how about going for a few beers after dinner?",
    ),
    ("I ' m here , don ’ t worry . it ’ s fine", "I'm here, don't worry. It's fine"),
    ("Good.Let ' s go now .", "Good. Let's go now."),
    ("I ’ Ve got $ 5 . That ' s 100 % true !", "I've got $5. That's 100% true!"),
    ("do n't worry , it 's ok", "Don't worry, it's ok"),
    ("I ' ll leave at ten o ’ clock , ma ’ am .", "I'll leave at ten o'clock, ma'am."),
    ("If you were a booger I \\ ' d pick you first .", "If you were a booger I'd pick you first."),
    ("Let ’ s see . . . you ’ re a Capricorn .", "Let's see... you're a Capricorn."),
    ("Uh ... yeah .. of course !", "Uh... yeah.. of course!"),
    ('Say " cheese " . OK , got you .', 'Say "cheese". OK, got you.'),
    ("You mean “ if ” they catch him ?", "You mean “if” they catch him?"),
    ("How about ‘ Run of the Mill ? ’", "How about ‘Run of the Mill?’"),
    (
        "Harvard was first named ' New College ' , without a formal name .",
        "Harvard was first named 'New College', without a formal name.",
    ),
    ("We should meet at the ladies ' room", "We should meet at the ladies' room"),
    ("Did you join the Party of China ( CPC ) ?", "Did you join the Party of China (CPC)?"),
    (
        "I missed a few classes ; I need to study : now",
        "I missed a few classes; I need to study: now",
    ),
    ("Don't worry.He is an acrobat 。", "Don't worry. He is an acrobat."),
    ("I'll pick you up around 8: 00 .", "I'll pick you up around 8:00."),
    ("Oh ,really ?", "Oh, really?"),
    ("Come at 7 p . m . The U . S . team plays .", "Come at 7 p.m. The U.S. team plays."),
    # Persona-Chat is lower-cased.
    (
        "hi , how are you doing ? i am getting ready . i'm ok ! you ?",
        "Hi, how are you doing? I am getting ready. I'm ok! You?",
    ),
    ("no . all of the girls here like it", "No. All of the girls here like it"),
    ("   lots \t of\n space  ", "Lots of space"),
    ("", ""),
    ("  \n ", ""),
]

NATURAL = [
    "It costs 3.5 dollars, e.g. this one.",
    "Mr. Smith lives at 221B Baker St. in London.",
    "Wait... what? I don't know.",
    "Visit https://example.com/Foo.Bar or www.example.com today.",
    'He said "hi" and left.',
    "He is 6' 2\" and she is 5' 8\" tall.",
    "Cool :) Is it new? :( Sad.",
    "iPhone sales are up (a lot) [citation needed].",
    "Mail me at jane.doe@example.com, i.e. my work address.",
    "It was 100% true; I paid $5, not £10.",
    "'The Drunken Beauty' is a classic.",
    "It's rock 'n' roll, isn't it?",
]


@pytest.mark.parametrize(("raw", "expected"), TOKENISED)
def test_tokenised_text_becomes_natural(raw, expected):
    assert normalize_text(raw) == expected


@pytest.mark.parametrize("text", NATURAL)
def test_natural_text_is_unchanged(text):
    assert normalize_text(text) == text


@pytest.mark.parametrize("raw", [r for r, _ in TOKENISED] + NATURAL)
def test_idempotent(raw):
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_non_string_input_is_converted():
    assert normalize_text(42) == "42"


@pytest.mark.needs_shared("data", "dailydialog", reason="normalises the real DailyDialog text")
def test_real_dailydialog_is_idempotent_and_fast():
    path = require_shared("data", "dailydialog", "validation", "dialogues_validation.txt")
    text = path.read_text(encoding="utf-8")
    utterances = [u for line in text.split("\n") for u in line.split("__eou__") if u.strip()]
    assert len(utterances) == 8069
    start = time.perf_counter()
    out = [normalize_text(u) for u in utterances]
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"normalize_text took {elapsed:.2f}s for {len(out)} utterances"
    assert all(normalize_text(o) == o for o in out)
    assert all(o for o in out)
    # No tokenisation artefacts left: spaced punctuation or split contractions.
    joined = "\n".join(out)
    for artefact in (" ,", " ?", " !", " n't", " ' s ", " ’ s ", "$ 1", "( "):
        assert artefact not in joined, artefact
