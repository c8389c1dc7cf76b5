"""Smoke tests of ``benchmarks.prepare`` and the seed baseline: the harness, not the timings."""

from __future__ import annotations


def test_clean_tokens_glues_punctuation_and_suffixes():
    from benchmarks.seed_baseline import SPACE, clean_tokens

    tokens = ["Hi", SPACE + ",", SPACE + "it", SPACE + "'", "s", SPACE + "me", SPACE + "."]
    assert clean_tokens(tokens) == ["Hi", ",", SPACE + "it", "'", "s", SPACE + "me", "."]
    # a token after an end mark gets the space marker back
    assert clean_tokens(["Yes", SPACE + ".", "No"]) == ["Yes", ".", SPACE + "No"]


def test_seed_examples_follow_the_format(chat_tokenizer):
    from benchmarks.seed_baseline import SeedTokenIds, build_examples, tokenize_dialogues
    from gpt2chat import get_speaker_tokens

    t = get_speaker_tokens(chat_tokenizer)
    ids = SeedTokenIds.from_tokenizer(chat_tokenizer)
    dialogues = [["Hi .", "Hello !", "How are you ?", "Fine ."], ["A", "B", "C"]]
    ex = build_examples(tokenize_dialogues(chat_tokenizer, dialogues), ids, max_turns=5)
    assert len(ex) == 3  # one per second-speaker turn
    first = ex.input_ids[0]
    assert first[0] == t.bos_token_id and first[1] == t.sp1_token_id
    assert first[-1] == t.eos_token_id
    assert len(ex.token_type_ids[0]) == len(first) == len(ex.labels[0])
    assert ex.labels[0][-1] == t.eos_token_id and ex.labels[0][0] == -100
    # too long for max_len: the reply is skipped
    assert len(build_examples([[[1] * 5, [2] * 5]], ids, max_len=8)) == 0


def test_interleave_rotates_and_medians():
    from benchmarks._common import format_table, interleave, median

    order = []
    res = interleave(
        {n: (lambda r, n=n: order.append(n) or {"seconds": float(r)}) for n in "abc"}, 3
    )
    assert order == list("abcbcacab")
    assert res["a"].values() == [0.0, 1.0, 2.0] and res["b"].median() == 1.0
    assert median([3, 1, 2]) == 2
    table = format_table(["case", "s"], [["x", 1.5], ["y", 12345.0]])
    assert table.splitlines()[0].startswith("| case |") and "12,345" in table


def test_quick_run_prints_tables_and_ratio_line(standin_shared, tmp_path, capsys):
    from benchmarks import prepare

    assert (
        prepare.main(["--quick", "--in-process", "--limit", "40", "--workdir", str(tmp_path)]) == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("ratio (seed time / our time, medians): x1 first ")
    assert "x2 first" in out[-1]
    rows = [line for line in out if line.startswith("| x")]
    assert len(rows) == 2 * 4 + 2  # 4 cases per scale, then one ratio row per scale
    assert any("repeated (cache hit)" in r for r in rows)
    assert out[1].startswith("machine: ")
