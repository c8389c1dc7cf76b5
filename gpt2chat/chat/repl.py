"""The terminal loop behind ``gpt2chat chat``: ``You:`` / ``Bot:`` lines, streamed replies.

Kept apart from :class:`~gpt2chat.chat.ChatSession` (which never prints). Works interactively
(line editing through ``readline`` when available) and with stdin from a pipe, one user turn per
line, so a conversation can be scripted::

    printf 'Hi!\\nHow are you?\\nAbort!\\n' | gpt2chat chat --model_path runs/my-bot
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .session import ChatSession

__all__ = ["RESET_COMMAND", "run_repl"]

RESET_COMMAND = "/reset"
HELP_COMMAND = "/help"


def _reader(stream: TextIO, output: TextIO, interactive: bool):
    """Return ``read(prompt) -> str | None`` (``None`` at end of input)."""
    if interactive:
        with contextlib.suppress(ImportError):  # line editing and history where available
            import readline  # noqa: F401

        def read_tty(prompt: str) -> str | None:
            try:
                return input(prompt)
            except EOFError:  # Ctrl-D
                output.write("\n")
                return None

        return read_tty

    def read_pipe(prompt: str) -> str | None:
        line = stream.readline()
        if not line:
            return None
        line = line.rstrip("\r\n")
        output.write(f"{prompt}{line}\n")  # echo, so the output reads as a transcript
        return line

    return read_pipe


def run_repl(
    session: ChatSession,
    *,
    end_command: str = "Abort!",
    stream: bool = True,
    input_stream: TextIO | None = None,
    output: TextIO | None = None,
    interactive: bool | None = None,
) -> int:
    """Chat in the terminal until the end command, end of input (Ctrl-D) or Ctrl-C.

    Args:
        session: the conversation to continue.
        end_command: a line that ends the session (the original recipe's ``Abort!``).
        stream: print the reply as it is generated (else when complete).
        input_stream: where user lines come from (default ``sys.stdin``).
        output: where the conversation is printed (default ``sys.stdout``).
        interactive: use ``input()`` with line editing (default: when ``input_stream`` is a TTY);
            otherwise lines are read from the stream and echoed after the ``You:`` prompt.

    Returns:
        The exit status, 0.
    """
    input_stream = input_stream or sys.stdin
    output = output or sys.stdout
    if interactive is None:
        interactive = input_stream is sys.stdin and bool(
            getattr(input_stream, "isatty", lambda: False)()
        )
    read = _reader(input_stream, output, interactive)

    def say(text: str) -> None:
        output.write(text)
        output.flush()

    if interactive:
        say(
            f"Chat started. Type {RESET_COMMAND} to clear the history, {end_command} (or Ctrl-D) "
            f"to quit.\nDecoding: {session.describe_decoding()}.\n"
        )
    while True:
        try:
            line = read("You: ")
        except KeyboardInterrupt:  # Ctrl-C at the prompt
            say("\n")
            break
        if line is None:
            break
        command = line.strip()
        if command == end_command:
            say("Bot: Good bye.\n")
            break
        if command == RESET_COMMAND:
            session.reset()
            say("(history cleared)\n")
            continue
        if command == HELP_COMMAND:
            say(f"(commands: {RESET_COMMAND} clears the history, {end_command} quits)\n")
            continue
        if not command:
            say(
                f"(empty message: type some text, {RESET_COMMAND} to start over or "
                f"{end_command} to quit)\n"
            )
            continue
        try:
            if stream:
                pieces = session.stream(line)
                say("Bot: ")
                with contextlib.closing(pieces):
                    for piece in pieces:
                        say(piece)
                say("\n")
            else:
                reply = session.send(line)
                say(f"Bot: {reply}\n")
        except KeyboardInterrupt:  # Ctrl-C while the bot is answering
            say("\n")
            break
        except ValueError as err:
            say(f"(message refused: {err})\n")
    return 0
