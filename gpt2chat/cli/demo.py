"""``gpt2chat demo``: the offline quick start."""

from __future__ import annotations

from . import parse


def cmd_demo(argv: list[str]) -> int:
    from ..demo import DemoArguments, run_demo

    (demo_args,) = parse(
        (DemoArguments,), argv, "gpt2chat demo", "The offline quick start (see README)."
    )
    print(run_demo(demo_args))
    return 0
