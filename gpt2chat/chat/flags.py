""":class:`~gpt2chat.ChatSettings` as arguments: :func:`decoding_arguments` generates, from the
settings' fields (their types, help and rules), the decoding flags of ``gpt2chat chat``,
``gpt2chat serve`` and ``gpt2chat demo`` and the decoding fields of ``ServeSettings``, so a
decoding option is declared once, on :class:`~gpt2chat.ChatSettings`."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field, fields, make_dataclass
from typing import Any

from .settings import ChatSettings

__all__ = ["DecodingOptions", "decoding_arguments"]


def decoding_arguments(
    name: str,
    *,
    defaults: ChatSettings | None = None,
    optional: bool = True,
    exclude: tuple[str, ...] = (),
    note: str = "",
) -> type:
    """A dataclass of :class:`ChatSettings`' fields as command-line arguments (for
    ``HfArgumentParser``; the chat and serve CLIs, ``ServeSettings`` and the demo inherit from
    one): the flags are generated here, so a decoding option is declared once, on
    :class:`ChatSettings`.

    With ``optional`` every field defaults to ``None`` ("not given": the model's saved settings,
    else ``defaults``, decide) and its help ends with the default in brackets; otherwise the
    fields default to ``defaults``' values. Given values are checked by :class:`ChatSettings`'
    rules, errors naming the ``--flag``. ``exclude`` leaves fields out; ``note`` is appended to
    the first field's help.
    """
    base = defaults or ChatSettings()
    hints = typing.get_type_hints(ChatSettings)
    specs = []
    for f in fields(ChatSettings):
        if f.name in exclude:
            continue
        value = getattr(base, f.name)
        text = f.metadata.get("help", "")
        if optional:
            shown = {None: "off"}.get(value, value) if f.name != "use_token_type_ids" else None
            text = f"{text} [{'the record' if shown is None else shown}]"
        if note and not specs:
            text = f"{text} {note}"
        kind = hints[f.name] | None if optional else hints[f.name]
        if isinstance(value, list):
            default = field(default_factory=lambda v=value: list(v), metadata={"help": text})
        else:
            default = field(default=None if optional else value, metadata={"help": text})
        specs.append((f.name, kind, default))
    return make_dataclass(name, specs, bases=(DecodingOptions,), namespace={"__module__": __name__})


class DecodingOptions:
    """Base of the dataclasses :func:`decoding_arguments` makes: the given values, checked."""

    #: The server's convention (OpenAI's): ``temperature`` 0 is greedy decoding, and reranking
    #: applies to the requests that sample; the values are checked accordingly.
    server_semantics: typing.ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.check_decoding()

    def decoding_fields(self) -> list[str]:
        names = {f.name for f in fields(ChatSettings)}
        return [f.name for f in fields(self) if f.name in names]

    def given_decoding(self) -> dict[str, Any]:
        """The decoding values given (not ``None``)."""
        values = {name: getattr(self, name) for name in self.decoding_fields()}
        return {k: v for k, v in values.items() if v is not None}

    def check_decoding(self) -> None:
        """Check each given value by :class:`ChatSettings`' rules, the others at their
        defaults; a combination is checked where the values meet (``ChatSession``)."""
        given = self.given_decoding()
        if self.server_semantics:
            if given.get("temperature") == 0:
                given.pop("temperature")  # greedy
            given.pop("do_sample", None)  # reranking applies to the sampled requests
        candidates = given.get("num_candidates")
        if isinstance(candidates, int) and candidates > 1 and "do_sample" not in given:
            given["do_sample"] = True  # a combination: checked where the values meet
        if given:
            ChatSettings.of(given, flags=True)

    def as_chat_settings(self, base: ChatSettings | None = None) -> ChatSettings:
        """``base`` (default: the library's) with the given values."""
        return dataclasses.replace(base or ChatSettings(), **self.given_decoding())
