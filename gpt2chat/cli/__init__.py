"""``gpt2chat <command>``: argument parsing only; the work happens in the library modules."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from transformers import HfArgumentParser

logger = logging.getLogger("gpt2chat")


# --------------------------------------------------------------------------- helpers
def _setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level
    )
    logging.getLogger("gpt2chat").setLevel(level)


def _expand_config(argv: list[str]) -> list[str]:
    """Replace ``--config file.yaml`` by the file's ``key: value`` pairs (CLI flags win)."""
    if "--config" not in argv:
        return argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise SystemExit("error: --config needs a YAML file path")
    path = Path(argv[i + 1])
    if not path.is_file():
        raise SystemExit(f"error: --config {path}: no such file")
    import yaml

    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SystemExit(f"error: --config {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise SystemExit(f"error: --config {path} must hold a mapping of argument: value")
    expanded: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        expanded += [f"--{key}", str(value)]
    return expanded + argv[:i] + argv[i + 2 :]


def parse(dataclass_types, argv: list[str], prog: str, description: str):
    parser = HfArgumentParser(dataclass_types, prog=prog, description=description)
    parser.add_argument("--config", help="YAML file with arguments (command-line flags win).")
    try:
        parsed = parser.parse_args_into_dataclasses(args=_expand_config(argv))
    except ValueError as err:  # raised by the dataclasses' __post_init__ validation
        parser.error(str(err))
    return [p for p in parsed if not isinstance(p, type(None))][: len(dataclass_types)]


#: command -> ("module:function", help). Each command's parsing lives in gpt2chat/cli/<command>.py
#: and is imported only when that command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("gpt2chat.cli.demo:cmd_demo", "the offline quick start: fine-tune and chat"),
    "prepare": ("gpt2chat.cli.prepare:cmd_prepare", "load datasets and save training features"),
    "train": ("gpt2chat.cli.train:cmd_train", "fine-tune a model on dialogues"),
    "eval": ("gpt2chat.cli.eval:cmd_eval", "perplexity and generation metrics of a model"),
    "export": ("gpt2chat.cli.export:cmd_export", "merge a LoRA adapter into a plain model"),
    "chat": ("gpt2chat.cli.chat:cmd_chat", "chat with a model in the terminal"),
    "serve": ("gpt2chat.cli.serve:cmd_serve", "HTTP chat server: OpenAI-compatible API + web page"),
}


def _load_command(name: str) -> Callable[[list[str]], int]:
    import importlib

    module_name, fn_name = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module_name), fn_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpt2chat`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: gpt2chat <command> [--help] [options]\n\ncommands:\n" + "\n".join(
        f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gpt2chat: unknown command {name!r}\n\n{usage}", file=sys.stderr)
        return 2
    _setup_logging()
    try:
        return _load_command(name)(rest)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        logger.debug("command failed", exc_info=True)
        print(f"gpt2chat {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["COMMANDS", "main", "parse"]
