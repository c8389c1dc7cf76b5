"""Smoke test of ``python -m benchmarks.chat``: the harness is correct (not the timings)."""

from __future__ import annotations

import torch


def test_seed_loop_with_tiny_top_p_is_greedy_generate():
    from benchmarks.chat import seed_sampling_loop
    from gpt2chat import ChatSession, render_messages

    from ..chat.conftest import fresh_chat_tokenizer, tiny_chat_gpt2

    tokenizer, model = fresh_chat_tokenizer(), tiny_chat_gpt2()
    chat = ChatSession(model, tokenizer, do_sample=False, max_new_tokens=6, min_new_tokens=6)
    chat.send("Hello there, how are you?")
    rendered = render_messages([chat.history[0]], tokenizer)
    ids = seed_sampling_loop(
        model,
        torch.tensor([rendered["input_ids"]]),
        torch.tensor([rendered["token_type_ids"]]),
        sp2_id=chat.tokens.sp2_token_id,
        top_p=1e-9,  # keeps only the most likely token
        n_new=6,
    )
    assert tokenizer.decode(ids, skip_special_tokens=True).strip() == chat.history[1]["content"]


def test_quick_run_prints_the_table_and_the_ratio_last(capsys):
    from benchmarks.chat import main

    from ..fixtures import tokenizer_dir

    result = main(["--quick", "--threads", "1", "--tokenizer", str(tokenizer_dir())])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio: ChatSession ")
    text = "\n".join(lines)
    assert "seed loop (no KV cache" in text and "time to first token" in text
    assert result["baseline"]["prompt_tokens"] > 40
    assert result["baseline"]["tok_s"] > 0 and result["ratio"] > 0
    assert result["settings"][0]["name"].endswith("(default)")
    assert all(row["tok_s"] > 0 and row["decode_tok_s"] > 0 for row in result["settings"])
    assert set(result["ttft"]["prefix cache"]) == {1, 5, 10}
    prompts = result["ttft"]["prompt tokens"]
    assert prompts[1] < prompts[5] < prompts[10]  # max_turns=20: the window never slid
    assert result["bandwidth"] > 1e8
