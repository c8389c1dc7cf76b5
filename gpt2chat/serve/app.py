"""The HTTP server behind ``gpt2chat serve``: an OpenAI-compatible chat API and a web page.

Every request is answered by its own :class:`~gpt2chat.ChatSession` built around the one model
and tokenizer loaded at start-up, so the prompt goes through the training renderer exactly as in
the terminal chat, and no request can see another's history. Endpoints:

* ``POST /v1/chat/completions``: OpenAI's chat completions (``messages``, ``temperature``,
  ``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``seed``, ``stream``,
  ``stream_options.include_usage``). A first ``system`` (or ``developer``) message, or a top-level
  ``persona`` string, is the persona placed after ``<bos>`` as in training. ``temperature=0``
  (or ``top_p=0``) is greedy decoding.
* ``GET /v1/models`` and ``GET /v1/models/{id}``: the one model served.
* ``GET /health``: liveness plus the scheduler's counters.
* ``GET /api/settings``: the model's name, decoding defaults and limits (what the page shows).
* ``GET /``: the single-page web chat (``static/``: no build step, nothing from a CDN).

Generation is blocking and CPU/GPU-bound: it runs in worker threads, at most
``max_concurrency`` at a time; further requests wait in a first-come first-served queue (up to
``max_queue``, then ``429``). Sampling uses torch's global random generator, so a request with a
``seed`` runs while no other *sampling* request does (greedy ones still run beside it): its
reply is then the one ``ChatSession(..., seed=seed)`` gives. A client that disconnects stops its
generation and frees its slot. Anything a client sends that the server cannot serve is a 4xx
with an OpenAI-style body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from ..chat.session import ChatSession
from ..chat.settings import ChatSettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["APIError", "ChatRequest", "ServeSettings", "create_app", "parse_chat_request"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: ``system`` is the persona; ``developer`` is what newer OpenAI clients call it.
SYSTEM_ROLES = ("system", "developer")
CHAT_ROLES = ("user", "assistant")
_MAX_SEED = 2**63 - 1
_PAGE_HEADERS = {
    # Everything the page needs comes from this server: no CDN, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# --------------------------------------------------------------------------- settings
#: The decoding defaults of a model without ``chat_config.json`` (ChatSettings' defaults).
_SERVE_DEFAULTS: dict[str, Any] = {
    "temperature": ChatSettings.temperature,
    "top_p": ChatSettings.top_p,
    "top_k": ChatSettings.top_k,
    "guidance_scale": ChatSettings.guidance_scale,
    "num_candidates": ChatSettings.num_candidates,
    "mmi_weight": ChatSettings.mmi_weight,
    "max_turns": ChatSettings.max_turns,
}


@dataclass
class ServeSettings:
    """What the server allows and the decoding it uses when a request does not say.

    Args:
        model_name: the model id shown by ``/v1/models`` and the page (default: the folder name).
        max_concurrency: generations running at the same time; the others wait in a queue.
        max_queue: requests allowed to wait for a slot; beyond, ``429``.
        api_key: when set, ``/v1/*`` requires ``Authorization: Bearer <api_key>``.
        max_messages: most messages in one request (the persona included).
        max_chars: most characters in one request, all message contents together.
        max_tokens_limit: the largest ``max_tokens`` a request may ask for.
        max_new_tokens: reply length when a request gives no ``max_tokens``.
        temperature: default sampling temperature; ``0`` makes greedy decoding the default.
        top_p: default nucleus sampling probability (the original recipe's ``0.8``).
        top_k: top-k sampling (``0``: off), for every sampled request.
        repetition_penalty: optional penalty (> 1) for every request.
        guidance_scale: context guidance for every request (``ChatSession``'s
            ``guidance_scale``; ``1``: off).
        num_candidates: for sampled requests, MMI reranking of this many replies
            (``ChatSession``'s ``num_candidates``; ``1``: off); streams send the reply whole.
        mmi_weight: ``ChatSession``'s ``mmi_weight`` for that reranking.
        max_turns: utterances per exchange, the reply included, as in training.
        chat_config: fill the decoding values left at ``None`` above (``max_new_tokens`` to
            ``max_turns``) from the model's ``chat_config.json`` (:class:`~gpt2chat.ChatSettings`),
            else from the library defaults (64 tokens, temperature 1, top-p 0.8, top-k off, no
            repetition penalty, guidance 1, 1 candidate, mmi weight 0.5, 5 turns). ``False``:
            the library defaults only.
        persona: persona used when a request has no ``system`` message / ``persona``.
        max_len: context size to fit prompt + reply in (default: the model's).
        device: where to load the model (``auto``: CUDA when available).
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16`` (GPU only).
    """

    model_name: str | None = None
    max_concurrency: int = 2
    max_queue: int = 256
    api_key: str | None = None
    max_messages: int = 100
    max_chars: int = 32_000
    max_tokens_limit: int = 512
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    guidance_scale: float | None = None
    num_candidates: int | None = None
    mmi_weight: float | None = None
    max_turns: int | None = None
    chat_config: bool = True
    persona: str | None = None
    max_len: int | None = None
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"--{what}")

        def given(name: str) -> Any:
            value = getattr(self, name)
            return value if value is not None else _SERVE_DEFAULTS[name]

        need(1 <= self.max_concurrency <= 256, "max_concurrency must be between 1 and 256")
        need(self.max_queue >= 0, "max_queue must be >= 0")
        need(self.max_messages >= 1, "max_messages must be >= 1")
        need(self.max_chars >= 1, "max_chars must be >= 1")
        need(self.max_tokens_limit >= 1, "max_tokens_limit must be >= 1")
        need(
            self.max_new_tokens is None or 1 <= self.max_new_tokens <= self.max_tokens_limit,
            f"max_new_tokens must be between 1 and max_tokens_limit={self.max_tokens_limit}",
        )
        need(0.0 <= given("temperature") <= 2.0, "temperature must be between 0 and 2")
        need(0.0 <= given("top_p") <= 1.0, "top_p must be between 0 and 1")
        need(given("top_k") >= 0, "top_k must be >= 0")
        need(
            self.repetition_penalty is None or self.repetition_penalty > 0,
            "repetition_penalty must be > 0",
        )
        need(0.0 <= given("guidance_scale") <= 10.0, "guidance_scale must be between 0 and 10")
        need(1 <= given("num_candidates") <= 64, "num_candidates must be between 1 and 64")
        need(given("mmi_weight") >= 0.0, "mmi_weight must be >= 0")
        need(given("max_turns") >= 2, "max_turns must be >= 2")
        if self.api_key is not None and not self.api_key.strip():
            self.api_key = None

    def with_chat_settings(self, saved: ChatSettings | None) -> ServeSettings:
        """These settings with every decoding value left at ``None`` taken from ``saved`` (the
        model's ``chat_config.json``), else from the library defaults."""
        chat = saved if saved is not None and self.chat_config else ChatSettings()
        values = {
            "max_new_tokens": min(chat.max_new_tokens, self.max_tokens_limit),
            "temperature": chat.temperature if chat.do_sample else 0.0,
            "top_p": chat.top_p,
            "top_k": chat.top_k,
            "repetition_penalty": chat.repetition_penalty,
            "guidance_scale": chat.guidance_scale,
            "num_candidates": chat.num_candidates,
            "mmi_weight": chat.mmi_weight,
            "max_turns": chat.max_turns,
        }
        missing = {k: v for k, v in values.items() if getattr(self, k) is None}
        return replace(self, **missing) if missing else self

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


def _number(
    payload: Mapping[str, Any],
    key: str,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float | int | None:
    value = payload.get(key)
    if value is None:
        return None
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise _bad(f"'{key}' must be {kind}, got {json.dumps(value)[:40]}.", key, "invalid_type")
    if not math.isfinite(value) or not low <= value <= high:
        raise _bad(
            f"'{key}' must be between {low:g} and {high:g}, got {value!r}.", key, "invalid_value"
        )
    return value


def parse_chat_request(payload: Any, settings: ServeSettings) -> ChatRequest:
    settings = settings.with_chat_settings(None)  # no-op for the app's (resolved) settings
    """Check a decoded JSON body and turn it into a :class:`ChatRequest`.

    Raises:
        APIError: ``400`` with the offending ``param`` for anything the server cannot serve.
    """
    if not isinstance(payload, dict):
        raise _bad("The request body must be a JSON object.", code="invalid_body")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("'model' must be a string.", "model", "invalid_type")

    # ---- messages
    if "messages" not in payload:
        raise _bad(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = payload["messages"]
    if not isinstance(messages, list):
        raise _bad(
            "'messages' must be a list of {role, content} objects.", "messages", "invalid_type"
        )
    if not messages:
        raise _bad(
            "'messages' must not be empty: send at least one user message.",
            "messages",
            "empty_array",
        )
    if len(messages) > settings.max_messages:
        raise _bad(
            f"Too many messages: {len(messages)} > {settings.max_messages} (this server's "
            "--max_messages). Send only the recent part of the conversation.",
            "messages",
            "too_many_messages",
        )
    persona: str | None = None
    chat: list[dict[str, str]] = []
    total_chars = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(
                f"'{where}' must be an object with 'role' and 'content'.", where, "invalid_type"
            )
        role = message.get("role")
        if not isinstance(role, str):
            raise _bad(f"'{where}.role' must be a string.", f"{where}.role", "invalid_type")
        if role not in SYSTEM_ROLES + CHAT_ROLES:
            raise _bad(
                f"'{where}.role' is {role[:40]!r}: use 'user' or 'assistant' (and an optional "
                "first 'system' message for the persona).",
                f"{where}.role",
                "invalid_value",
            )
        if "content" not in message:
            raise _bad(
                f"Missing '{where}.content'.", f"{where}.content", "missing_required_parameter"
            )
        content = message["content"]
        if not isinstance(content, str):
            raise _bad(
                f"'{where}.content' must be a string (this model reads text only).",
                f"{where}.content",
                "invalid_type",
            )
        total_chars += len(content)
        if role in SYSTEM_ROLES:
            if i != 0:
                raise _bad(
                    f"'{where}' is a {role} message: only the first message may be the persona.",
                    f"{where}.role",
                    "invalid_value",
                )
            persona = content
        else:
            chat.append({"role": role, "content": content})
    extra_persona = payload.get("persona")
    if extra_persona is not None:
        if not isinstance(extra_persona, str):
            raise _bad("'persona' must be a string.", "persona", "invalid_type")
        if persona is not None:
            raise _bad(
                "Give the persona either as a first system message or as 'persona', not both.",
                "persona",
                "invalid_value",
            )
        persona = extra_persona
        total_chars += len(extra_persona)
    if total_chars > settings.max_chars:
        raise _bad(
            f"The messages hold {total_chars} characters, more than this server's limit of "
            f"{settings.max_chars} (--max_chars). Send only the recent part of the conversation.",
            "messages",
            "too_many_characters",
        )
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
    if persona is None:
        persona = settings.persona
    persona = persona.strip() if persona else None

    # ---- decoding
    temperature = _number(payload, "temperature", 0.0, 2.0)
    top_p = _number(payload, "top_p", 0.0, 1.0)
    max_tokens = _number(payload, "max_tokens", 1, settings.max_tokens_limit, integer=True)
    max_completion = _number(
        payload, "max_completion_tokens", 1, settings.max_tokens_limit, integer=True
    )
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise _bad(
            "Give 'max_tokens' or 'max_completion_tokens', not both.",
            "max_completion_tokens",
            "invalid_value",
        )
    seed = _number(payload, "seed", -_MAX_SEED - 1, _MAX_SEED, integer=True)
    n = payload.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise _bad("Only 'n': 1 is supported (one reply per request).", "n", "invalid_value")
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be true or false.", "stream", "invalid_type")
    include_usage = False
    stream_options = payload.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise _bad("'stream_options' must be an object.", "stream_options", "invalid_type")
        usage = stream_options.get("include_usage", False)
        if not isinstance(usage, bool):
            raise _bad(
                "'stream_options.include_usage' must be true or false.",
                "stream_options.include_usage",
                "invalid_type",
            )
        include_usage = usage
    stop = payload.get("stop")
    if stop not in (None, [], ""):
        raise _bad(
            "'stop' is not supported: generation ends at the end of the bot's turn.",
            "stop",
            "unsupported_parameter",
        )

    temperature = settings.temperature if temperature is None else float(temperature)
    top_p = settings.top_p if top_p is None else float(top_p)
    options: dict[str, Any] = {
        "max_new_tokens": int(max_tokens or max_completion or settings.max_new_tokens)
    }
    if temperature == 0.0 or top_p == 0.0:
        options["do_sample"] = False
    else:
        options.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=settings.top_k)
        if settings.num_candidates > 1:
            options.update(num_candidates=settings.num_candidates, mmi_weight=settings.mmi_weight)
    if settings.repetition_penalty is not None:
        options["repetition_penalty"] = settings.repetition_penalty
    if settings.guidance_scale != 1.0:
        options["guidance_scale"] = settings.guidance_scale
    return ChatRequest(
        history=chat[:-1],
        text=chat[-1]["content"],
        persona=persona,
        options=options,
        seed=None if seed is None else int(seed),
        stream=bool(stream),
        include_usage=include_usage,
    )


# --------------------------------------------------------------------------- scheduling
FREE, SHARED, EXCLUSIVE = "free", "shared", "exclusive"


class Scheduler:
    """Hands out generation slots, first come first served, from the event loop's thread.

    At most ``max_concurrency`` generations hold a slot. A slot's ``mode`` says how it uses
    torch's global random generator: ``free`` (greedy: not at all), ``shared`` (sampling
    without a seed) or ``exclusive`` (sampling with a seed: the generator is seeded for it, so
    no other sampling may run meanwhile). A waiting ``exclusive`` request is not overtaken by
    later ``shared`` ones, so it cannot starve; ``free`` ones may pass it.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self.active = 0
        self._shared = 0
        self._exclusive = False
        self._queue: deque[tuple[asyncio.Future, str]] = deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _fits(self, mode: str) -> bool:
        if self.active >= self.max_concurrency:
            return False
        if mode == FREE:
            return True
        if mode == SHARED:
            return not self._exclusive
        return not self._exclusive and self._shared == 0

    def _grant(self, mode: str) -> None:
        self.active += 1
        if mode == SHARED:
            self._shared += 1
        elif mode == EXCLUSIVE:
            self._exclusive = True

    def _release(self, mode: str) -> None:
        self.active -= 1
        if mode == SHARED:
            self._shared -= 1
        elif mode == EXCLUSIVE:
            self._exclusive = False
        self._dispatch()

    def _dispatch(self) -> None:
        blocked_exclusive = False
        for entry in list(self._queue):
            future, mode = entry
            if future.done():
                self._queue.remove(entry)
                continue
            if self.active >= self.max_concurrency:
                break
            if mode == SHARED and blocked_exclusive:
                continue
            if self._fits(mode):
                self._queue.remove(entry)
                self._grant(mode)
                future.set_result(None)
            elif mode == EXCLUSIVE:
                blocked_exclusive = True

    async def _acquire(self, mode: str) -> None:
        if not self._queue and self._fits(mode):
            self._grant(mode)
            return
        future = asyncio.get_running_loop().create_future()
        entry = (future, mode)
        self._queue.append(entry)
        self._dispatch()
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release(mode)  # granted just as the waiter was cancelled
            else:
                future.cancel()
                if entry in self._queue:
                    self._queue.remove(entry)
                self._dispatch()  # a waiting exclusive request may have held others back
            raise

    @asynccontextmanager
    async def slot(self, mode: str) -> AsyncIterator[None]:
        """Wait for a slot, hold it for the ``async with`` block."""
        await self._acquire(mode)
        try:
            yield
        finally:
            self._release(mode)


# --------------------------------------------------------------------------- generation
_END = object()


@dataclass
class _Job:
    """One request's session and its (not yet started) reply iterator."""

    session: ChatSession
    pieces: Iterator[str]
    mode: str
    seed: int | None
    max_new_tokens: int
    outcome: str = "pending"


@dataclass
class _Counters:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0


class ChatEngine:
    """The loaded model and tokenizer, a :class:`Scheduler`, and per-request sessions."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: ServeSettings,
        *,
        model_name: str,
        context_size: int,
        use_token_type_ids: bool | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_name = model_name
        self.context_size = context_size
        self.use_token_type_ids = use_token_type_ids
        self.scheduler = Scheduler(settings.max_concurrency)
        self.counters = _Counters()
        self.created = int(time.time())
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Worker threads for running generations (one per slot, created in the event loop)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.settings.max_concurrency)
        return self._limiter

    def prepare(self, request: ChatRequest) -> _Job:
        """Build the request's session and check its prompt (blocking: tokenises).

        Raises:
            APIError: the request does not fit the model (``400``).
        """
        try:
            session = ChatSession(
                self.model,
                self.tokenizer,
                max_turns=self.settings.max_turns,
                persona=request.persona,
                max_len=self.settings.max_len,
                prefix_cache=False,
                use_token_type_ids=self.use_token_type_ids,
                **request.options,
            )
            session.history = request.history
            pieces = session.stream(request.text)  # renders and checks now, generates later
        except ValueError as err:
            raise _bad(str(err), code="invalid_value") from None
        if not request.sampling:  # greedy: no randomness, so no seed to set
            return _Job(session, pieces, FREE, None, request.max_new_tokens)
        mode = SHARED if request.seed is None else EXCLUSIVE
        return _Job(session, pieces, mode, request.seed, request.max_new_tokens)

    @staticmethod
    def _first_step(job: _Job) -> Any:
        if job.seed is not None:
            from transformers import set_seed

            set_seed(job.seed % 2**32)
        return next(job.pieces, _END)

    async def run(self, job: _Job) -> AsyncIterator[str]:
        """Wait for a slot, then yield the reply's pieces as they are generated.

        Closing this iterator early (the client left) stops the generation before the slot is
        given back.
        """
        async with self.scheduler.slot(job.mode):
            try:
                step: Callable[..., Any] = self._first_step
                while True:
                    piece = await anyio.to_thread.run_sync(step, job, limiter=self.limiter)
                    step = self._next_step
                    if piece is _END:
                        break
                    yield piece
                job.outcome = "completed"
                self.counters.completed += 1
            except Exception:
                job.outcome = "failed"
                self.counters.failed += 1
                raise
            finally:
                if job.outcome == "pending":
                    job.outcome = "cancelled"
                    self.counters.cancelled += 1
                    logger.info("Client gone: generation stopped, slot freed.")
                with anyio.CancelScope(shield=True):
                    # ChatSession.stream stops generate (and joins its thread) when closed.
                    await anyio.to_thread.run_sync(_close, job.pieces, limiter=self.limiter)

    @staticmethod
    def _next_step(job: _Job) -> Any:
        return next(job.pieces, _END)

    def finish_reason(self, job: _Job) -> str:
        turn = job.session.last_turn
        return (
            "length" if turn is not None and turn.generated_tokens >= job.max_new_tokens else "stop"
        )

    def usage(self, job: _Job) -> dict[str, int]:
        turn = job.session.last_turn
        prompt = turn.prompt_tokens if turn else 0
        completion = turn.generated_tokens if turn else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def reply(self, job: _Job, streamed: str) -> str:
        """The recorded reply (what ``ChatSession.send`` returns) once the stream ended."""
        history = job.session.history
        if history and history[-1]["role"] == "assistant":
            return history[-1]["content"]
        return streamed


def _close(pieces: Iterator[str]) -> None:
    close = getattr(pieces, "close", None)
    if close is not None:
        close()


class _ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator (client gone or not)."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- responses
def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


async def _read_json(request: Request, limit: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise APIError(
            413,
            f"The request body ({length} bytes) is larger than this server's limit of {limit}.",
            code="request_too_large",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(
                413,
                f"The request body is larger than this server's limit of {limit} bytes.",
                code="request_too_large",
            )
    if not body.strip():
        raise _bad("The request body is empty: send a JSON object.", code="invalid_body")

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(bytes(body).decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _bad(f"The request body is not valid JSON: {err}", code="invalid_json") from None


# --------------------------------------------------------------------------- the app
def _load(
    model: str | os.PathLike | ChatSession, settings: ServeSettings
) -> tuple[ChatSession, str]:
    if isinstance(model, ChatSession):
        template = model
        name = getattr(template.model.config, "name_or_path", "") or "gpt2chat"
    else:
        template = ChatSession.from_pretrained(
            str(model),
            device=settings.device,
            dtype=settings.dtype,
            max_len=settings.max_len,
            chat_config=False,  # the settings decide the decoding (see create_app)
        )
        name = str(model)
    name = settings.model_name or Path(str(name).rstrip("/")).name or "gpt2chat"
    return template, name


def create_app(
    model: str | os.PathLike | ChatSession, settings: ServeSettings | None = None
) -> FastAPI:
    """Build the server's FastAPI application.

    Args:
        model: a model folder / hub id / ``.gguf`` file (loaded like
            :meth:`ChatSession.from_pretrained`), or a ``ChatSession`` whose model and tokenizer
            are shared by all requests (its own history and decoding options are not used).
        settings: limits and decoding defaults (default: :class:`ServeSettings`).

    Returns:
        A FastAPI app; run it with ``uvicorn.run(app, host=..., port=...)``.

    Example:

    ```python
    >>> import uvicorn
    >>> from gpt2chat.serve import ServeSettings, create_app
    >>> app = create_app("runs/gpt2-dialogue", ServeSettings(max_concurrency=4))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    ```
    """
    settings = settings or ServeSettings()
    template, name = _load(model, settings)
    saved = None
    if settings.chat_config and not isinstance(model, ChatSession):
        saved = ChatSettings.from_pretrained(str(model))
    settings = settings.with_chat_settings(saved)
    engine = ChatEngine(
        template.model,
        template.tokenizer,
        settings,
        model_name=name,
        context_size=template.max_len,
        use_token_type_ids=template.use_token_type_ids,
    )
    logger.info(
        "Serving %s: max_concurrency=%d, decoding %s",
        name,
        settings.max_concurrency,
        "greedy"
        if settings.temperature == 0
        else f"temperature={settings.temperature} top_p={settings.top_p}",
    )

    app = FastAPI(
        title="gpt2chat",
        docs_url=None,  # the docs pages load their scripts from a CDN: not served
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings

    # ---------------------------------------------------------------- errors
    @app.exception_handler(APIError)
    async def _api_error(request: Request, err: APIError) -> Response:
        if err.status >= 500:
            logger.error("%s %s: %s", request.method, request.url.path, err.message)
        else:
            logger.debug(
                "%s %s -> %d: %s", request.method, request.url.path, err.status, err.message
            )
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        if err.status_code == 404:
            message = f"Unknown endpoint: {request.method} {request.url.path}."
            code = "not_found"
        elif err.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
            code = "method_not_allowed"
        else:
            message, code = str(err.detail), None
        return APIError(err.status_code, message, code=code, headers=err.headers).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> Response:
        return _bad(f"Invalid request: {err.errors()}", code="invalid_request").response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> Response:
        logger.exception("Unexpected error on %s %s", request.method, request.url.path)
        return APIError(500, "Internal server error.", type="server_error").response()

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8"), settings.api_key.encode("utf-8")
        ):
            raise APIError(
                401,
                "Missing or incorrect API key: send the header 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # ---------------------------------------------------------------- the page
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/settings")
    async def page_settings() -> dict[str, Any]:
        return {
            "model": engine.model_name,
            "defaults": {
                "temperature": settings.temperature,
                "top_p": settings.top_p,
                "top_k": settings.top_k,
                "max_tokens": settings.max_new_tokens,
                "repetition_penalty": settings.repetition_penalty,
                "guidance_scale": settings.guidance_scale,
                "num_candidates": settings.num_candidates,
            },
            "limits": {
                "max_messages": settings.max_messages,
                "max_chars": settings.max_chars,
                "max_tokens": settings.max_tokens_limit,
            },
            "max_turns": settings.max_turns,
            "persona": settings.persona,
            "auth_required": settings.api_key is not None,
        }

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.model_name,
            "max_concurrency": settings.max_concurrency,
            "active": engine.scheduler.active,
            "queued": engine.scheduler.queued,
            **asdict(engine.counters),
        }

    # ---------------------------------------------------------------- OpenAI API
    def model_card() -> dict[str, Any]:
        return {
            "id": engine.model_name,
            "object": "model",
            "created": engine.created,
            "owned_by": "gpt2chat",
        }

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(request: Request, model_id: str) -> dict[str, Any]:
        authorize(request)
        if model_id != engine.model_name:
            raise APIError(
                404,
                f"The model {model_id!r} does not exist: this server serves {engine.model_name!r}.",
                param="model",
                code="model_not_found",
            )
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        payload = await _read_json(request, settings.max_body_bytes)
        chat = parse_chat_request(payload, settings)
        if engine.scheduler.queued >= settings.max_queue:
            engine.counters.rejected += 1
            raise APIError(
                429,
                f"The server is busy ({engine.scheduler.queued} requests waiting): retry later.",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        job = await anyio.to_thread.run_sync(engine.prepare, chat)
        completion_id, created = _completion_id(), int(time.time())
        if chat.stream:
            return _ClosingStreamingResponse(
                _stream_events(engine, job, chat, completion_id, created),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        text = await _collect(request, engine, job)
        if text is None:  # the client left: nobody reads this
            return Response(status_code=499)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": engine.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": engine.finish_reason(job),
                        "logprobs": None,
                    }
                ],
                "usage": engine.usage(job),
                "system_fingerprint": None,
            }
        )

    return app


async def _collect(request: Request, engine: ChatEngine, job: _Job) -> str | None:
    """Run a non-streaming job to its end; ``None`` when the client disconnected first."""
    pieces: list[str] = []
    gone = False
    failed = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch)
        try:
            async with aclosing(engine.run(job)) as stream:
                async for piece in stream:
                    pieces.append(piece)
        except Exception:
            logger.exception("Generation failed")
            failed = True
        group.cancel_scope.cancel()
    if failed:
        raise APIError(500, "Generation failed.", type="server_error")
    if gone and job.outcome != "completed":
        return None
    return engine.reply(job, "".join(pieces))


async def _stream_events(
    engine: ChatEngine, job: _Job, chat: ChatRequest, completion_id: str, created: int
) -> AsyncIterator[str]:
    """The SSE body: OpenAI ``chat.completion.chunk`` events, then ``data: [DONE]``."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": engine.model_name,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
                "system_fingerprint": None,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    try:
        async with aclosing(engine.run(job)) as stream:
            async for piece in stream:
                yield chunk({"content": piece})
    except Exception:
        logger.exception("Generation failed")
        yield _sse(APIError(500, "Generation failed.", type="server_error").body())
        yield "data: [DONE]\n\n"
        return
    yield chunk({}, engine.finish_reason(job))
    if chat.include_usage:
        yield _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": engine.model_name,
                "choices": [],
                "usage": engine.usage(job),
            }
        )
    yield "data: [DONE]\n\n"
