"""``gpt2chat <command>``: argument parsing only; the work happens in the library modules."""

from __future__ import annotations

import logging
import re
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


class ConfigError(ValueError):
    """A ``--config`` file that cannot be used (the message names it)."""


def _config_path(
    argv: list[str], names: tuple[str, ...] = ("--config",)
) -> tuple[Path | None, list[str]]:
    """The ``--config FILE`` / ``--config=FILE`` of ``argv`` (one at most) and the other args.
    ``names``: ``--config`` and the abbreviations argparse would take for it."""
    found: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in names:
            value = next(args, None)
            if value is None or value.startswith("--"):
                raise ConfigError("--config needs a YAML file path")
            found.append(value)
        elif arg.split("=", 1)[0] in names and "=" in arg:
            found.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    if len(found) > 1:
        raise ConfigError(f"--config is given {len(found)} times ({', '.join(found)}): pass one")
    if found and not found[0]:
        raise ConfigError("--config needs a YAML file path")
    return (Path(found[0]) if found else None), rest


def _read_config(path: Path) -> dict:
    """The ``key: value`` mapping of a YAML ``--config`` file; every error names the file."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--config {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
            f"{err.start}): save it as UTF-8"
        ) from None
    except OSError as err:
        raise ConfigError(f"--config {path} cannot be read: {err.strerror or err}") from None
    except RecursionError:
        raise ConfigError(f"--config {path} nests deeper than a config can: flatten it") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        detail = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"--config {path} is not valid YAML{where}: {detail}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must hold a mapping of argument: value")
    return values


def _expand_config(
    argv: list[str], names: tuple[str, ...] = ("--config",)
) -> tuple[list[str], Path | None, dict]:
    """Replace ``--config file.yaml`` (or ``--config=file.yaml``) by the file's ``key: value``
    pairs, placed first so that command-line flags win. Returns the arguments, the file and
    its values."""
    path, rest = _config_path(argv, names)
    if path is None:
        return argv, None, {}
    values = _read_config(path)
    if "config" in values:
        raise ConfigError(f"--config {path} names another config file (config:): merge them")
    expanded: list[str] = []
    for key, value in values.items():
        items = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in items):
            raise ConfigError(
                f"--config {path}: {str(key)[:60]!r} must be a value or a list of values, not a "
                "mapping or a nested list"
            )
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        expanded += [f"--{key}", str(value)]
    return expanded + rest, path, values


class _Parser(HfArgumentParser):
    """``HfArgumentParser`` whose errors say which ``--config`` file set the arguments they
    name."""

    config: tuple[Path, dict] | None = None

    def error(self, message: str):
        if self.config is not None:
            path, values = self.config
            keys = [k for k in values if re.search(rf"--{re.escape(str(k))}\b", message)]
            note = f"{', '.join(keys)} set by --config {path}" if keys else f"with --config {path}"
            message = f"{message.rstrip('.')} ({note})."
        super().error(message)


def parse(dataclass_types, argv: list[str], prog: str, description: str):
    parser = _Parser(dataclass_types, prog=prog, description=description)
    parser.add_argument(
        "--config", help="YAML file with arguments (command-line flags win); also --config=FILE."
    )
    # --config and its abbreviations that no other option shares (argparse accepts them)
    others = [o for o in parser._option_string_actions if o != "--config"]
    prefixes = ["--config"[:n] for n in range(3, 8)]
    names = ("--config", *(p for p in prefixes if not any(o.startswith(p) for o in others)))
    try:
        args, path, values = _expand_config(argv, names)
    except ConfigError as err:  # one line, no usage: the file is the problem, not the flags
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if path is not None:
        parser.config = (path, values)
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(
            args=args, return_remaining_strings=True
        )
    except ValueError as err:  # raised by the dataclasses' __post_init__ validation
        parser.error(str(err))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
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
