"""Reading the JSON data files: every failure is a :class:`DataFormatError` naming file and line.

``json.loads`` fails in three ways besides invalid syntax: a value nested deeper than Python's
recursion limit (``RecursionError``, about 1000 levels), an integer of more than 4300 digits
(a plain ``ValueError``) and, for the streamed reader of the chitchat loader, the same found
in one chunk. :func:`parse_json` turns each into an error that names the file and the line
(the line of the deepest nesting, or of the long number, when the text is a whole file).

Decoded strings may hold unpaired UTF-16 surrogates (``"\\ud800"`` escapes): the loaders check
the texts they keep with :func:`gpt2chat.data.base.check_text`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .base import DataFormatError, where

__all__ = ["json_error", "parse_json"]

#: A JSON string (skipped whole), a bracket, or an integer too long for ``int()``.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|\d{4301,}', re.DOTALL)


def parse_json(text: str, path: str | Path, *, line: int | None = None, hint: str = "") -> Any:
    """``json.loads(text)``; any failure raises a :class:`DataFormatError` naming ``path`` and
    the line (``line`` when ``text`` is that one line of the file, else found in ``text``)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise json_error(err, text, path, line=line, hint=hint) from None


def json_error(
    err: BaseException, text: str, path: str | Path, *, line: int | None = None, hint: str = ""
) -> DataFormatError:
    """The :class:`DataFormatError` for ``err``, raised while decoding ``text`` (of ``path``)."""
    if isinstance(err, json.JSONDecodeError):
        at = line if line is not None else err.lineno
        problem = f"invalid JSON ({err.msg}, column {err.colno})"
    elif isinstance(err, RecursionError):
        at = line if line is not None else _locate(text)[0]
        problem = (
            "JSON nested too deeply to read (more than about 1000 levels of lists or objects; "
            "a dialogue needs a few)"
        )
    elif "digits" in str(err):
        at = line if line is not None else _locate(text)[1]
        problem = "invalid JSON (an integer of more than 4300 digits)"
    else:
        at = line
        problem = f"invalid JSON ({err})"
    return DataFormatError(f"{where(path, at)}: {problem}." + (f" {hint}" if hint else ""))


def _locate(text: str) -> tuple[int | None, int | None]:
    """The lines of the deepest nesting and of the first over-long integer in ``text``."""
    depth, deepest, deepest_at, long_at = 0, 0, None, None
    for m in _TOKEN.finditer(text):
        c = text[m.start()]
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest, deepest_at = depth, m.start()
        elif c in "]}":
            depth -= 1
        elif c.isdigit() and long_at is None:
            long_at = m.start()

    def line_of(pos: int | None) -> int | None:
        return None if pos is None else text.count("\n", 0, pos) + 1

    return line_of(deepest_at), line_of(long_at)
