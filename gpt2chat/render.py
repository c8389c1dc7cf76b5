"""The format: the one renderer, messages -> ``input_ids`` / ``token_type_ids`` / ``labels``.

This module owns the layout and every form of it: :func:`render_ids` (one example from
tokenised utterances), :func:`render_messages` (chat messages, with the window of
:func:`fit_window`), :func:`render_batch` (the same function over a batch, with numpy, for
:func:`gpt2chat.prepare_dataset`) and :func:`build_chat_template` (the Jinja chat template
generated from the same tokens and the same defusing, for the model card's snippet, TRL and
any other ``apply_chat_template`` caller). Training features, chat, serving and evaluation all
go through it, so they cannot disagree on the format::

    <bos> [persona] <sp1> u1 <sp2> u2 ... <sp1> u_n <sp2> reply <eos>

* ``token_type_ids`` hold, for every position, the speaker token of its utterance; ``<bos>``
  takes the first utterance's speaker, the persona segment the ``<bos>`` id, ``<eos>`` the
  reply's speaker (``<sp2>``).
* ``labels`` are ``-100`` everywhere except the reply's tokens and its ``<eos>``.
* Text is tokenised without the tokenizer's own special tokens, and any special-token string
  typed inside a text is defused (a WORD JOINER, U+2060, after its first character), so user
  text can never produce a special token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

from .tokens import DEFUSE_CHAR, SpeakerTokens, get_speaker_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "build_chat_template",
    "defuse_special_tokens",
    "encode_texts",
    "fit_window",
    "render_batch",
    "render_ids",
    "render_messages",
    "special_strings",
]

IGNORE_INDEX = -100


def special_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Every added-token string the tokenizer would turn into a single id (longest first)."""
    contents = {t.content for t in tokenizer.added_tokens_decoder.values() if t.content.strip()}
    return sorted(contents, key=lambda s: (-len(s), s))


def defuse_special_tokens(
    text: str, strings: Sequence[str], first_chars: frozenset[str] | None = None
) -> str:
    """Make ``text`` plain text: insert U+2060 after the first character of every special string.

    The chat template applies the same replacements in the same order. ``first_chars`` (the
    strings' first characters, computed when not given) skips the strings at once for a text
    that holds none of them: most texts, and Gemma has 6,324 special strings.
    """
    if first_chars is None:
        first_chars = frozenset(s[0] for s in strings)
    if not any(c in text for c in first_chars):
        return text
    for s in strings:
        if s in text:
            text = text.replace(s, s[0] + DEFUSE_CHAR + s[1:])
    return text


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Tokenise utterances as plain text (stripped, no special tokens added or recognised).

    A fast (Rust-backed) tokenizer is called through its backend's ``encode_batch_fast``: the
    same ids as ``tokenizer(texts, add_special_tokens=False)``, without building a
    ``BatchEncoding`` (offsets, attention masks), which costs more than the tokenisation itself.
    """
    strings = special_strings(tokenizer)
    firsts = frozenset(s[0] for s in strings)
    clean = [defuse_special_tokens(str(t).strip(), strings, firsts) for t in texts]
    if not clean:
        return []
    backend = _plain_backend(tokenizer)
    try:
        if backend is not None:
            return [e.ids for e in backend.encode_batch_fast(clean, add_special_tokens=False)]
        return tokenizer(clean, add_special_tokens=False)["input_ids"]
    except Exception:
        _check_unicode(clean)  # the usual cause, named; anything else propagates as it was
        raise


def _check_unicode(texts: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming the first text that is not valid Unicode (an unpaired
    UTF-16 surrogate such as ``"\\ud800"``, which no tokenizer can read)."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"Text {i} ({text[:30]!r}...) contains an unpaired UTF-16 surrogate "
                f"({text[err.start]!r} at character {err.start}): pass valid Unicode text."
            ) from None


def _plain_backend(tokenizer: PreTrainedTokenizerBase):
    """The ``tokenizers.Tokenizer`` to call directly, or ``None`` to go through ``__call__``.

    Only when calling it gives exactly what ``__call__`` gives: no truncation or padding left
    set on the backend, and the same special-token splitting as the tokenizer's setting.
    """
    if not getattr(tokenizer, "is_fast", False):
        return None
    try:
        from transformers import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # pragma: no cover - another transformers layout
        return None
    cls = type(tokenizer)
    if (
        cls.__call__ is not PreTrainedTokenizerBase.__call__
        or getattr(cls, "_encode_plus", None) is not TokenizersBackend._encode_plus
    ):
        return None  # a subclass that prepares the text itself
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return None
    if backend.truncation is not None or backend.padding is not None:
        return None
    if bool(getattr(backend, "encode_special_tokens", False)) != bool(
        getattr(tokenizer, "split_special_tokens", False)
    ):
        return None
    return backend


def fit_window(
    utterance_lengths: Sequence[int],
    end: int,
    *,
    max_turns: int,
    max_len: int,
    persona_length: int = 0,
    reserve: int = 1,
) -> int | None:
    """First index of the longest window ending at ``end`` (inclusive) that fits.

    The window holds at most ``max_turns`` utterances and ``<bos> persona (<sp> u)*`` plus
    ``reserve`` more tokens (the ``<eos>`` in training, the new tokens in chat) fit in
    ``max_len``. Whole utterances are dropped from the left; the persona is kept whole.
    Returns ``None`` when even the last utterance alone does not fit.
    """
    start = max(0, end - max_turns + 1)
    total = 1 + persona_length + reserve + sum(n + 1 for n in utterance_lengths[start : end + 1])
    while total > max_len and start < end:
        total -= utterance_lengths[start] + 1
        start += 1
    return start if total <= max_len else None


def render_ids(
    utterances: Sequence[Sequence[int]],
    speakers: Sequence[int],
    tokens: SpeakerTokens,
    *,
    persona: Sequence[int] | None = None,
    supervise_last: bool = True,
    add_generation_prompt: bool = False,
) -> dict[str, list[int]]:
    """Assemble one sequence from tokenised utterances.

    Args:
        utterances: token ids of each utterance (no speaker tokens).
        speakers: the speaker token id (``tokens.sp1_token_id`` or ``sp2_token_id``) of each.
        tokens: the format's special tokens.
        persona: token ids of the persona / system text, placed right after ``<bos>``.
        supervise_last: the last utterance is the reply: append ``<eos>`` and put it and the
            reply's tokens in ``labels``.
        add_generation_prompt: end with the bot's speaker token, ready to generate a reply.

    Returns:
        ``{"input_ids", "token_type_ids", "labels"}`` lists of equal length.
    """
    assert len(utterances) == len(speakers), "one speaker per utterance"
    assert not (supervise_last and add_generation_prompt), "a reply or a prompt, not both"
    first = speakers[0] if speakers else tokens.sp2_token_id
    input_ids = [tokens.bos_token_id]
    token_types = [first]
    if persona:
        input_ids += persona
        token_types += [tokens.bos_token_id] * len(persona)
    labels = [IGNORE_INDEX] * len(input_ids)
    last = len(utterances) - 1
    for i, (utt, spk) in enumerate(zip(utterances, speakers)):
        input_ids.append(spk)
        input_ids += utt
        token_types += [spk] * (len(utt) + 1)
        if supervise_last and i == last:
            labels.append(IGNORE_INDEX)
            labels += utt
        else:
            labels += [IGNORE_INDEX] * (len(utt) + 1)
    if supervise_last and utterances:
        input_ids.append(tokens.eos_token_id)
        token_types.append(speakers[-1])
        labels.append(tokens.eos_token_id)
    if add_generation_prompt:
        input_ids.append(tokens.sp2_token_id)
        token_types.append(tokens.sp2_token_id)
        labels.append(IGNORE_INDEX)
    return {"input_ids": input_ids, "token_type_ids": token_types, "labels": labels}


def render_messages(
    messages: Sequence[Mapping[str, str]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    tokens: SpeakerTokens | None = None,
    add_generation_prompt: bool = True,
    max_turns: int | None = None,
    max_len: int | None = None,
    reserve: int = 0,
) -> dict[str, list[int]]:
    """Render chat ``messages`` (``system``/``user``/``assistant``) like the chat template does.

    ``system`` (first message only) is the persona text; ``user`` is ``<sp1>``, ``assistant``
    ``<sp2>``. With ``add_generation_prompt`` the sequence ends with ``<sp2>``; otherwise a
    conversation ending with an assistant message is rendered as a training example (its last
    reply supervised, ending with ``<eos>``).

    ``max_turns`` keeps only the last utterances, and ``max_len`` drops further whole
    utterances from the left until the sequence plus ``reserve`` tokens fits.
    """
    tokens = tokens or get_speaker_tokens(tokenizer)
    persona_text = None
    body = list(messages)
    if body and body[0].get("role") == "system":
        persona_text = body.pop(0).get("content", "")
    speakers = []
    for i, m in enumerate(body):
        role = m.get("role")
        if role == "user":
            speakers.append(tokens.sp1_token_id)
        elif role == "assistant":
            speakers.append(tokens.sp2_token_id)
        else:
            raise ValueError(
                f"messages[{i + (persona_text is not None)}] has role {role!r}: use 'user' or "
                "'assistant' (and an optional first 'system' message for the persona)."
            )
    encoded = encode_texts(
        tokenizer, [m.get("content", "") for m in body] + ([persona_text] if persona_text else [])
    )
    persona = encoded.pop() if persona_text else None
    supervise = not add_generation_prompt and bool(body) and body[-1]["role"] == "assistant"
    if body and (max_turns is not None or max_len is not None):
        start = fit_window(
            [len(u) for u in encoded],
            len(encoded) - 1,
            max_turns=max_turns or len(encoded),
            max_len=max_len if max_len is not None else 10**12,
            persona_length=len(persona or ()),
            reserve=int(supervise) + int(add_generation_prompt) + reserve,
        )
        if start is None:
            raise ValueError(
                f"The last message ({len(encoded[-1])} tokens) does not fit in max_len={max_len} "
                f"with {reserve} tokens reserved; shorten it or raise max_len."
            )
        encoded, speakers = encoded[start:], speakers[start:]
    return render_ids(
        encoded,
        speakers,
        tokens,
        persona=persona,
        supervise_last=supervise,
        add_generation_prompt=add_generation_prompt,
    )


def render_batch(
    encoded: list[list[int]],
    sizes: np.ndarray,
    tokens: SpeakerTokens,
    *,
    personas: list[list[int]] | None = None,
    max_turns: int,
    max_len: int,
    reply_speakers: str = "sp2",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`render_ids` on the window :func:`fit_window` picks (``reserve=1``), for every reply
    of a batch of tokenised dialogues at once, as flat arrays.

    The same function as the single-example form, computed with array operations instead of a
    Python loop over examples and tokens (what :func:`gpt2chat.prepare_dataset` maps);
    ``tests/test_render.py`` property-tests it against :func:`render_ids` and
    :func:`fit_window`, example by example.

    Args:
        encoded: token ids of every utterance, dialogue after dialogue.
        sizes: number of utterances of each dialogue.
        tokens: the format's special tokens.
        personas: token ids of each dialogue's persona text (empty: none).
        max_turns, max_len, reply_speakers: as in :func:`gpt2chat.prepare_dataset`: replies
            are the second speaker's turns (``"sp2"``) or every turn after the first
            (``"both"``, roles swapped so the replier is always ``<sp2>``).

    Returns:
        ``(owner, columns)``: the dialogue index of each example, and ``columns`` with
        ``offsets`` (``n_examples + 1``) and the concatenated ``input_ids``,
        ``token_type_ids`` and ``labels`` (int32): example ``i`` is
        ``values[offsets[i]:offsets[i + 1]]``, exactly what :func:`render_ids` gives for the
        window :func:`fit_window` picks (``reserve=1``); a reply that does not fit even alone
        has no example.
    """
    sp1, sp2 = tokens.sp1_token_id, tokens.sp2_token_id
    n_utts = len(encoded)
    first_utt = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=first_utt[1:])
    dlg_of_utt = np.repeat(np.arange(len(sizes)), sizes)
    local = np.arange(n_utts) - first_utt[dlg_of_utt]  # position inside its dialogue
    parity = local % 2
    utt_len = np.fromiter(map(len, encoded), dtype=np.int64, count=n_utts)
    # Utterance j is <sp> + its tokens at flat[seg[j] : seg[j + 1]].
    seg = np.zeros(n_utts + 1, np.int64)
    np.cumsum(utt_len + 1, out=seg[1:])
    flat = np.zeros(int(seg[-1]), np.int64)
    is_text = np.ones(len(flat), bool)
    is_text[seg[:-1]] = False
    flat[is_text] = np.fromiter(chain.from_iterable(encoded), np.int64, count=int(utt_len.sum()))

    p_len = np.zeros(len(sizes), np.int64)
    p_flat = np.zeros(0, np.int64)
    if personas is not None:
        p_len = np.fromiter(map(len, personas), dtype=np.int64, count=len(personas))
        p_flat = np.fromiter(chain.from_iterable(personas), np.int64, count=int(p_len.sum()))
    p_start = np.concatenate(([0], np.cumsum(p_len)[:-1])).astype(np.int64)

    # Replies and their windows (fit_window, vectorised): the smallest start >= the max_turns
    # bound such that <bos> + persona + flat[seg[start] : seg[h + 1]] + <eos> fits max_len.
    reply = (parity == 1) if reply_speakers == "sp2" else (local >= 1)
    h = np.flatnonzero(reply)
    d = dlg_of_utt[h]
    need = seg[h + 1] + 2 + p_len[d] - max_len
    start = np.maximum(np.maximum(first_utt[d], h - max_turns + 1), np.searchsorted(seg, need))
    keep = start <= h
    h, d, start = h[keep], d[keep], start[keep]

    body = seg[h + 1] - seg[start]
    lengths = body + p_len[d] + 2
    offsets = np.zeros(len(h) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ex = np.repeat(np.arange(len(h)), lengths)  # example of each output position
    pos = np.arange(int(offsets[-1])) - offsets[ex]  # position inside its example
    rel = pos - 1 - p_len[d][ex]  # position inside the body
    input_ids = np.full(len(ex), tokens.bos_token_id, np.int64)
    types = np.full(len(ex), tokens.bos_token_id, np.int64)
    labels = np.full(len(ex), IGNORE_INDEX, np.int64)

    at = np.flatnonzero((rel >= 0) & (rel < body[ex]))  # body positions
    e = ex[at]
    src = seg[start][e] + rel[at]  # their flat index
    utt = np.searchsorted(seg, src, side="right") - 1
    # The replier is always <sp2>: utterances with the reply's parity are sp2's.
    speaker = np.where(parity[utt] == parity[h][e], sp2, sp1)
    input_ids[at] = np.where(is_text[src], flat[src], speaker)
    types[at] = speaker
    labels[at] = np.where(src > seg[h][e], flat[src], IGNORE_INDEX)

    if len(p_flat):
        at = np.flatnonzero((pos >= 1) & (rel < 0))  # persona positions (type: <bos>)
        input_ids[at] = p_flat[p_start[d][ex[at]] + pos[at] - 1]

    first, last = offsets[:-1], offsets[1:] - 1
    types[first] = np.where(parity[start] == parity[h], sp2, sp1)  # <bos>: the first speaker
    input_ids[last] = tokens.eos_token_id
    types[last] = sp2
    labels[last] = tokens.eos_token_id
    columns = {
        "offsets": offsets,
        "input_ids": input_ids.astype(np.int32),
        "token_type_ids": types.astype(np.int32),
        "labels": labels.astype(np.int32),
    }
    return d, columns


def build_chat_template(tokenizer: PreTrainedTokenizerBase, tokens: SpeakerTokens) -> str:
    """The Jinja chat template that renders ``messages`` like the training renderer.

    ``system`` (optional, first) is the persona text right after ``<bos>``; ``user`` turns start
    with ``<sp1>``, ``assistant`` turns with ``<sp2>``. With ``add_generation_prompt`` a trailing
    ``<sp2>`` asks for the bot's reply; without it, a conversation that ends with an assistant
    turn ends with ``<eos>``, exactly as a training example does. Special-token strings inside
    message text are defused (a WORD JOINER after their first character) exactly as the
    renderer does, so user text never becomes a special token.

    That final assistant turn's text and its ``<eos>`` sit inside ``{% generation %}``: what a
    training example supervises, so ``apply_chat_template(..., return_assistant_tokens_mask=
    True)`` marks exactly the tokens whose labels are learned, and TRL's
    ``assistant_only_loss`` trains on them. Earlier assistant turns are context, as in training
    (one example per reply).
    """

    def lit(s: str) -> str:
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"

    # One loop over the special strings (a list literal, in the renderer's order), not a chain
    # of replace filters: Gemma has 6,324 added tokens, and Jinja compiles such a chain
    # recursively, one level per filter.
    specials = ", ".join(lit(s) for s in special_strings(tokenizer))
    return (
        f"{{%- set specials = [{specials}] -%}}"
        "{%- macro defuse(text) -%}"
        "{%- set d = namespace(text=text) -%}"
        "{%- for s in specials if s in d.text -%}"
        f"{{%- set d.text = d.text | replace(s, s[0] ~ {lit(DEFUSE_CHAR)} ~ s[1:]) -%}}"
        "{%- endfor -%}"
        "{{- d.text -}}"
        "{%- endmacro -%}"
        "{%- set ns = namespace(start=0) -%}"
        f"{{{{- {lit(tokens.bos_token)} -}}}}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set ns.start = 1 -%}"
        "{{- defuse(messages[0]['content'] | trim) -}}"
        "{%- endif -%}"
        "{%- for message in messages[ns.start:] -%}"
        "{%- if message['role'] == 'user' -%}"
        f"{{{{- {lit(tokens.sp1_token)} -}}}}"
        "{%- elif message['role'] == 'assistant' -%}"
        f"{{{{- {lit(tokens.sp2_token)} -}}}}"
        "{%- else -%}"
        "{{- raise_exception('gpt2chat chat template: roles must be user or assistant (and an "
        "optional first system message), got ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- if loop.last and message['role'] == 'assistant' and not add_generation_prompt -%}"
        "{%- generation -%}"
        "{{- defuse(message['content'] | trim) -}}"
        f"{{{{- {lit(tokens.eos_token)} -}}}}"
        "{%- endgeneration -%}"
        "{%- else -%}"
        "{{- defuse(message['content'] | trim) -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        f"{{{{- {lit(tokens.sp2_token)} -}}}}"
        "{%- endif -%}"
    )
