"""The tokenizer-extension helper: speaker tokens, pad token, embeddings and the chat template."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = [
    "SpeakerTokens",
    "add_speaker_tokens",
    "build_chat_template",
    "get_speaker_tokens",
    "load_tokenizer",
]

#: Key under which the speaker tokens are recorded in ``tokenizer_config.json``.
CONFIG_KEY = "gpt2chat_speaker_tokens"
#: Inserted after the first character of a special-token string found in user text, so the
#: text stays plain text (see :func:`gpt2chat.render.defuse_special_tokens`).
DEFUSE_CHAR = "\u2060"


@dataclass(frozen=True)
class SpeakerTokens:
    """The special tokens of the dialogue format and their ids.

    A sample is ``<bos> [persona] <sp1> u1 <sp2> u2 ... <sp2> reply <eos>``.
    """

    bos_token: str
    sp1_token: str
    sp2_token: str
    eos_token: str
    pad_token: str
    bos_token_id: int
    sp1_token_id: int
    sp2_token_id: int
    eos_token_id: int
    pad_token_id: int

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def reply_stop_ids(self) -> tuple[int, int]:
        """Where a generated reply ends, for chat, serving and evaluation alike: ``<eos>``, or
        ``<sp1>`` (the model starting the user's next turn)."""
        return (self.eos_token_id, self.sp1_token_id)


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str, arg: str) -> int:
    ids = tokenizer.convert_tokens_to_ids([token])
    tid = ids[0] if ids else None
    if tid is None or (tid == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"{arg}={token!r} is not a single token of this tokenizer.")
    encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
    if encoded != [tid]:
        raise ValueError(
            f"{arg}={token!r} does not encode to a single id ({encoded}); it must be a special "
            "token of the tokenizer."
        )
    return int(tid)


def get_speaker_tokens(tokenizer: PreTrainedTokenizerBase) -> SpeakerTokens:
    """Read the speaker tokens recorded on a tokenizer by :func:`add_speaker_tokens`.

    Works on a tokenizer reloaded from disk: the token strings are stored in its
    ``tokenizer_config.json``. Raises ``ValueError`` if the tokenizer was never extended.
    """
    recorded = tokenizer.init_kwargs.get(CONFIG_KEY)
    if not recorded:
        raise ValueError(
            "This tokenizer has no gpt2chat speaker tokens: call "
            "gpt2chat.add_speaker_tokens(tokenizer, model) first."
        )
    bos, sp1, sp2 = recorded["bos_token"], recorded["sp1_token"], recorded["sp2_token"]
    eos = tokenizer.eos_token
    pad = tokenizer.pad_token if tokenizer.pad_token is not None else eos
    return SpeakerTokens(
        bos_token=bos,
        sp1_token=sp1,
        sp2_token=sp2,
        eos_token=eos,
        pad_token=pad,
        bos_token_id=_token_id(tokenizer, bos, "bos_token"),
        sp1_token_id=_token_id(tokenizer, sp1, "sp1_token"),
        sp2_token_id=_token_id(tokenizer, sp2, "sp2_token"),
        eos_token_id=_token_id(tokenizer, eos, "eos_token"),
        pad_token_id=_token_id(tokenizer, pad, "pad_token"),
    )


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
    at map time, so the eos is still learned), installs a Jinja chat template that renders
    ``messages`` exactly like :func:`gpt2chat.render.render_messages`, and records the tokens
    in the tokenizer's config so a reloaded tokenizer knows them.

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
    from .render import special_strings

    def lit(s: str) -> str:
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"

    defuse = "".join(
        f"|replace({lit(s)}, {lit(s[0] + DEFUSE_CHAR + s[1:])})" for s in special_strings(tokenizer)
    )
    return (
        "{%- set ns = namespace(start=0) -%}"
        f"{{{{- {lit(tokens.bos_token)} -}}}}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set ns.start = 1 -%}"
        f"{{{{- (messages[0]['content'] | trim){defuse} -}}}}"
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
        f"{{{{- (message['content'] | trim){defuse} -}}}}"
        f"{{{{- {lit(tokens.eos_token)} -}}}}"
        "{%- endgeneration -%}"
        "{%- else -%}"
        f"{{{{- (message['content'] | trim){defuse} -}}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        f"{{{{- {lit(tokens.sp2_token)} -}}}}"
        "{%- endif -%}"
    )


def load_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained``, plus GPT-2's raw files.

    A folder that holds only OpenAI's ``vocab.json`` and ``merges.txt`` (no
    ``tokenizer_config.json``) loads as a ``GPT2TokenizerFast``. A ``.gguf`` file path loads
    the tokenizer stored inside it.
    """
    from pathlib import Path

    from transformers import AutoTokenizer, GPT2TokenizerFast

    path = Path(name_or_path)
    if path.suffix == ".gguf" and path.is_file():
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
    if (
        path.is_dir()
        and (path / "vocab.json").is_file()
        and (path / "merges.txt").is_file()
        and not (path / "tokenizer_config.json").is_file()
    ):
        return GPT2TokenizerFast.from_pretrained(str(path), **kwargs)
    return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
