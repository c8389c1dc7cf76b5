"""Chat settings saved with a model: how :class:`~gpt2chat.ChatSession`, ``gpt2chat chat`` and
``gpt2chat serve`` decode it when not told otherwise.

A fine-tuned model folder may hold ``chat_config.json`` next to ``config.json``: the window
(``max_turns``, as in training), the sampling values, context guidance and reranking. It is
written by ``gpt2chat demo`` (the settings its transcripts were judged with) and by
``gpt2chat train`` (the training's ``max_turns``), or by :meth:`ChatSettings.save_pretrained`.
:meth:`ChatSession.from_pretrained` reads it; every argument given explicitly still wins.

```python
>>> from gpt2chat import ChatSettings
>>> ChatSettings(max_turns=3, temperature=0.7, top_p=0.9).save_pretrained("my-bot")
>>> ChatSettings.from_pretrained("my-bot").top_p
0.9
```
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .rerank import valid_mmi_contexts

#: The smallest sampling temperature: below it the scores divided by the temperature overflow
#: (a float32 score over 1e-40 is infinite) and sampling is greedy in all but name anyway. The
#: server decodes such requests greedily; ``ChatSession`` and ``ChatSettings`` refuse them.
MIN_TEMPERATURE = 1e-3

logger = logging.getLogger(__name__)

__all__ = ["CHAT_CONFIG_NAME", "ChatSettings"]

#: File name of the chat settings inside a model folder.
CHAT_CONFIG_NAME = "chat_config.json"
_FORMAT = "gpt2chat-chat-config"
_VERSION = 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ChatSettings:
    """Decoding settings of a chat model. The defaults are the original recipe's (nucleus
    sampling with ``top_p=0.8``, a 5-utterance window, 64-token replies), which is also what a
    model folder without ``chat_config.json`` gets.

    Args:
        max_turns: utterances per exchange, the reply included (as in training).
        do_sample: sample (``True``) or decode greedily.
        temperature: sampling temperature (> 0).
        top_p: nucleus sampling probability, in (0, 1].
        top_k: top-k sampling (``0``: off).
        repetition_penalty: penalty (> 0; > 1 discourages repeats) for tokens already in the
            context, or ``None`` (off).
        max_new_tokens: longest reply, in tokens.
        guidance_scale: context guidance (``ChatSession``'s ``guidance_scale``; ``1``: off).
        num_candidates: MMI reranking of this many sampled replies (``1``: off).
        mmi_weight: the weight of ``log p(reply | no conversation)`` in that reranking.
        mmi_contexts: generic messages whose one-message conversations are that reranking's
            reference side instead of the empty conversation (``ChatSession``'s
            ``mmi_contexts``), or ``None``.
    """

    max_turns: int = 5
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 0.8
    top_k: int = 0
    repetition_penalty: float | None = None
    max_new_tokens: int = 64
    guidance_scale: float = 1.0
    num_candidates: int = 1
    mmi_weight: float = 0.5
    mmi_contexts: list[str] | None = None

    def __post_init__(self) -> None:
        self._check()

    def _check(self, where: str = "") -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                value = getattr(self, name)
                raise ValueError(f"{where}`{name}` must be {rule}, got {value!r}.")

        need(_is_int(self.max_turns) and self.max_turns >= 2, "max_turns", "an integer >= 2")
        need(isinstance(self.do_sample, bool), "do_sample", "true or false")
        need(
            _is_number(self.temperature) and self.temperature >= MIN_TEMPERATURE,
            "temperature",
            f">= {MIN_TEMPERATURE:g}",
        )
        need(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p", "in (0, 1]")
        need(_is_int(self.top_k) and self.top_k >= 0, "top_k", "an integer >= 0 (0: off)")
        need(
            self.repetition_penalty is None
            or (_is_number(self.repetition_penalty) and self.repetition_penalty > 0),
            "repetition_penalty",
            "a number > 0 or null",
        )
        need(
            _is_int(self.max_new_tokens) and self.max_new_tokens >= 1,
            "max_new_tokens",
            "an integer >= 1",
        )
        need(
            _is_number(self.guidance_scale) and self.guidance_scale >= 0,
            "guidance_scale",
            "a number >= 0 (1: off)",
        )
        need(
            _is_int(self.num_candidates) and 1 <= self.num_candidates <= 64,
            "num_candidates",
            "an integer between 1 (off) and 64",
        )
        need(_is_number(self.mmi_weight) and self.mmi_weight >= 0, "mmi_weight", "a number >= 0")
        need(
            self.mmi_contexts is None or valid_mmi_contexts(self.mmi_contexts),
            "mmi_contexts",
            "a list of 1 to 16 non-empty messages or null",
        )
        if self.num_candidates > 1 and not self.do_sample:
            raise ValueError(
                f"{where}`num_candidates` > 1 reranks sampled replies: set do_sample to true or "
                "num_candidates to 1."
            )

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`~gpt2chat.ChatSession` (sampling values only when
        sampling; no ``repetition_penalty`` when it is off)."""
        kwargs = self.to_dict()
        if not self.do_sample:
            for key in ("temperature", "top_p", "top_k", "num_candidates", "mmi_weight"):
                kwargs.pop(key)
        for key in ("repetition_penalty", "mmi_contexts"):
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
        return kwargs

    def under(self, explicit: dict[str, Any]) -> dict[str, Any]:
        """``ChatSession`` keyword arguments: these settings as defaults under the ``explicit``
        ones, leaving out what the explicit ones rule out (sampling values under greedy or beam
        search, guidance under beam search, reranking with a static cache; with an explicit
        ``generation_config`` only ``max_turns``)."""
        if explicit.get("generation_config") is not None:
            return {"max_turns": self.max_turns, **explicit}
        kwargs = self.session_kwargs()
        beams = (explicit.get("num_beams") or 1) > 1
        if not explicit.get("do_sample", self.do_sample) or beams:
            for key in ("temperature", "top_p", "top_k", "num_candidates", "mmi_weight"):
                kwargs.pop(key, None)
        if beams:
            kwargs.pop("guidance_scale", None)
        if explicit.get("cache_implementation") == "static" or explicit.get("compile"):
            kwargs.pop("num_candidates", None)
        kwargs.update(explicit)
        return kwargs

    # ------------------------------------------------------------------ files
    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``chat_config.json`` into ``save_directory`` (created if needed); return its
        path."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CHAT_CONFIG_NAME
        payload = {"format": _FORMAT, "version": _VERSION, **self.to_dict()}
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_file(cls, path: str | Path) -> ChatSettings:
        """Read a ``chat_config.json`` file.

        Raises:
            ValueError: the file is not valid JSON, not a gpt2chat chat config, has unknown keys or
                a value out of range (the message names the file and the key).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); fix or delete the file.") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(
                f"{path}: not a gpt2chat chat config (expected an object with "
                f'"format": "{_FORMAT}"); fix or delete the file.'
            )
        if data.get("version") != _VERSION:
            raise ValueError(
                f"{path}: chat config version {data.get('version')!r} is not supported (this "
                f"gpt2chat reads version {_VERSION}); upgrade gpt2chat or rewrite the file."
            )
        values = {k: v for k, v in data.items() if k not in ("format", "version")}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown chat setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}."
            )
        settings = cls.__new__(cls)
        for f in fields(cls):
            setattr(settings, f.name, values.get(f.name, f.default))
        settings._check(where=f"{path}: ")
        return settings

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path) -> ChatSettings | None:
        """The settings saved with a model (a local folder, or a hub id through the hub cache),
        or ``None`` when it has none."""
        folder = Path(path_or_hub_id).expanduser()
        if folder.is_file():  # a .gguf file: settings would sit next to it, not inside
            return None
        if folder.is_dir():
            path = folder / CHAT_CONFIG_NAME
            return cls.from_file(path) if path.is_file() else None
        try:
            from transformers.utils import cached_file

            found = cached_file(
                str(path_or_hub_id),
                CHAT_CONFIG_NAME,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except (OSError, ValueError) as err:
            logger.debug("No %s for %s: %s", CHAT_CONFIG_NAME, path_or_hub_id, err)
            return None
        return cls.from_file(found) if found else None
