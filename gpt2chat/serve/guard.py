"""What every HTTP request of ``gpt2chat serve`` passes before a route sees it (:class:`Guard`,
a plain ASGI middleware, so streaming and disconnect detection are untouched):

* the ``Host`` header must name this server (loopback names by default; ``allowed_hosts`` for
  a deployment), which defeats DNS rebinding: a page on another origin cannot reach a server on
  127.0.0.1 through a name it controls;
* a ``POST`` body must be ``Content-Type: application/json``, so a cross-site "simple" request
  (a form, ``text/plain``) never starts a generation;
* ``HEAD`` is answered on every ``GET`` route (the ``GET`` response without its body), and a
  ``Range`` header is ignored (files are sent whole, so no error is in another format);
* an unexpected exception becomes one ``500`` in OpenAI's error format, logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .protocol import APIError

logger = logging.getLogger(__name__)

__all__ = ["LOOPBACK_HOSTS", "Guard", "host_name"]

#: The names of this machine's loopback interface: the default ``allowed_hosts``.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """``Host`` header value -> the name alone: ``"[::1]:8000"`` -> ``"::1"``,
    ``"Example.COM.:80"`` -> ``"example.com"``."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal, maybe with a port, and nothing else
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else None
        if rest is None or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return host  # not a valid Host: compared as it is, it matches no allowed name
        return host[1:end]
    if host.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class Guard:
    """The checks above, around the FastAPI app (see the module docstring).

    Args:
        app: the ASGI app to guard.
        allowed_hosts: accepted ``Host`` names (compared by :func:`host_name`); ``"*"`` accepts
            any.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(raw)
        error = self._refusal(scope["method"], headers)
        if error is None and sum(k == "content-type" for k, _ in raw) > 1:
            error = APIError(400, "Send one Content-Type header.", code="invalid_content_type")
        if error is not None:
            await error.response()(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
            send = _without_body(send)
        if "range" in headers:  # the page's files are small: always sent whole (200, not 206)
            scope = {
                **scope,
                "headers": [
                    (k, v) for k, v in scope["headers"] if k.lower() not in (b"range", b"if-range")
                ],
            }
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("Unexpected error on %s %s", scope["method"], scope["path"])
            if not started:
                error = APIError(500, "Internal server error.", type="server_error")
                await error.response()(scope, receive, send)

    def _refusal(self, method: str, headers: dict[str, str]) -> APIError | None:
        host = headers.get("host")
        if host is None:
            return APIError(400, "The request has no Host header.", code="invalid_host")
        if not self.any_host and host_name(host) not in self.allowed:
            return APIError(
                400,
                f"This server does not answer to the host name {host[:100]!r}: it answers to "
                f"{', '.join(sorted(self.allowed))} (gpt2chat serve --allowed_hosts).",
                code="invalid_host",
            )
        if method == "POST":
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                return APIError(
                    415,
                    "Send the request body as JSON with the header 'Content-Type: "
                    f"application/json' (got {media[:60] or 'none'!r}).",
                    code="unsupported_media_type",
                )
        return None


def _without_body(send: Send) -> Send:
    """``send`` for a ``HEAD`` request: the ``GET`` response's start (its headers, its
    ``content-length``) and an empty body."""

    async def head_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return head_send
