"""The demo from start to end (:func:`run_demo`): reuse a finished demo model or fine-tune one
(the :data:`DONE_FILE` marks it complete), save the chat settings, then chat: the terminal chat
or the scripted conversation."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from .arguments import DemoArguments
from .chat import _play_script, next_commands
from .training import _cut_short_note, _train

#: A file written last in the output folder: its presence means the demo model is complete.
DONE_FILE = "gpt2chat_demo.json"


@dataclass
class DemoResult:
    """What the demo did: where the model is, the perplexities, the transcript (if scripted)."""

    output_dir: str
    trained: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    transcript: list[dict[str, str]] = field(default_factory=list)


def _is_complete(output_dir: Path) -> bool:
    return (output_dir / DONE_FILE).is_file() and (output_dir / "config.json").is_file()


def run_demo(
    args: DemoArguments, *, output: TextIO | None = None, input_stream: TextIO | None = None
) -> DemoResult:
    """Fine-tune (or reuse) the demo model, then chat with it.

    Args:
        args: the demo's options.
        output: where progress, the transcript and the next commands are written (default
            ``sys.stdout``).
        input_stream: where the terminal chat reads from (default ``sys.stdin``).

    Returns:
        A :class:`DemoResult`.
    """
    import json

    from ..chat import ChatSession
    from ..chat.repl import run_repl
    from ..tokens import get_speaker_tokens, load_tokenizer

    out = output or sys.stdout
    input_stream = input_stream or sys.stdin
    output_dir = Path(args.output_dir)
    trained = args.retrain or not _is_complete(output_dir)
    if trained and not args.retrain and output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(
            f"--output_dir {output_dir} is not empty and holds no finished demo model (another "
            "folder, or an interrupted demo): pass --retrain to overwrite it, or choose another "
            "--output_dir."
        )
    if trained:
        (output_dir / DONE_FILE).unlink(missing_ok=True)  # an interrupted retrain is not done
        metrics = _train(args, out)
        (output_dir / DONE_FILE).write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        out.write(f"Saved the fine-tuned model to {output_dir}/ (a plain Hugging Face folder).\n")
    else:
        metrics = json.loads((output_dir / DONE_FILE).read_text())
        out.write(
            f"Reusing the demo model in {output_dir}/ (validation perplexity "
            f"{metrics.get('perplexity_before', math.nan):.2f} -> "
            f"{metrics.get('perplexity_after', math.nan):.2f}); --retrain fine-tunes again.\n"
        )
        if metrics.get("stopped_by_time_budget"):
            settings = metrics.get("settings", {})
            out.write(
                _cut_short_note(
                    metrics.get("steps", 0),
                    settings.get("max_steps", args.max_steps),
                    settings.get("time_budget", args.time_budget),
                )
            )
    out.flush()

    # Chat with the history window the saved model was trained with.
    trained_turns = metrics.get("settings", {}).get("max_turns", args.max_turns)
    args = replace(args, max_turns=trained_turns)
    tokens = get_speaker_tokens(load_tokenizer(str(output_dir)))
    # What `gpt2chat chat` / `serve` (and other engines, for the standard fields) will use.
    args.chat_settings.save_pretrained(output_dir, tokens=tokens)
    result = DemoResult(str(output_dir), trained, metrics)
    mode = args.chat
    if mode == "auto":
        mode = "repl" if getattr(input_stream, "isatty", lambda: False)() else "script"
    if mode != "none":
        chat_seed = args.chat_seed
        if chat_seed is None:  # a fresh seed per run: replies differ, and can be replayed
            chat_seed = random.SystemRandom().randrange(1, 100_000)
        session = ChatSession.from_pretrained(
            output_dir,
            device="cpu",
            seed=chat_seed,  # the decoding settings: those just saved
        )
        if mode == "script":
            result.transcript = _play_script(session, out)
        else:
            out.write(f"\nChat with the demo model (sampling seed {chat_seed}):\n")
            run_repl(session, input_stream=input_stream, output=out)
    out.write(next_commands(args))
    out.flush()
    return result
