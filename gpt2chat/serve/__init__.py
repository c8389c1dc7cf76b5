"""``gpt2chat serve``: an OpenAI-compatible chat API and a web page on :class:`~gpt2chat.ChatSession`.

```python
>>> from gpt2chat.serve import ServeSettings, create_app, serve
>>> serve(create_app("runs/gpt2-dialogue", ServeSettings(max_concurrency=4)), port=8000)
```
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .app import create_app
from .protocol import APIError, ChatRequest, ServeSettings, parse_chat_request

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

__all__ = ["APIError", "ChatRequest", "ServeSettings", "create_app", "parse_chat_request", "serve"]


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run ``app`` with uvicorn until interrupted (Ctrl-C).

    Args:
        app: the application from :func:`create_app`.
        host: interface to bind; the default accepts connections from this machine only.
        port: TCP port.
        log_level: uvicorn's log level (``warning`` hides the access log).
    """
    import uvicorn

    logger.info("Listening on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
