"""The tokenizer-extension helper: speaker tokens added, embeddings resized, the chat template
installed.

This module owns :func:`add_speaker_tokens`, the one step that turns a base tokenizer (and
model) into one that speaks the dialogue format: it adds ``<bos>``, ``<sp1>``, ``<sp2>`` (and
a pad token), records them for :func:`gpt2chat.tokens.get_speaker_tokens`, grows and
initialises the model's embeddings, and installs the chat template that
:func:`gpt2chat.render.build_chat_template` generates from the format. It sits above
:mod:`gpt2chat.tokens` (tokenizer facts) and :mod:`gpt2chat.render` (the format).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from .render import build_chat_template
from .tokens import CONFIG_KEY, SpeakerTokens, get_speaker_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["add_speaker_tokens"]


def add_speaker_tokens(
    tokenizer: PreTrainedTokenizerBase,
    model: PreTrainedModel | None = None,
    *,
    bos_token: str = "<bos>",
    sp1_token: str = "<sp1>",
    sp2_token: str = "<sp2>",
    init_from: dict[str, str] | None = None,
) -> SpeakerTokens:
    """Extend a tokenizer (and optionally its model) with the dialogue format's special tokens.

    Adds ``bos_token`` as the tokenizer's bos token and ``sp1_token`` / ``sp2_token`` as extra
    special tokens, sets the pad token to the eos token when there is none (labels are masked
    at map time, so the eos is still learned), installs the Jinja chat template of
    :func:`gpt2chat.render.build_chat_template` (it renders ``messages`` exactly like
    :func:`gpt2chat.render.render_messages`), and records the tokens in the tokenizer's config
    so a reloaded tokenizer knows them.

    With a ``model``, the input (and untied output) embeddings are resized when the new ids do
    not fit, new rows start from the mean of the existing rows (or from the mean embedding of
    the text given in ``init_from[token]``, e.g. ``{"<sp2>": "<|im_start|>assistant"}``), and
    ``bos/eos/pad_token_id`` are set on ``model.config`` and ``model.generation_config``.

    Calling it again on an extended tokenizer changes nothing. Works for any causal-LM
    tokenizer (GPT-2, DialoGPT, Llama-style such as SmolLM2).

    Args:
        tokenizer: the tokenizer to extend (modified in place).
        model: optional causal LM whose embeddings are resized to match.
        bos_token: start-of-dialogue token.
        sp1_token: token that starts every utterance of the first speaker (the user).
        sp2_token: token that starts every utterance of the second speaker (the bot).
        init_from: optional ``{new_token: text}``; the new token's embedding starts as the mean
            of the embeddings of ``text``'s tokens instead of the mean of the vocabulary.

    Returns:
        The :class:`SpeakerTokens` (strings and ids).
    """
    for arg, tok in (("bos_token", bos_token), ("sp1_token", sp1_token), ("sp2_token", sp2_token)):
        if not isinstance(tok, str) or not tok.strip() or tok != tok.strip():
            raise ValueError(f"`{arg}` must be a non-empty string without spaces, got {tok!r}.")
    if len({bos_token, sp1_token, sp2_token}) != 3:
        raise ValueError(
            f"bos_token, sp1_token and sp2_token must differ, got {bos_token!r}, {sp1_token!r}, "
            f"{sp2_token!r}."
        )
    if tokenizer.eos_token is None:
        raise ValueError(
            "The tokenizer has no eos token; set one first, e.g. "
            "tokenizer.add_special_tokens({'eos_token': '<|endoftext|>'})."
        )
    if tokenizer.eos_token in (bos_token, sp1_token, sp2_token):
        raise ValueError(
            f"The speaker tokens must differ from the eos token {tokenizer.eos_token!r}."
        )

    recorded = tokenizer.init_kwargs.get(CONFIG_KEY)
    wanted = {"bos_token": bos_token, "sp1_token": sp1_token, "sp2_token": sp2_token}
    if recorded and recorded != wanted:
        raise ValueError(
            f"This tokenizer already has the speaker tokens {recorded}; it cannot take {wanted} too. "
            "Start from the base tokenizer to use other tokens."
        )

    old_len = len(tokenizer)
    extra = list(tokenizer.extra_special_tokens or [])
    special: dict = {}
    if tokenizer.bos_token != bos_token:
        special["bos_token"] = bos_token
    missing = [t for t in (sp1_token, sp2_token) if t not in extra]
    if missing:
        special["extra_special_tokens"] = extra + missing
    if special:
        tokenizer.add_special_tokens(special, replace_extra_special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.init_kwargs[CONFIG_KEY] = wanted
    tokens = get_speaker_tokens(tokenizer)
    template = build_chat_template(tokenizer, tokens)
    if tokenizer.chat_template != template:
        tokenizer.chat_template = template
    new_ids = list(range(old_len, len(tokenizer)))
    if special:
        logger.info("Added special tokens %s (ids %s)", special, new_ids)

    if model is not None:
        _extend_model(model, tokenizer, tokens, old_len, new_ids, init_from or {})
    return tokens


def _extend_model(model, tokenizer, tokens: SpeakerTokens, old_len: int, new_ids, init_from):
    emb = model.get_input_embeddings()
    n_rows = emb.weight.shape[0]
    if old_len > n_rows:
        raise ValueError(
            f"The tokenizer had {old_len} tokens before the speaker tokens were added but the "
            f"model's embedding matrix has only {n_rows} rows: this tokenizer does not belong to "
            "this model. Load the tokenizer that was saved with the model."
        )
    if len(tokenizer) > n_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if new_ids:
        _init_new_rows(model, tokenizer, old_len, new_ids, init_from)
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.bos_token_id = tokens.bos_token_id
        cfg.eos_token_id = tokens.eos_token_id
        cfg.pad_token_id = tokens.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        # Where a reply ends, for generate and every engine that reads generation_config.json.
        model.generation_config.eos_token_id = list(tokens.reply_stop_ids)


@torch.no_grad()
def _init_new_rows(model, tokenizer, old_len: int, new_ids: list[int], init_from: dict[str, str]):
    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(out.weight)
    id_to_token = {i: tokenizer.convert_ids_to_tokens(i) for i in new_ids}
    for w in matrices:
        mean = w[:old_len].float().mean(dim=0)
        for i in new_ids:
            source = init_from.get(id_to_token[i])
            if source is not None:
                src_ids = tokenizer(source, add_special_tokens=False)["input_ids"]
                if not src_ids:
                    raise ValueError(f"init_from[{id_to_token[i]!r}] = {source!r} has no tokens.")
                w[i] = w[src_ids].float().mean(dim=0).to(w.dtype)
            else:
                w[i] = mean.to(w.dtype)
    if out is not None and getattr(out, "bias", None) is not None:
        out.bias[new_ids] = out.bias[:old_len].mean()
