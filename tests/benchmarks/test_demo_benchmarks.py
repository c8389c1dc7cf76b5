"""Smoke tests of ``benchmarks.demo_recipes`` and ``benchmarks.demo_blind``: the harnesses are
correct (not the timings or the judgements)."""

from __future__ import annotations

import json
import math

import pytest


@pytest.mark.slow
def test_recipes_quick_run_trains_each_recipe_and_prints_the_ratios(capsys):
    from benchmarks.demo_recipes import main

    rows = main(["--quick", "--recipes", "full,freeze,mask,lora_freeze"])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("steps per minute vs full fine-tuning: freeze")
    by_recipe = {r[0]: r for r in rows}
    assert set(by_recipe) == {"full", "freeze", "mask", "lora_freeze"}
    for name in ("full", "freeze", "lora_freeze"):
        _, pace, steps, secs, before, after = by_recipe[name]
        assert steps >= 1 and secs > 0 and pace > 0
        assert math.isfinite(before) and math.isfinite(after)
    assert by_recipe["mask"][2] is None  # speed only


def test_recipes_reject_an_unknown_recipe():
    from benchmarks.demo_recipes import main

    with pytest.raises(SystemExit):
        main(["--quick", "--recipes", "full,nope"])


def test_blind_sheet_names_no_system_and_scores_per_system(tmp_path, capsys):
    from benchmarks.demo_blind import generate, read_openers, score
    from gpt2chat import ChatSettings, add_speaker_tokens

    from ..conftest import tiny_gpt2
    from ..fixtures import load_tokenizer

    model, tokenizer = tiny_gpt2(), load_tokenizer()
    tokens = add_speaker_tokens(tokenizer, model)
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    ChatSettings(max_new_tokens=4).save_pretrained(tmp_path / "m", tokens=tokens)
    openers = read_openers()
    assert len(openers) == 20 and all(not o.startswith("#") for o in openers)
    systems = [f"a={tmp_path / 'm'}", f"b={tmp_path / 'm'}:temperature=1.0,num_candidates=2"]
    generate(systems, 1, tmp_path / "blind", openers[:3], shuffle_seed=0)
    sheet = json.loads((tmp_path / "blind" / "sheet.json").read_text())
    assert len(sheet) == 6 and all(set(item) == {"id", "opener", "reply"} for item in sheet)
    key = json.loads((tmp_path / "blind" / "key.json").read_text())
    assert sorted(v["system"] for v in key.values()) == ["a"] * 3 + ["b"] * 3
    marks = {str(item["id"]): {"on_topic": 1, "fluent": item["id"] % 2} for item in sheet}
    (tmp_path / "j.json").write_text(json.dumps(marks))
    table = score(tmp_path / "blind", [tmp_path / "j.json"])
    assert table["a"]["on_topic_j1"] == table["b"]["on_topic_j1"] == 3
    fluent = sum(item["id"] % 2 for item in sheet)
    assert table["a"]["fluent_j1"] + table["b"]["fluent_j1"] == fluent
    del marks[str(sheet[0]["id"])]
    (tmp_path / "j.json").write_text(json.dumps(marks))
    with pytest.raises(ValueError, match="no marks for items"):
        score(tmp_path / "blind", [tmp_path / "j.json"])
