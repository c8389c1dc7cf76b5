"""The OpenAI chat-completions protocol of ``gpt2chat serve``: the server's settings
(:class:`ServeSettings`), OpenAI-style errors (:class:`APIError`) and the validation of a request
body into a :class:`ChatRequest` (:func:`parse_chat_request`). No HTTP here: :mod:`.app` serves it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ..chat.flags import decoding_arguments
from ..chat.settings import MIN_TEMPERATURE, ChatSettings

__all__ = [
    "APIError",
    "ChatCompletionBody",
    "ChatMessage",
    "ChatRequest",
    "ServeSettings",
    "parse_chat_request",
]


#: ``system`` is the persona; ``developer`` is what newer OpenAI clients call it.
SYSTEM_ROLES = ("system", "developer")
CHAT_ROLES = ("user", "assistant")
_MAX_SEED = 2**63 - 1


# --------------------------------------------------------------------------- settings
#: The decoding a request that does not say gets: :class:`~gpt2chat.ChatSettings`' fields,
#: generated from it (``None``: the model's saved settings, else the library defaults).
ServeDecoding = decoding_arguments("ServeDecoding", exclude=("use_token_type_ids",))
ServeDecoding.server_semantics = True


@dataclass
class ServeSettings(ServeDecoding):
    """What the server allows and the decoding it uses when a request does not say.

    The decoding fields are :class:`~gpt2chat.ChatSettings`' (``max_turns``, ``do_sample``,
    ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``, ``max_new_tokens``,
    ``guidance_scale``, ``num_candidates``, ``mmi_weight``, ``mmi_contexts``), each ``None``
    unless given; ``temperature`` 0 is greedy decoding, as in OpenAI requests.

    Args:
        model_name: the model id shown by ``/v1/models`` and the page (default: the folder name).
        max_concurrency: generations running at the same time; the others wait in a queue.
        max_queue: requests allowed to wait for a slot; beyond, ``429``.
        api_key: when set, ``/v1/*`` and ``/api/settings`` require ``Authorization: Bearer
            <api_key>``, and ``/health`` tells others only that the server is up.
        allowed_hosts: the ``Host`` names requests may use (``None``: this machine's loopback
            names, ``localhost``, ``127.0.0.1``, ``::1``; ``"*"``: any). Other names get a
            ``400``: a page on another origin cannot reach the server through DNS rebinding.
        max_messages: most messages in one request (the persona included).
        max_chars: most characters in one request, all message contents together.
        max_tokens_limit: the largest ``max_tokens`` a request may ask for.
        chat_config: fill the decoding values left at ``None`` from the settings saved with the
            model (``generation_config.json`` and ``chat_config.json``), else from the library
            defaults (64 tokens, temperature 1, top-p 0.8, top-k off, no repetition penalty,
            guidance 1, 1 candidate, mmi weight 0.5, 5 turns). ``False``: the library defaults
            only. ``max_new_tokens`` is the length when a request gives no ``max_tokens``;
            ``temperature`` and ``top_p`` are the defaults a request may override; the others
            hold for every request (reranking for the sampled ones).
        persona: persona used when a request has no ``system`` message / ``persona``.
        max_len: context size to fit prompt + reply in (default: the model's).
        device: where to load the model (``auto``: CUDA when available).
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16`` (GPU only).
    """

    model_name: str | None = None
    max_concurrency: int = 2
    max_queue: int = 256
    api_key: str | None = None
    allowed_hosts: list[str] | None = None
    max_messages: int = 100
    max_chars: int = 32_000
    max_tokens_limit: int = 512
    chat_config: bool = True
    persona: str | None = None
    max_len: int | None = None
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"--{what}")

        def given(name: str) -> Any:  # a value left unset is checked as its default
            value = getattr(self, name)
            return value if value is not None else getattr(ChatSettings, name)

        need(1 <= self.max_concurrency <= 256, "max_concurrency must be between 1 and 256")
        need(self.max_queue >= 0, "max_queue must be >= 0")
        need(self.max_messages >= 1, "max_messages must be >= 1")
        need(self.max_chars >= 1, "max_chars must be >= 1")
        need(self.max_tokens_limit >= 1, "max_tokens_limit must be >= 1")
        need(
            self.max_new_tokens is None or 1 <= self.max_new_tokens <= self.max_tokens_limit,
            f"max_new_tokens must be between 1 and max_tokens_limit={self.max_tokens_limit}",
        )
        # Each decoding value by ChatSettings' rules (temperature 0: greedy), then the server's
        # own bounds (OpenAI's, for what a request may ask).
        super().__post_init__()
        need(0.0 <= given("temperature") <= 2.0, "temperature must be between 0 and 2")
        need(given("guidance_scale") <= 10.0, "guidance_scale must be between 0 and 10")
        if self.api_key is not None and not self.api_key.strip():
            self.api_key = None
        if self.api_key is not None:
            try:  # the bytes a client must send (a key read from non-UTF-8 bytes keeps them)
                self.api_key.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise ValueError(
                    "--api_key must be text (it holds an unpaired surrogate)"
                ) from None
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str):
                self.allowed_hosts = self.allowed_hosts.split(",")
            self.allowed_hosts = [h.strip() for h in self.allowed_hosts if h.strip()]
            need(bool(self.allowed_hosts), "allowed_hosts must name at least one host (or '*')")

    def with_chat_settings(self, saved: ChatSettings | None) -> ServeSettings:
        """These settings with every decoding value resolved: the one given here, else
        ``saved``'s (the settings saved with the model), else the library default. Greedy
        decoding is ``temperature`` 0."""
        base = saved if saved is not None and self.chat_config else ChatSettings()
        given = self.given_decoding()
        if given.get("temperature") == 0:
            given.update(do_sample=False, temperature=base.temperature)
        # Unchecked as a whole: reranking applies to the requests that sample.
        chat = ChatSettings.of(given, base=base, check=False)
        values = {name: getattr(chat, name) for name in self.decoding_fields()}
        values["max_new_tokens"] = min(chat.max_new_tokens, self.max_tokens_limit)
        if not chat.do_sample:
            values["temperature"] = 0.0
        return replace(self, **values)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read (JSON escapes may take 12 bytes per character)."""
        return 12 * self.max_chars + 512 * self.max_messages + 65_536


# --------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


# --------------------------------------------------------------------------- requests
def _valid_text(value: str) -> str:
    """Text a tokenizer can read: no unpaired UTF-16 surrogate (JSON's ``"\\ud800"``)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"contains an unpaired UTF-16 surrogate ({value[err.start]!r} at character "
            f"{err.start}): send valid Unicode text"
        ) from None
    return value


Text = Annotated[str, AfterValidator(_valid_text)]
_STRICT = ConfigDict(strict=True, extra="ignore")


class ChatMessage(BaseModel):
    """One message: ``role`` and text ``content`` (other keys, such as ``name``, are ignored)."""

    model_config = _STRICT
    role: Text
    content: Text


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """The JSON body of ``POST /v1/chat/completions``: OpenAI's field names, types and bounds
    (limits that depend on the server, such as ``max_tokens``' upper bound, are checked by
    :func:`parse_chat_request`). Unknown keys are ignored, as OpenAI-compatible servers do."""

    model_config = _STRICT
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: Text | None = None
    persona: Text | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] | None = None
    top_p: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    seed: Annotated[int, Field(ge=-_MAX_SEED - 1, le=_MAX_SEED)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: Any = None


@dataclass
class ChatRequest:
    """A validated ``/v1/chat/completions`` request, in ``ChatSession``'s terms.

    ``history`` holds the ``user`` / ``assistant`` messages before ``text`` (the last user
    message); ``options`` are ``ChatSession`` generation options.
    """

    history: list[dict[str, str]]
    text: str
    persona: str | None
    options: dict[str, Any]
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False

    @property
    def sampling(self) -> bool:
        return bool(self.options.get("do_sample"))

    @property
    def max_new_tokens(self) -> int:
        return int(self.options["max_new_tokens"])


def _param(loc: tuple[Any, ...]) -> str | None:
    """Pydantic's error location as OpenAI's ``param``: ``("messages", 0, "content")`` ->
    ``"messages[0].content"``."""
    param = ""
    for part in loc:
        param += f"[{part}]" if isinstance(part, int) else (f".{part}" if param else str(part))
    return param or None


def _shown(value: Any) -> str:
    """A short printable rendering of a client's value (never raises: a value nested near the
    recursion limit, or too long an integer, shows as its type)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except Exception:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _schema_error(err: ValidationError) -> APIError:
    """The first problem pydantic found, as a ``400`` naming its ``param``."""
    first = err.errors(include_url=False)[0]
    param, kind = _param(tuple(first["loc"])), first["type"]
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if param is None:
        return _bad("The request body must be a JSON object.", code="invalid_body")
    if param == "messages" and kind == "too_short":
        return _bad(
            "'messages' must not be empty: send at least one user message.",
            param,
            "empty_array",
        )
    if param == "n":
        return _bad("Only 'n': 1 is supported (one reply per request).", param, "invalid_value")
    code = "invalid_type" if kind.endswith("_type") else "invalid_value"
    return _bad(f"Invalid '{param}': {message}, got {_shown(first.get('input'))}.", param, code)


def _check_messages(messages: list[ChatMessage]):
    """The persona and the user/assistant messages (their number is checked before)."""
    persona: str | None = None
    chat: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in SYSTEM_ROLES + CHAT_ROLES:
            raise _bad(
                f"'{where}.role' is {_shown(message.role)}: use 'user' or 'assistant' (and an "
                "optional first 'system' message for the persona).",
                f"{where}.role",
                "invalid_value",
            )
        if message.role in SYSTEM_ROLES:
            if i != 0:
                raise _bad(
                    f"'{where}' is a {message.role} message: only the first message may be the "
                    "persona.",
                    f"{where}.role",
                    "invalid_value",
                )
            persona = message.content
        else:
            chat.append({"role": message.role, "content": message.content})
    if not chat or chat[-1]["role"] != "user":
        raise _bad(
            "The last message must be a 'user' message: it is the one the model answers.",
            f"messages[{len(messages) - 1}].role",
            "invalid_value",
        )
    if not chat[-1]["content"].strip():
        raise _bad(
            "The last user message is empty.",
            f"messages[{len(messages) - 1}].content",
            "invalid_value",
        )
    return persona, chat


def parse_chat_request(payload: Any, settings: ServeSettings) -> ChatRequest:
    """Check a decoded JSON body and turn it into a :class:`ChatRequest`.

    The body is validated by :class:`ChatCompletionBody`, then against the server's limits.

    Raises:
        APIError: ``400`` with the offending ``param`` for anything the server cannot serve.
    """
    settings = settings.with_chat_settings(None)  # no-op for the app's (resolved) settings
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if isinstance(messages, list) and len(messages) > settings.max_messages:
        raise _bad(  # before validating (and collecting an error for) every one of them
            f"Too many messages: {len(messages)} > {settings.max_messages} (this server's "
            "--max_messages). Send only the recent part of the conversation.",
            "messages",
            "too_many_messages",
        )
    try:
        body = ChatCompletionBody.model_validate(payload)
    except ValidationError as err:
        raise _schema_error(err) from None
    persona, chat = _check_messages(body.messages)
    if body.persona is not None:
        if persona is not None:
            raise _bad(
                "Give the persona either as a first system message or as 'persona', not both.",
                "persona",
                "invalid_value",
            )
        persona = body.persona
    total_chars = sum(len(m.content) for m in body.messages) + len(body.persona or "")
    if total_chars > settings.max_chars:
        raise _bad(
            f"The messages hold {total_chars} characters, more than this server's limit of "
            f"{settings.max_chars} (--max_chars). Send only the recent part of the conversation.",
            "messages",
            "too_many_characters",
        )
    if persona is None:
        persona = settings.persona
    persona = persona.strip() if persona else None

    # ---- decoding
    limit = settings.max_tokens_limit
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name)
        if value is not None and value > limit:
            raise _bad(
                f"'{name}' must be between 1 and {limit} (this server's --max_tokens_limit), "
                f"got {_shown(value)}.",
                name,
                "invalid_value",
            )
    max_tokens, max_completion = body.max_tokens, body.max_completion_tokens
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise _bad(
            "Give 'max_tokens' or 'max_completion_tokens', not both.",
            "max_completion_tokens",
            "invalid_value",
        )
    if body.stop not in (None, [], ""):
        raise _bad(
            "'stop' is not supported: generation ends at the end of the bot's turn.",
            "stop",
            "unsupported_parameter",
        )

    temperature = settings.temperature if body.temperature is None else body.temperature
    top_p = settings.top_p if body.top_p is None else body.top_p
    # The request's decoding: the server's (every ChatSettings field) with the request's values.
    # Below MIN_TEMPERATURE sampling is greedy in all but name, and the scores divided by such a
    # temperature overflow: decode greedily, as for 0.
    decoding = ChatSettings.of(settings.given_decoding(), check=False)
    decoding.do_sample = not (temperature < MIN_TEMPERATURE or top_p == 0.0)
    if decoding.do_sample:
        decoding.temperature, decoding.top_p = temperature, top_p
    decoding.max_new_tokens = int(max_tokens or max_completion or settings.max_new_tokens)
    options = decoding.session_kwargs()
    options.pop("max_turns")  # the session's window: the server's setting
    return ChatRequest(
        history=chat[:-1],
        text=chat[-1]["content"],
        persona=persona,
        options=options,
        seed=body.seed,
        stream=bool(body.stream),
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
