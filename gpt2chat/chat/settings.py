"""Chat settings saved with a model: how :class:`~gpt2chat.ChatSession`, ``gpt2chat chat`` and
``gpt2chat serve`` decode it when not told otherwise.

One type, :class:`ChatSettings`, saved in the two files where each value is read:

* the standard decoding fields (``do_sample``, ``temperature``, ``top_p``, ``top_k``,
  ``repetition_penalty``, ``max_new_tokens``) go into ``generation_config.json``, which
  transformers' ``generate``, vLLM and other engines read; the stop ids (``<eos>`` and
  ``<sp1>``) are there too (set by :func:`gpt2chat.add_speaker_tokens`);
* what no other engine knows goes into gpt2chat's own ``chat_config.json``: the window
  (``max_turns``, as in training), context guidance, reranking, and whether the model was
  trained with ``token_type_ids``.

No field is in both files. They are written by ``gpt2chat train`` (every save), ``gpt2chat
demo`` and ``gpt2chat export``, or by :meth:`ChatSettings.save_pretrained`.
:meth:`ChatSession.from_pretrained` reads them; every argument given explicitly still wins.

```python
>>> from gpt2chat import ChatSettings
>>> ChatSettings(max_turns=3, temperature=0.7, top_p=0.9).save_pretrained("my-bot")
>>> ChatSettings.from_pretrained("my-bot").top_p
0.9
```
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .rerank import valid_mmi_contexts

#: The smallest sampling temperature: below it the scores divided by the temperature overflow
#: (a float32 score over 1e-40 is infinite) and sampling is greedy in all but name anyway. The
#: server decodes such requests greedily; ``ChatSession`` and ``ChatSettings`` refuse them.
MIN_TEMPERATURE = 1e-3

logger = logging.getLogger(__name__)

__all__ = ["CHAT_CONFIG_NAME", "CHAT_FIELDS", "GENERATION_FIELDS", "ChatSettings"]

#: File name of gpt2chat's own settings inside a model folder.
CHAT_CONFIG_NAME = "chat_config.json"
#: transformers' file of the standard decoding settings.
GENERATION_CONFIG_NAME = "generation_config.json"
_FORMAT = "gpt2chat-chat-config"
#: Version 1 files held every field; version 2 holds :data:`CHAT_FIELDS` only.
_VERSION = 2
#: Field metadata: ``file`` (where the value is saved), ``sampling`` (used only when sampling),
#: ``generate_default`` (what ``generate`` uses when ``generation_config.json`` leaves it out),
#: ``neutral`` (the ``generation_config.json`` value meaning "off", read as ``None``).
_GEN, _CHAT = {"file": GENERATION_CONFIG_NAME}, {"file": CHAT_CONFIG_NAME}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ChatSettings:
    """Decoding settings of a chat model. The defaults are the original recipe's (nucleus
    sampling with ``top_p=0.8``, a 5-utterance window, 64-token replies), which is also what a
    model folder without ``chat_config.json`` gets.

    Each field is declared once, below: its type, default, ``help`` (what ``--help`` shows in
    every front end), the file it is saved in, and whether it is used only when sampling;
    ``_check`` holds the rules. ``use_token_type_ids`` is the record of whether the model was
    trained with ``token_type_ids`` (``None``: no record, from a checkpoint saved before
    gpt2chat recorded it: token types are fed when the model's forward accepts them, as then).
    """

    max_turns: int = field(
        default=5,
        metadata={**_CHAT, "help": "Utterances per exchange, the reply included (as in training)."},
    )
    do_sample: bool = field(
        default=True,
        metadata={
            **_GEN,
            "generate_default": False,
            "help": "Sample (true) or decode greedily (false).",
        },
    )
    temperature: float = field(
        default=1.0,
        metadata={
            **_GEN,
            "sampling": True,
            "generate_default": 1.0,
            "help": "Sampling temperature.",
        },
    )
    top_p: float = field(
        default=0.8,
        metadata={
            **_GEN,
            "sampling": True,
            "generate_default": 1.0,
            "help": "Nucleus sampling probability.",
        },
    )
    top_k: int = field(
        default=0,
        metadata={
            **_GEN,
            "sampling": True,
            "generate_default": 50,
            "help": "Top-k sampling (0: off).",
        },
    )
    repetition_penalty: float | None = field(
        default=None,
        metadata={
            **_GEN,
            "neutral": 1.0,
            "help": "Penalty (> 1) for tokens already in the context.",
        },
    )
    max_new_tokens: int = field(default=64, metadata={**_GEN, "help": "Longest reply, in tokens."})
    guidance_scale: float = field(
        default=1.0,
        metadata={
            **_CHAT,
            "help": "Context guidance: contrast the reply's scores given the conversation with "
            "those given none (1: off; 1.2-1.5 for small models; not with beam search).",
        },
    )
    num_candidates: int = field(
        default=1,
        metadata={
            **_CHAT,
            "sampling": True,
            "help": "Sample this many replies side by side and answer with the one the "
            "conversation explains best (MMI reranking; 1: off; needs sampling). The reply then "
            "comes whole, not streamed.",
        },
    )
    mmi_weight: float = field(
        default=0.5,
        metadata={
            **_CHAT,
            "sampling": True,
            "help": "With num_candidates: score = log p(reply | conversation) - mmi_weight * "
            "log p(reply | no conversation).",
        },
    )
    mmi_contexts: list[str] | None = field(
        default=None,
        metadata={
            **_CHAT,
            "help": "With num_candidates: generic messages whose one-message conversations "
            "replace the empty conversation in that score.",
        },
    )
    use_token_type_ids: bool | None = field(
        default=None,
        metadata={
            **_CHAT,
            "help": "Feed token_type_ids (for a model trained with them; default: what "
            "training recorded).",
        },
    )

    def __post_init__(self) -> None:
        self._check()

    def _check(self, where: str = "", flags: bool = False) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                value = getattr(self, name)
                label = f"--{name}" if flags else f"`{name}`"
                raise ValueError(f"{where}{label} must be {rule}, got {value!r}.")

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
        need(
            self.use_token_type_ids is None or isinstance(self.use_token_type_ids, bool),
            "use_token_type_ids",
            "true, false or null",
        )
        if self.num_candidates > 1 and not self.do_sample:
            label = "--num_candidates" if flags else "`num_candidates`"
            raise ValueError(
                f"{where}{label} > 1 reranks sampled replies: set do_sample to true or "
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
            for key in SAMPLING_FIELDS:
                kwargs.pop(key)
        for key in ("repetition_penalty", "mmi_contexts", "use_token_type_ids"):
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
            for key in SAMPLING_FIELDS:
                kwargs.pop(key, None)
        if beams:
            kwargs.pop("guidance_scale", None)
        if explicit.get("cache_implementation") == "static" or explicit.get("compile"):
            kwargs.pop("num_candidates", None)
        kwargs.update(explicit)
        return kwargs

    # ------------------------------------------------------------------ files
    def apply_to(self, generation_config) -> None:
        """Write the standard decoding fields into a ``GenerationConfig`` (in place). Under greedy
        decoding the sampling fields are unset, as transformers requires."""
        for name in GENERATION_FIELDS:
            used = self.do_sample or name not in SAMPLING_FIELDS
            setattr(generation_config, name, getattr(self, name) if used else None)

    def save_pretrained(
        self, save_directory: str | Path, generation_config=None, tokens=None
    ) -> Path:
        """Write the settings into ``save_directory`` (created if needed): the standard decoding
        fields into ``generation_config.json`` (``generation_config``, else the folder's own file,
        updated with them), the rest into ``chat_config.json``, whose path is returned.

        With ``tokens`` (the model's :class:`~gpt2chat.SpeakerTokens`) the generation config also
        gets the format's ids: a reply stops at ``<eos>`` or ``<sp1>`` (``eos_token_id``), and
        the ``bos`` / ``pad`` ids; otherwise the ids already there are kept.
        """
        from transformers import GenerationConfig

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        if generation_config is not None:
            generation = GenerationConfig.from_dict(generation_config.to_dict())
        elif (folder / GENERATION_CONFIG_NAME).is_file():
            generation = GenerationConfig.from_pretrained(str(folder))
        else:
            generation = GenerationConfig()
        self.apply_to(generation)
        if tokens is not None:
            generation.eos_token_id = list(tokens.reply_stop_ids)
            generation.bos_token_id = tokens.bos_token_id
            generation.pad_token_id = tokens.pad_token_id
        generation.save_pretrained(str(folder))
        path = folder / CHAT_CONFIG_NAME
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            **{key: getattr(self, key) for key in CHAT_FIELDS},
        }
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}); fix or delete the file.") from None

    @classmethod
    def _generation_values(cls, path: Path | None) -> dict[str, Any]:
        """The standard decoding fields of a ``generation_config.json`` (``None``: no file, the
        defaults). A field the file leaves out is what ``generate`` uses for it; sampling fields
        under greedy decoding keep this class's defaults."""
        if path is None:
            return {}
        data = cls._read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a generation config (a JSON object); fix the file.")
        sampling = data.get("do_sample", False)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.metadata["file"] != GENERATION_CONFIG_NAME:
                continue
            if f.metadata.get("sampling") and sampling is not True:
                continue  # unused under greedy decoding (transformers ignores them too)
            value = data.get(f.name, f.metadata.get("generate_default"))
            if value is not None and value == f.metadata.get("neutral", object()):
                value = None  # "off"
            if value is not None or "neutral" in f.metadata:
                values[f.name] = value
        return values

    @classmethod
    def from_file(
        cls, path: str | Path, generation_config: str | Path | None = None
    ) -> ChatSettings:
        """Read a ``chat_config.json`` file, and the standard decoding fields from
        ``generation_config`` (default: the ``generation_config.json`` beside it, if any).

        A version-1 file (written before the standard fields moved to
        ``generation_config.json``) holds every field and is read alone.

        Raises:
            ValueError: a file is not valid JSON, not a gpt2chat chat config, has unknown keys or
                a value out of range (the message names the file and the key).
        """
        path = Path(path)
        data = cls._read_json(path)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(
                f"{path}: not a gpt2chat chat config (expected an object with "
                f'"format": "{_FORMAT}"); fix or delete the file.'
            )
        version = data.get("version")
        if version not in (1, _VERSION):
            raise ValueError(
                f"{path}: chat config version {version!r} is not supported (this "
                f"gpt2chat reads versions 1 and {_VERSION}); upgrade gpt2chat or rewrite the file."
            )
        values = {k: v for k, v in data.items() if k not in ("format", "version")}
        known = set(CHAT_FIELDS) if version == _VERSION else {f.name for f in fields(cls)}
        misplaced = sorted(set(values) & set(GENERATION_FIELDS) - known)
        if misplaced:
            raise ValueError(
                f"{path}: {', '.join(misplaced)} belong(s) in {GENERATION_CONFIG_NAME}, where "
                "transformers and other engines read them; move them there."
            )
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown chat setting(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}."
            )
        where = f"{path}: "
        if version == _VERSION:
            if generation_config is None:
                beside = path.parent / GENERATION_CONFIG_NAME
                generation_config = beside if beside.is_file() else None
            generation = cls._generation_values(
                Path(generation_config) if generation_config else None
            )
            cls.of(generation, where=f"{generation_config}: ")
            values.update(generation)
        return cls.of(values, where=where)

    @classmethod
    def of(
        cls,
        values: dict[str, Any],
        *,
        base: ChatSettings | None = None,
        check: bool = True,
        where: str = "",
        flags: bool = False,
    ) -> ChatSettings:
        """``base`` (default: the defaults) with ``values``, checked as a whole unless ``check``
        is false (values whose combination is checked where they meet, e.g. the server's
        defaults, reranking applying to the requests that sample). Errors start with ``where``
        and name ``--flags`` with ``flags``."""
        settings = copy.copy(base) if base is not None else cls.__new__(cls)
        for f in fields(cls):
            if f.name in values or base is None:
                setattr(settings, f.name, values.get(f.name, f.default))
        if check:
            settings._check(where=where, flags=flags)
        return settings

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path) -> ChatSettings | None:
        """The settings saved with a model (a local folder, or a hub id through the hub cache),
        or ``None`` when it has no ``chat_config.json``."""
        folder = Path(path_or_hub_id).expanduser()
        if folder.is_file():  # a .gguf file: settings would sit next to it, not inside
            return None
        if folder.is_dir():
            path = folder / CHAT_CONFIG_NAME
            return cls.from_file(path) if path.is_file() else None
        found = cls._cached(path_or_hub_id, CHAT_CONFIG_NAME)
        if not found:
            return None
        return cls.from_file(found, cls._cached(path_or_hub_id, GENERATION_CONFIG_NAME))

    @staticmethod
    def _cached(hub_id: str | Path, name: str) -> str | None:
        try:
            from transformers.utils import cached_file

            return cached_file(
                str(hub_id),
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except (OSError, ValueError) as err:
            logger.debug("No %s for %s: %s", name, hub_id, err)
            return None


#: The standard decoding fields, saved in ``generation_config.json`` (from the declarations).
GENERATION_FIELDS = tuple(
    f.name for f in fields(ChatSettings) if f.metadata["file"] == GENERATION_CONFIG_NAME
)
#: What only gpt2chat knows, saved in ``chat_config.json``.
CHAT_FIELDS = tuple(f.name for f in fields(ChatSettings) if f.metadata["file"] == CHAT_CONFIG_NAME)
#: The fields used only when sampling.
SAMPLING_FIELDS = tuple(f.name for f in fields(ChatSettings) if f.metadata.get("sampling"))
