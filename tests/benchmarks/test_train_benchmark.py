"""Smoke test of ``python -m benchmarks.train``: the harness is correct (not the timings)."""

from __future__ import annotations

import math


def test_quick_run_prints_the_table_and_the_ratio_last(standin_shared, capsys):
    from benchmarks.train import main

    result = main(["--quick", "--threads", "1", "--in-process"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio: DialogueTrainer reply tokens/s = ")
    assert "x seed loop" in lines[-1] and "x TRL SFTTrainer" in lines[-1]
    text = "\n".join(lines)
    assert "| case" in text and "seed loop (fp32, shuffled)" in text and "TRL SFTTrainer" in text
    speed = result["speed"]
    # Same optimiser steps and the same reply tokens for the seed loop and DialogueTrainer.
    seed, ours = speed["seed"]["runs"][0], speed["ours"]["runs"][0]
    assert seed["steps"] == ours["steps"] == 4
    assert seed["reply_tokens"] == ours["reply_tokens"] > 0
    assert speed["trl"]["runs"][0]["steps"] == 4 and speed["trl"]["runs"][0]["reply_tokens"] > 0
    assert result["ratio_seed"] > 0 and result["ratio_trl"] > 0
    for case in ("seed", "ours", "trl"):
        q = result["quality"][case]
        assert q["steps"] >= 1 and math.isfinite(q["eval_perplexity"]) and q["eval_tokens"] > 0
    # The validation set is the same for every case.
    assert len({result["quality"][c]["eval_tokens"] for c in ("seed", "ours", "trl")}) == 1
