"""The terminal loop and ``gpt2chat chat``: pipes, commands, Ctrl-D / Ctrl-C, the seed's arguments."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from gpt2chat.chat.repl import run_repl
from gpt2chat.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def chat_through(session, lines: str, **kwargs) -> str:
    out = io.StringIO()
    assert run_repl(session, input_stream=io.StringIO(lines), output=out, **kwargs) == 0
    return out.getvalue()


def test_piped_conversation_with_reset_and_end_command(make_session):
    chat = make_session()
    text = chat_through(chat, "Hello!\n\n   \n/reset\nHow are you?\nAbort!\nnever read\n")
    lines = text.splitlines()
    assert lines[0] == "You: Hello!"
    assert lines[1].startswith("Bot: ")
    assert "(empty message" in lines[3] and "(empty message" in lines[5]
    assert "(history cleared)" in text
    assert lines[-1] == "Bot: Good bye."
    assert "never read" not in text
    # /reset forgot the first exchange
    assert [m["content"] for m in chat.history][::2] == ["How are you?"]
    assert lines[lines.index("You: How are you?") + 1] == f"Bot: {chat.history[1]['content']}"


def test_streamed_and_complete_replies_print_the_same(make_session):
    streamed = chat_through(make_session(), "Hi\nWhat's up?\n")
    complete = chat_through(make_session(), "Hi\nWhat's up?\n", stream=False)
    assert streamed == complete


def test_end_of_input_ends_cleanly(make_session):
    chat = make_session()
    text = chat_through(chat, "One\nTwo")  # no end command, no final newline
    assert text.count("Bot: ") == 2 and len(chat.history) == 4


def test_custom_end_command(make_session):
    text = chat_through(make_session(), "quit\n", end_command="quit")
    assert text.splitlines() == ["You: quit", "Bot: Good bye."]


class _CtrlC(io.StringIO):
    def readline(self, *args):
        raise KeyboardInterrupt


def test_ctrl_c_at_the_prompt_ends_cleanly(make_session):
    out = io.StringIO()
    assert run_repl(make_session(), input_stream=_CtrlC(), output=out) == 0


class _InterruptedSession:
    """Stands in for a session whose reply is interrupted by Ctrl-C after one piece."""

    def __init__(self):
        self.closed = False

    def stream(self, text):
        def pieces():
            try:
                yield "Well"
                raise KeyboardInterrupt
            finally:
                self.closed = True

        return pieces()


def test_ctrl_c_while_the_bot_answers_ends_cleanly():
    session = _InterruptedSession()
    out = io.StringIO()
    assert run_repl(session, input_stream=io.StringIO("Hi\nnext\n"), output=out) == 0
    assert out.getvalue().splitlines() == ["You: Hi", "Bot: Well"]
    assert session.closed


def test_interactive_mode_uses_input(make_session, monkeypatch):
    answers = iter(["Hi", "/help"])

    def fake_input(prompt):
        assert prompt == "You: "
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None  # Ctrl-D

    monkeypatch.setattr("builtins.input", fake_input)
    out = io.StringIO()
    assert run_repl(make_session(), output=out, interactive=True) == 0
    text = out.getvalue()
    assert text.startswith("Chat started.")
    assert "Decoding: greedy; up to 8 tokens; window of 5 utterances.\n" in text
    assert "Bot: " in text and "(commands:" in text


# --------------------------------------------------------------------------- the CLI
def test_cli_through_a_pipe(model_dir):
    """The real console entry point, stdin a pipe, the seed's argument names."""
    args = [
        sys.executable,
        "-m",
        "gpt2chat",
        "chat",
        "--model_path",
        str(model_dir),
        "--seed",
        "0",
        "--gpu",
        "0",
        "--max_turns",
        "3",
        "--top_p",
        "0.9",
        "--end_command",
        "Bye!",
        "--max_new_tokens",
        "5",
    ]
    result = subprocess.run(
        args,
        input="Hi there!\n<sp2> tricky <bos>\nBye!\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "You: Hi there!" and lines[1].startswith("Bot: ")
    assert lines[2] == "You: <sp2> tricky <bos>" and lines[3].startswith("Bot: ")
    assert lines[-2:] == ["You: Bye!", "Bot: Good bye."]
    assert "Traceback" not in result.stderr


def test_cli_options_and_transcript(model_dir, tmp_path, monkeypatch, capsys):
    transcript = tmp_path / "chat.json"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nAgain\n"))
    status = main(
        [
            "chat",
            "--model_path",
            str(model_dir),
            "--gpu",
            "cpu",
            "--greedy",
            "--max_new_tokens",
            "4",
            "--no_repeat_ngram_size",
            "2",
            "--guidance_scale",
            "1.5",
            "--persona",
            "I am a test bot.",
            "--no_stream",
            "--threads",
            "1",
            "--save_transcript",
            str(transcript),
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert out.count("Bot: ") == 2
    data = json.loads(transcript.read_text())
    assert data["persona"] == "I am a test bot."
    assert [m["content"] for m in data["messages"]][::2] == ["Hello", "Again"]

    monkeypatch.setattr(sys, "stdin", io.StringIO("More\n"))
    status = main(
        ["chat", "--model_path", str(model_dir), "--greedy", "--load_transcript", str(transcript)]
    )
    assert status == 0 and capsys.readouterr().out.count("Bot: ") == 1


def test_cli_num_candidates_reranks_sampled_replies(model_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\nHow are you?\n"))
    argv = ["chat", "--model_path", str(model_dir), "--gpu", "cpu", "--threads", "1"]
    argv += ["--num_candidates", "3", "--mmi_weight", "0.7", "--max_new_tokens", "5"]
    assert main(argv) == 0
    assert capsys.readouterr().out.count("Bot: ") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--model_path is required"),
        (["--model_path", "x", "--top_p", "1.5"], "--top_p"),
        (["--model_path", "x", "--max_turns", "1"], "--max_turns"),
        (["--model_path", "x", "--guidance_scale", "-1"], "--guidance_scale must be a number >= 0"),
        (["--model_path", "x", "--temperature", "0"], "--temperature must be >= 0.001, got 0.0"),
        (["--model_path", "x", "--do_sample", "false", "--num_candidates", "3"], "reranks sampled"),
        (["--model_path", "x", "--greedy", "--do_sample", "true"], "contradict"),
        (["--model_path", "x", "--use_token_type_ids", "maybe"], "--use_token_type_ids"),
        (["--model_path", "x", "--guidance_scale", "2", "--num_beams", "2"], "drop --num_beams"),
        (
            ["--model_path", "x", "--num_candidates", "0"],
            "--num_candidates must be an integer between 1",
        ),
        (["--model_path", "x", "--num_candidates", "4", "--greedy"], "drop --greedy"),
        (["--model_path", "x", "--num_candidates", "4", "--mmi_weight", "-1"], "--mmi_weight"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_reports_a_missing_model(tmp_path, capsys):
    assert main(["chat", "--model_path", str(tmp_path / "missing")]) == 1
    assert "error" in capsys.readouterr().err
