"""Helpers for the server tests: a saved tiny chat model and a uvicorn server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..fixtures import load_tokenizer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_page(playwright: Any, profile: Path, chromium: Path = CHROMIUM) -> tuple[Any, Any]:
    """``(context, page)``: headless Debian chromium with a fresh profile, a 960x720 light page."""
    context = playwright.chromium.launch_persistent_context(
        str(profile),  # a fresh user-data dir
        executable_path=str(chromium),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 960, "height": 720},
        color_scheme="light",
    )
    page = context.pages[0] if context.pages else context.new_page()
    page.set_default_timeout(30_000)
    return context, page


def save_chat_model(path: Path) -> Path:
    """Save a tiny random GPT-2 with the suite's GPT-2-format tokenizer extended with the speaker
    tokens.

    The weights are initialised ten times wider than GPT-2's default (``initializer_range=0.2``)
    so that a random model's greedy reply depends on the conversation: with the default init
    every history gets the same gibberish, and cross-talk between requests would go unseen.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2chat import add_speaker_tokens

    tokenizer = load_tokenizer()
    add_speaker_tokens(tokenizer)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_layer=2,
        n_head=2,
        n_embd=64,
        initializer_range=0.2,
    )
    model = GPT2LMHeadModel(config)
    add_speaker_tokens(tokenizer, model)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def reference_reply(template, messages: list[dict[str, str]], **options: Any) -> tuple[str, Any]:
    """What a fresh ``ChatSession`` on ``template``'s model replies to ``messages``.

    Returns the reply and the session's ``last_turn`` statistics.
    """
    from gpt2chat.chat.session import ChatSession

    persona = None
    if messages and messages[0]["role"] == "system":
        persona, messages = messages[0]["content"], messages[1:]
    session = ChatSession(
        template.model, template.tokenizer, max_turns=5, persona=persona, **options
    )
    session.history = messages[:-1]
    reply = session.send(messages[-1]["content"])
    return reply, session.last_turn


class LiveServer:
    """Run an ASGI app with uvicorn on a free port of 127.0.0.1, in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    @property
    def engine(self) -> Any:
        return self.app.state.engine


def assert_error(response, status: int, param: str | None = "any", code: str = "any") -> dict:
    """An OpenAI-style JSON error with ``status`` (and ``param`` / ``code`` unless "any")."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param"}
    assert isinstance(error["message"], str) and error["message"]
    if param != "any":
        assert error["param"] == param, error
    if code != "any":
        assert error["code"] == code, error
    return error


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def slow_down(model, seconds: float):
    """Make every forward pass of ``model`` take ``seconds`` longer (returns the hook handle)."""
    return model.register_forward_hook(lambda *args: time.sleep(seconds))
