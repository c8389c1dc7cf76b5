"""Tokenizer facts: the dialogue format's special tokens, read from a tokenizer, and loading one.

This module owns :class:`SpeakerTokens` (the strings and ids of ``<bos>``, ``<sp1>``, ``<sp2>``,
``<eos>`` and the pad token), :func:`get_speaker_tokens` (reads them from a tokenizer that
:func:`gpt2chat.extend.add_speaker_tokens` extended, reloaded or not), :data:`CONFIG_KEY`,
:data:`DEFUSE_CHAR` and :func:`load_tokenizer`. It sits below :mod:`gpt2chat.render` (the
format) and :mod:`gpt2chat.extend` (the extension helper) and imports neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["CONFIG_KEY", "DEFUSE_CHAR", "SpeakerTokens", "get_speaker_tokens", "load_tokenizer"]

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
    """Read the speaker tokens that :func:`gpt2chat.extend.add_speaker_tokens` recorded.

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
