"""The HTTP routes of ``gpt2chat serve``: an OpenAI-compatible chat API and a web page.

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

A new route goes here. How generations run — at most ``max_concurrency`` at a time, the others
queued first come first served (up to ``max_queue``, then ``429``), a seeded request's reply
its own under any load, a client that disconnects stopping its generation — is ``jobs.py``'s.
Anything a client sends that the server cannot serve is a 4xx with an OpenAI-style body
``{"error": {"message", "type", "param", "code"}}`` (``protocol.py`` checks the requests).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from ..chat.session import ChatSession
from ..chat.settings import ChatSettings
from .guard import LOOPBACK_HOSTS, Guard
from .jobs import Job, Jobs
from .protocol import (
    APIError,
    ChatRequest,
    ServeSettings,
    _bad,
    parse_chat_request,
)

logger = logging.getLogger(__name__)

__all__ = ["APIError", "ChatRequest", "ServeSettings", "create_app", "parse_chat_request"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
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


# --------------------------------------------------------------------------- responses
class _ClosingStreamingResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator (client gone or not)."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]


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
    jobs = Jobs(
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
    app.state.engine = jobs  # the server's Jobs (read by gpt2chat serve)
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

    # Host and Content-Type checks, HEAD, and one logged 500 for anything unexpected.
    app.add_middleware(Guard, allowed_hosts=settings.allowed_hosts or LOOPBACK_HOSTS)

    # Compared as bytes: the header's as sent (Starlette decodes headers as Latin-1), the key's
    # as UTF-8 (or the original bytes of a key read from a non-UTF-8 environment).
    key = None if settings.api_key is None else settings.api_key.encode("utf-8", "surrogateescape")

    def authorized(request: Request) -> bool:
        if key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("latin-1"), key
        )

    def authorize(request: Request) -> None:
        if not authorized(request):
            raise APIError(
                401,
                "Missing or incorrect API key: send the header 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # ---------------------------------------------------------------- the page
    # Who may see what, with --api_key set: the page and its static files are public (they
    # hold nothing of this server's); /health says only "ok" to others; /api/settings (the
    # persona, the decoding) and /v1/* need the key.
    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/settings")
    async def page_settings(request: Request) -> dict[str, Any]:
        authorize(request)
        return {
            "model": jobs.model_name,
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
    async def health(request: Request) -> dict[str, Any]:
        if not authorized(request):
            return {"status": "ok"}
        return {
            "status": "ok",
            "model": jobs.model_name,
            "max_concurrency": settings.max_concurrency,
            "active": jobs.scheduler.active,
            "queued": jobs.scheduler.queued,
            **asdict(jobs.counters),
        }

    # ---------------------------------------------------------------- OpenAI API
    def model_card() -> dict[str, Any]:
        return {
            "id": jobs.model_name,
            "object": "model",
            "created": jobs.created,
            "owned_by": "gpt2chat",
        }

    @app.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(request: Request, model_id: str) -> dict[str, Any]:
        authorize(request)
        if model_id != jobs.model_name:
            raise APIError(
                404,
                f"The model {model_id!r} does not exist: this server serves {jobs.model_name!r}.",
                param="model",
                code="model_not_found",
            )
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        payload = await _read_json(request, settings.max_body_bytes)
        chat = parse_chat_request(payload, settings)
        if jobs.scheduler.queued >= settings.max_queue:
            jobs.counters.rejected += 1
            raise APIError(
                429,
                f"The server is busy ({jobs.scheduler.queued} requests waiting): retry later.",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        job = await anyio.to_thread.run_sync(jobs.prepare, chat)
        completion_id, created = _completion_id(), int(time.time())
        if chat.stream:
            return _ClosingStreamingResponse(
                _stream_events(jobs, job, chat, completion_id, created),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        text = await _collect(request, jobs, job)
        if text is None:  # the client left: nobody reads this
            return Response(status_code=499)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": jobs.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": jobs.finish_reason(job),
                        "logprobs": None,
                    }
                ],
                "usage": jobs.usage(job),
                "system_fingerprint": None,
            }
        )

    return app


async def _collect(request: Request, jobs: Jobs, job: Job) -> str | None:
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
            async with aclosing(jobs.run(job)) as stream:
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
    return jobs.reply(job, "".join(pieces))


async def _stream_events(
    jobs: Jobs, job: Job, chat: ChatRequest, completion_id: str, created: int
) -> AsyncIterator[str]:
    """The SSE body: OpenAI ``chat.completion.chunk`` events, then ``data: [DONE]``."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": jobs.model_name,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
                "system_fingerprint": None,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    try:
        async with aclosing(jobs.run(job)) as stream:
            async for piece in stream:
                yield chunk({"content": piece})
    except Exception:
        logger.exception("Generation failed")
        yield _sse(APIError(500, "Generation failed.", type="server_error").body())
        yield "data: [DONE]\n\n"
        return
    yield chunk({}, jobs.finish_reason(job))
    if chat.include_usage:
        yield _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": jobs.model_name,
                "choices": [],
                "usage": jobs.usage(job),
            }
        )
    yield "data: [DONE]\n\n"
