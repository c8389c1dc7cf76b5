"""Smoke tests of ``benchmarks.memory``: the data replication and the harness, not the numbers."""

from __future__ import annotations

import csv
import json


def test_replicated_data_keeps_conversations_apart(standin_shared, tmp_path):
    from benchmarks.memory import make_data_root

    root = make_data_root(tmp_path, scale=3, limit=4)
    dd = (root / "dailydialog" / "train" / "dialogues_train.txt").read_text().splitlines()
    assert len(dd) == 12 and dd[:4] == dd[4:8]
    with open(root / "empathetic_dialogues" / "valid.csv", newline="", encoding="utf-8") as f:
        ids = [row[0] for row in list(csv.reader(f))[1:]]
    assert len(set(ids)) == 3 * 4  # each copy's conversations get their own ids
    chat = json.loads((root / "chitchat" / "dataset.json").read_text())
    # The first 4 conversations of each split, 3 times
    assert len(chat) == 36 and len({json.dumps(v, sort_keys=True) for v in chat.values()}) == 12
    pc = (root / "persona_chat" / "valid_self_original_no_cands.txt").read_text()
    assert pc.count("\n1 your persona:") + pc.startswith("1 your persona:") == 12


def test_quick_run_prints_table_and_ratio_line(standin_shared, tmp_path, capsys):
    from benchmarks import memory

    args = ["--quick", "--in-process", "--limit", "5", "--workdir", str(tmp_path)]
    assert memory.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("ratio (seed peak RSS / our peak RSS, first run, medians): x1 ")
    assert "peak growth x1 -> x2" in out[-1]
    rows = [line.split("|")[1:3] for line in out if line.startswith("| x")]
    cases = [case.strip() for _, case in rows]
    assert cases == ["floor", "seed", "ours first", "ours repeated"] * 2
