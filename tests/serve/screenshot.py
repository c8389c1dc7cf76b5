"""Take the README's picture of the web page: a model folder served by ``gpt2chat serve``'s app, a
short conversation typed into the page in headless chromium (the browser test's machinery).

    python -m tests.serve.screenshot --model gpt2chat-demo --out docs/web-chat.png

The model decodes with its own saved chat settings (``chat_config.json``), as ``gpt2chat serve
--model gpt2chat-demo`` does; ``--seed`` fixes the sampling so a picture can be retaken.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CHROMIUM, LiveServer, launch_page

MESSAGES = (
    "Hi, how are you today?",
    "What do you like to do on weekends?",
    "I failed my exam today.",
)


def take(model: str, out: Path, messages=MESSAGES, seed: int = 0, name: str | None = None):
    """Serve ``model``, type ``messages`` into the page one by one, save the page to ``out``;
    return the replies."""
    import tempfile

    import torch
    from playwright.sync_api import sync_playwright

    from gpt2chat.serve import ServeSettings, create_app

    torch.manual_seed(seed)
    # Loaded by the app from the folder, as `gpt2chat serve --model` does: chat_config.json applies.
    settings = ServeSettings(model_name=name or Path(model).name, device="cpu")
    replies = []
    with (
        LiveServer(create_app(model, settings)) as live,
        sync_playwright() as playwright,
        tempfile.TemporaryDirectory() as profile,
    ):
        context, page = launch_page(playwright, Path(profile), CHROMIUM)
        try:
            page.goto(live.url + "/")
            page.wait_for_selector("body[data-ready='true']")
            for turn, text in enumerate(messages):
                page.fill("#message", text)
                page.press("#message", "Enter")
                page.wait_for_function(
                    "(i) => document.querySelectorAll('.msg.assistant')[i]?.dataset.state"
                    " === 'done'",
                    arg=turn,
                    timeout=120_000,
                )
                bubble = page.locator(".msg.assistant").nth(turn)
                replies.append(bubble.locator(".text").inner_text())
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            context.close()
    return replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a gpt2chat model folder")
    parser.add_argument("--out", default="docs/web-chat.png", help="the PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed before serving")
    parser.add_argument("--name", default=None, help="the model name the page shows")
    args = parser.parse_args(argv)
    for text, reply in zip(
        MESSAGES, take(args.model, Path(args.out), seed=args.seed, name=args.name)
    ):
        print(f"You: {text}\nBot: {reply}")
    print(f"Saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
