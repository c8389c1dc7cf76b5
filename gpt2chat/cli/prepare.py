"""``gpt2chat prepare``: the original scripts' data step, cached and reported."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import parse


@dataclass
class PrepareArguments:
    output_dir: str = field(
        default="prepared", metadata={"help": "Where the prepared splits are saved."}
    )
    splits: str = field(
        default="train,validation", metadata={"help": "Comma-separated splits to prepare."}
    )


def cmd_prepare(argv: list[str]) -> int:
    from ..pipeline import format_stats_table, prepare_to_disk
    from ..training.arguments import DataArguments, ModelArguments

    model_args, data_args, prep_args = parse(
        (ModelArguments, DataArguments, PrepareArguments),
        argv,
        "gpt2chat prepare",
        "Load dialogue datasets, render training examples and save them with save_to_disk.",
    )
    rows = prepare_to_disk(model_args, data_args, prep_args.output_dir, prep_args.splits.split(","))
    print(format_stats_table(rows))
    print(f"\nSaved to {prep_args.output_dir}/ (train with: gpt2chat train --prepared_dir ...)")
    return 0
