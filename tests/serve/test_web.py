"""The web chat page in a real headless browser (Debian's ``chromium`` driven by Playwright).

Loads ``/``, types messages, watches the reply stream in, starts a new conversation, checks the
phone-sized dark-mode layout, and saves screenshots to ``test-artifacts/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import CHROMIUM, LiveServer, launch_page, reference_reply, save_chat_model, slow_down

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
MAX_TOKENS = 24


def luminance(css_color: str) -> float:
    """Relative luminance (0 black .. 1 white) of an ``rgb(...)`` / ``rgba(...)`` colour."""
    inside = css_color[css_color.index("(") + 1 : css_color.index(")")]
    r, g, b = (float(v) / 255 for v in inside.replace("/", ",").split(",")[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        if os.environ.get("GPT2CHAT_SKIP_BROWSER") == "1":
            pytest.skip("GPT2CHAT_SKIP_BROWSER=1 and /usr/bin/chromium is absent")
        pytest.fail(
            "/usr/bin/chromium is absent: run `apt-get install -y chromium` (CI's .ci/run "
            "installs it), or set GPT2CHAT_SKIP_BROWSER=1 to skip the browser tests."
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    from gpt2chat.chat.session import ChatSession
    from gpt2chat.serve import ServeSettings, create_app

    model_dir = save_chat_model(tmp_path_factory.mktemp("web") / "tiny-chat")
    session = ChatSession.from_pretrained(model_dir, device="cpu")
    # ~25 ms a token: the reply visibly streams in, piece by piece.
    hook = slow_down(session.model, 0.025)
    settings = ServeSettings(temperature=0, max_new_tokens=MAX_TOKENS, model_name="tiny-chat")
    try:
        with LiveServer(create_app(session, settings)) as live:
            live.reference = session
            yield live
    finally:
        hook.remove()


@pytest.fixture
def browser_page(chromium, web_server, tmp_path):
    with sync_api.sync_playwright() as playwright:
        context, page = launch_page(playwright, tmp_path / "profile", chromium)
        try:
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"console {msg.type}: {msg.text}")
                    if msg.type in ("error", "warning")
                    else None
                ),
            )
            yield page, requests, problems
        finally:
            context.close()


WATCH_REPLY = """() => {
    // Record (time, length, number of replies) every time the newest reply changes.
    window.__updates = [];
    if (window.__observer) window.__observer.disconnect();
    window.__observer = new MutationObserver(() => {
        const replies = document.querySelectorAll('.msg.assistant .text');
        const last = replies[replies.length - 1];
        if (last) {
            window.__updates.push([performance.now(), last.textContent.length, replies.length]);
        }
    });
    window.__observer.observe(document.getElementById('messages'),
                              {subtree: true, childList: true, characterData: true});
}"""


def send(page, text: str, turn: int) -> str:
    """Type ``text``, press Enter, watch the reply stream in; return the final reply."""
    page.evaluate(WATCH_REPLY)
    page.fill("#message", text)
    page.press("#message", "Enter")
    bubble = page.locator(".msg.assistant").nth(turn)
    page.wait_for_function(
        "(i) => document.querySelectorAll('.msg.assistant')[i]?.dataset.state === 'done'",
        arg=turn,
        timeout=60_000,
    )
    final = bubble.locator(".text").inner_text()
    assert final and int(bubble.get_attribute("data-chunks")) >= 2, "one piece: not streamed"
    updates = [
        (t, n) for t, n, count in page.evaluate("() => window.__updates") if count == turn + 1
    ]
    lengths = [n for _, n in updates]
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), "the reply did not grow"
    assert updates[-1][0] - updates[0][0] > 100, "the pieces did not arrive over time"
    return final


def test_web_chat(browser_page, web_server):
    page, requests, problems = browser_page
    reference = web_server.reference
    greedy = {"do_sample": False, "max_new_tokens": MAX_TOKENS}

    page.goto(web_server.url + "/")
    page.wait_for_selector("body[data-ready='true']")
    assert page.locator("#model-name").inner_text() == "tiny-chat"
    summary = page.locator("#settings-summary").inner_text()
    assert "greedy" in summary and str(MAX_TOKENS) in summary

    first = "Hello! How are you today?"
    reply = send(page, first, 0)
    conversation = [{"role": "user", "content": first}]
    assert reply == reference_reply(reference, conversation, **greedy)[0]

    second = "What do you like to do on weekends?"
    reply2 = send(page, second, 1)
    conversation += [{"role": "assistant", "content": reply}, {"role": "user", "content": second}]
    assert reply2 == reference_reply(reference, conversation, **greedy)[0]  # the page sent history
    assert page.locator(".msg.user").count() == 2

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-chat.png"))

    # A new conversation forgets the old one: the same first message gets the same reply.
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    assert page.locator("#empty").is_visible()
    assert send(page, first, 0) == reply

    # Phone-sized and dark: everything fits the width and text is light on dark.
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    send(page, "And in dark mode?", 1)
    layout = page.evaluate(
        """() => {
            const css = (el, prop) => getComputedStyle(el)[prop];
            const bot = document.querySelector('.msg.assistant');
            const input = document.getElementById('message').getBoundingClientRect();
            return {
                overflow: document.documentElement.scrollWidth - window.innerWidth,
                background: css(document.body, 'backgroundColor'),
                text: css(document.body, 'color'),
                botBackground: css(bot, 'backgroundColor'),
                botText: css(bot, 'color'),
                inputBottom: input.bottom,
                height: window.innerHeight,
            };
        }"""
    )
    assert layout["overflow"] <= 0, layout
    assert luminance(layout["background"]) < 0.2 < 0.7 < luminance(layout["text"]), layout
    assert luminance(layout["botText"]) - luminance(layout["botBackground"]) > 0.5, layout
    assert 0 < layout["inputBottom"] <= layout["height"], "the message box is off screen"
    page.screenshot(path=str(ARTIFACTS / "web-chat-phone-dark.png"))

    # Everything came from this server (no CDN), and the page logged no error.
    assert requests and all(url.startswith(web_server.url + "/") for url in requests), requests
    assert not problems, problems


def test_screenshot_tool_serves_a_model_folder_and_saves_the_page(chromium, tmp_path):
    """``python -m tests.serve.screenshot`` (the README's picture) on a tiny model folder."""
    from .screenshot import take

    folder = save_chat_model(tmp_path / "tiny-chat")
    out = tmp_path / "shot.png"
    replies = take(str(folder), out, messages=("Hello!", "How are you?"))
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_web_chat_asks_for_the_key_of_a_protected_server(chromium, tmp_path):
    """With --api_key the page cannot read the settings until the key is entered; then it chats."""
    from gpt2chat.serve import ServeSettings, create_app

    folder = save_chat_model(tmp_path / "tiny-chat")
    settings = ServeSettings(api_key="k3y", temperature=0, max_new_tokens=4, device="cpu")
    with LiveServer(create_app(folder, settings)) as live, sync_api.sync_playwright() as pw:
        context, page = launch_page(pw, tmp_path / "profile", chromium)
        try:
            page.goto(live.url + "/")
            page.wait_for_function("() => document.getElementById('status').textContent.length > 0")
            assert "API key" in page.locator("#status").inner_text()
            assert page.locator("#api-key-row").is_visible()
            assert page.get_attribute("body", "data-ready") is None
            page.fill("#api-key", "k3y")
            page.dispatch_event("#api-key", "change")
            page.wait_for_selector("body[data-ready='true']")
            page.fill("#message", "Hello!")
            page.press("#message", "Enter")
            page.wait_for_function(
                "() => document.querySelector('.msg.assistant')?.dataset.state === 'done'"
            )
            assert page.locator(".msg.assistant .text").inner_text()
        finally:
            context.close()
