# ruff: noqa: RUF001, RUF002, RUF003  (this module is about curly quotes and apostrophes)
"""Text normalisation: tokenised corpus text (DailyDialog, Persona-Chat...) back to natural text.

DailyDialog and Persona-Chat were tokenised before release: punctuation is split off
(``"Say , Jim , how are you ?"``), contractions are cut (``"I ' m"``, ``"don ’ t"``) and
Persona-Chat is lower-cased. :func:`normalize_text` undoes this so that a model fine-tuned on
the corpora writes like a person. It is conservative: text that is already natural (``3.5``,
``e.g.``, URLs, ``Mr. Smith``, ``...``, quotes, emoticons such as ``:)``) comes out unchanged,
and applying it twice gives the same result as applying it once.

All patterns are compiled once at import; the function runs on ~100k utterances in about a
second.
"""

from __future__ import annotations

import re

__all__ = ["normalize_text"]

_QUOTES = "'’‘"

# A CJK full stop used as an English one ("Wait for me 。").
_CJK_STOP = re.compile(r"(?<=[A-Za-z0-9,.!?]) ?。")
# An escaped apostrophe ("I \ ' d").
_BACKSLASH_QUOTE = re.compile(r"\\ ?(?=['’‘])")

# Contractions with the apostrophe split off: "I ' m", "don ’ t", "it 's", "I ’ Ve".
_CONTRACTION = re.compile(r"(?<=\w) ?['’‘] ?(s|m|t|d|ll|re|ve|S|M|T|D|LL|RE|VE|Ll|Re|Ve)\b")
_NT = re.compile(r"(?<=\w) n't\b", re.IGNORECASE)  # Penn Treebank style "do n't"
_OCLOCK = re.compile(r"\b([oO]) ?['’] ?(clock)\b")
_MAAM = re.compile(r"\b([mM]a) ?['’] ?(am)\b")
_IRISH = re.compile(r"\b([OD]) ['’] (?=[A-Z][a-z])")  # "O ’ Connell"
_INNER_CURLY = re.compile(r"(?<=\w)’(?=\w)")  # "it’s" -> "it's"

# Quotes written as separate tokens.
_OPEN_CURLY = re.compile(r"([“‘]) +(?=\S)")
_CLOSE_CURLY = re.compile(r"(?<=\S) +([”’])(?!\w)")
_DOUBLE_PAIR = re.compile(r'(?<!\S)" +([^"]*?) +"(?!\w)')
_LONE_SINGLE = re.compile(r"(?<!\S)'(?!\S)")
_SINGLE_PAIR = re.compile(r"(?<!\S)' +((?:[^']|(?<=\w)'(?=\w))+?) +'(?![\w'])")
_POSSESSIVE = re.compile(r"(?<=\ws) '(?= \w)")  # "ladies ' room" -> "ladies' room"

# Punctuation spacing.
_SPACED_INITIAL = re.compile(r"\b([A-Za-z]) \. (?=[A-Za-z] \.)")  # "U . S ." / "p . m ."
_ELLIPSIS = re.compile(r"(?:(?<=\s)|^)\.(?: \.)+(?!\w)")
# "Oh ,really" -> "Oh, really". Patterns start with a literal where they can (a look-behind
# moved after it), so the regex engine jumps from candidate to candidate.
_MISPLACED_COMMA = re.compile(r" ,(?<=\w ,)(?=[A-Za-z])")
_SPACE_BEFORE = re.compile(r" +(?=[,?!%)\]]|\.(?![\w])|[;:](?:\s|$))")
_SPACE_AFTER = re.compile(r"(?<![:;=8])([(\[]) +")
_CURRENCY = re.compile(r"([$£€¥#]) +(?=\d)")
_CURRENCY_SPACED = ("$ ", "£ ", "€ ", "¥ ", "# ")
_TIME = re.compile(r"\b(\d{1,2})(?: : |: (?=(?:00|15|30|45)\b))(\d\d)\b")

# Sentences glued together: "right.But what", "worry.He is".
_GLUED = re.compile(r"[.!?](?<=[a-z][.!?])(?=[A-Z][a-z])")

# The pronoun "i" (Persona-Chat is lower-cased), not "i.e." nor a word part.
_PRONOUN_I = re.compile(r"i(?<![\w.\-/@'’]i)(?=['’](?:m|d|ll|ve)\b|[\s,?!;:)\"”]|\.(?![\w])|$)")

# A lower-case letter that starts the text or a sentence (after ". ", "! ", "? ").
_TEXT_START = re.compile(r"()([\"“‘'(\[]*)([a-z])")  # used with .match()
_SENTENCE_START = re.compile(r"([.!?]\s+)([\"“‘'(\[]*)([a-z])")
_WORD = re.compile(r"\S*")
_ABBREVIATIONS = frozenset(
    (
        "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "cf", "fig", "inc",
        "ltd", "approx", "dept", "ft", "oz", "lb", "km", "cm", "mm", "kg", "ave", "blvd",
    )
)  # fmt: skip
_LAST_TOKEN = re.compile(r"(\S+)$")


def _contraction(m: re.Match) -> str:
    suffix = m.group(1)
    if suffix.isupper():  # keep "DON'T" but not "I ’ M" / "I ’ VE"
        before = _LAST_TOKEN.search(m.string, 0, m.start())
        word = before.group(1) if before else ""
        if not (word.isupper() and len(word) > 1):
            suffix = suffix.lower()
    elif not suffix.islower():
        suffix = suffix.lower()  # "I ’ Ve" -> "I've"
    return "'" + suffix


def _unglue(m: re.Match) -> str:
    text = m.string
    token = text[text.rfind(" ", 0, m.start()) + 1 : m.end()].lower()
    if "/" in token or "@" in token or "www" in token:
        return m.group(0)  # URLs, e-mail addresses
    return m.group(0) + " "


def _single_quotes(text: str) -> str:
    if "' " not in text and not text.endswith("'"):
        return text  # no quote followed by a space: neither pattern can match
    if len(_LONE_SINGLE.findall(text)) % 2:
        text = _POSSESSIVE.sub("'", text)
    return _SINGLE_PAIR.sub(r"'\1'", text)


def _capitalize(m: re.Match) -> str:
    lead, opener, letter = m.group(1), m.group(2), m.group(3)
    word = _WORD.match(m.string, m.start(3)).group(0)
    core = word.rstrip(".,!?;:'\"”’)")
    if any(c.isupper() for c in word) or any(c in core for c in "./@_"):
        return m.group(0)  # "iPhone", "www.example.com", "e.g."
    if lead.startswith("."):
        before = _LAST_TOKEN.search(m.string, 0, m.start() + 1)
        prev = before.group(1) if before else ""
        stem = prev[:-1].lower()
        if (
            prev.endswith("..")
            or stem in _ABBREVIATIONS
            or "." in stem
            or (len(stem) == 1 and stem.isalpha() and stem not in "ai")
        ):
            return m.group(0)  # "wait... what", "e.g. this", "Mr. smith", "J. k."
    return f"{lead}{opener}{letter.upper()}"


def normalize_text(text: str) -> str:
    """Turn tokenised corpus text into natural text.

    - no space before ``, . ? ! ; : % ) ]`` nor after ``( [``; ``$ 5`` -> ``$5``;
      ``. . .`` -> ``...``; spaced quotes (``say " cheese "``) are closed up;
    - split contractions are joined (``I ' m``, ``don ’ t``, ``it 's``, ``do n't``,
      ``o ’ clock``, ``I ’ Ve`` -> ``I'm``, ``don't``, ``it's``, ``don't``, ``o'clock``,
      ``I've``) with a plain ``'``;
    - spaced initialisms are closed up (``U . S .`` -> ``U.S.``, ``7 p . m .`` -> ``7 p.m.``);
    - glued sentences are split (``right.But`` -> ``right. But``), except in URLs;
    - the pronoun ``i`` becomes ``I``, the text and every sentence (after ``.``, ``!``,
      ``?`` and a space) start with a capital letter, except after an ellipsis or an
      abbreviation (``e.g.``, ``Mr.``, ``etc.``) and for words such as ``iPhone``;
    - whitespace is collapsed and stripped.

    Args:
        text: one utterance (or sentence).

    Returns:
        The normalised text; ``""`` for blank input.
    """
    text = " ".join(str(text).split())
    if not text:
        return ""
    if "。" in text:
        text = _CJK_STOP.sub(".", text)
    if any(q in text for q in _QUOTES):
        if "\\" in text:
            text = _BACKSLASH_QUOTE.sub("", text)
        text = _CONTRACTION.sub(_contraction, text)
        if "clock" in text:
            text = _OCLOCK.sub(r"\1'\2", text)
        if "am" in text and ("ma" in text or "Ma" in text):
            text = _MAAM.sub(r"\1'\2", text)
        if " ' " in text or " ’ " in text:
            text = _IRISH.sub(r"\1'", text)
        if "’" in text or "‘" in text:
            text = _INNER_CURLY.sub("'", text)
            text = _OPEN_CURLY.sub(r"\1", text)
            text = _CLOSE_CURLY.sub(r"\1", text)
        if "'" in text:
            text = _single_quotes(text)
    if "n't" in text:
        text = _NT.sub("n't", text)
    if "“" in text or "”" in text:
        text = _OPEN_CURLY.sub(r"\1", text)
        text = _CLOSE_CURLY.sub(r"\1", text)
    if '"' in text:
        text = _DOUBLE_PAIR.sub(r'"\1"', text)
    if ". ." in text:
        text = _ELLIPSIS.sub(lambda m: "." * m.group(0).count("."), text)
    if " . " in text:
        text = _SPACED_INITIAL.sub(r"\1.", text)
    text = _GLUED.sub(_unglue, text)
    if ":" in text:
        text = _TIME.sub(r"\1:\2", text)
    if " ," in text:
        text = _MISPLACED_COMMA.sub(", ", text)
    text = _SPACE_BEFORE.sub("", text)
    if "( " in text or "[ " in text:
        text = _SPACE_AFTER.sub(r"\1", text)
    if any(c in text for c in _CURRENCY_SPACED):
        text = _CURRENCY.sub(r"\1", text)
    if "i" in text:
        text = _PRONOUN_I.sub("I", text)
    start = _TEXT_START.match(text)
    if start:
        text = _capitalize(start) + text[start.end() :]
    text = _SENTENCE_START.sub(_capitalize, text)
    return text.strip()
