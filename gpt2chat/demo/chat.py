"""The demo's chat stage: the scripted conversation (:data:`DEMO_SCRIPT`) played when stdin is
not a terminal, and the commands to try next."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..chat import ChatSession
    from .arguments import DemoArguments

#: What the scripted (non-terminal) conversation says, one user turn per entry.
DEMO_SCRIPT = (
    "Hi, how are you today?",
    "What do you like to do on weekends?",
    "I failed my exam today.",
    "Thanks for listening. Talk to you later!",
)


def _play_script(session: ChatSession, out: TextIO) -> list[dict[str, str]]:
    out.write(
        f"\nA scripted conversation with the demo model (sampling seed {session.seed}; "
        f"--chat_seed {session.seed} replays it):\n\n"
    )
    for line in DEMO_SCRIPT:
        out.write(f"You: {line}\n")
        reply = session.send(line)
        out.write(f"Bot: {reply}\n")
        out.flush()
    return session.history


def next_commands(args: DemoArguments) -> str:
    """The three commands to try next (chat, serve, train on your own data)."""
    path = args.output_dir
    return "\n".join(
        [
            "",
            f"Next (both decode with the settings saved in {path}/; a flag such as",
            "--temperature 0.9 overrides one):",
            f"  chat in the terminal:    gpt2chat chat --model_path {path}",
            f"  API + web page:          gpt2chat serve --model {path}",
            "                           (then open http://127.0.0.1:8000)",
            f"  train on your own data:  gpt2chat train --model_name_or_path {path} "
            "--datasets jsonl --data_dir my_dialogues.jsonl --output_dir my-bot",
            "",
        ]
    )
