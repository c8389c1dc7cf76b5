"""``gpt2chat.evaluation``: the shipped metric modules (loaded by path, offline) and
``evaluate_model`` on a tiny model with real dialogues."""

from __future__ import annotations

import math

import pytest
import sacrebleu
import torch

from gpt2chat import add_speaker_tokens, evaluate_model, prepare_dataset
from gpt2chat.evaluation import (
    EvalSettings,
    generate_replies,
    load_metric,
    metric_path,
    reply_contexts,
    token_nll,
)

from .training.helpers import (
    daily_dialogues,
    gpt2_tokenizer,
    manual_perplexity,
    tiny_llama,
    tiny_model,
)


def test_f1_uses_parlai_normalisation():
    f1 = load_metric("f1")
    # "The" and "a" are articles, punctuation is dropped, case ignored: {cat, sat} vs {cat, sat, down}
    result = f1.compute(predictions=["The cat, sat!"], references=["a CAT sat down"])
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(0.8)
    assert f1.compute(predictions=["no overlap"], references=["at all"])["f1"] == 0.0
    assert f1.compute(predictions=["", "hi"], references=["hi", ""])["f1"] == 0.0
    # repeated words count once per occurrence (multiset overlap)
    assert f1.compute(predictions=["yes yes yes"], references=["yes"])["f1"] == pytest.approx(0.5)
    # several references: the best one counts
    multi = f1.compute(predictions=["hello there"], references=[["goodbye", "hello there"]])
    assert multi["f1"] == 1.0


def test_bleu_is_sacrebleu_corpus_bleu():
    preds = ["the cat sat on the mat", "hello my friend how are you"]
    refs = ["the cat sat on a mat", "hello friend , how are you today"]
    result = load_metric("bleu").compute(predictions=preds, references=refs)
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert 0 < result["bleu"] < 100


def test_distinct_counts_unique_ngrams_over_the_corpus():
    result = load_metric("distinct").compute(predictions=["I am fine.", "i am good"])
    # unigrams: i am fine . | i am good -> 5 distinct of 7; bigrams: "i am" twice -> 4 of 5
    assert result == {"distinct_1": pytest.approx(5 / 7), "distinct_2": pytest.approx(4 / 5)}
    assert load_metric("distinct").compute(predictions=["", ""]) == {
        "distinct_1": 0.0,
        "distinct_2": 0.0,
    }


def test_metric_modules_are_package_files():
    for name in ("f1", "bleu", "distinct"):
        assert metric_path(name).endswith(f"gpt2chat/metrics/{name}/{name}.py")
    with pytest.raises(ValueError, match="Unknown gpt2chat metric 'rouge'"):
        metric_path("rouge")


def test_batched_generation_matches_one_by_one():
    tokenizer = gpt2_tokenizer()
    for model, types in ((tiny_model(), True), (tiny_llama(len(tokenizer) + 3), False)):
        add_speaker_tokens(tokenizer, model)
        features = prepare_dataset(daily_dialogues("test", n=4), tokenizer, max_len=48)
        contexts = reply_contexts(features, [0, 1, 2, 3, 4])
        assert len({len(c["input_ids"]) for c in contexts}) > 1  # left padding is exercised
        batched = generate_replies(
            model, tokenizer, contexts, use_token_type_ids=types, batch_size=5, max_new_tokens=5
        )
        single = generate_replies(
            model, tokenizer, contexts, use_token_type_ids=types, batch_size=1, max_new_tokens=5
        )
        assert batched == single and all(batched)


def test_evaluate_model_per_dataset_and_overall(tmp_path):
    tokenizer = gpt2_tokenizer()
    model = tiny_model()
    add_speaker_tokens(tokenizer, model)
    data = {"first": daily_dialogues("test", n=3), "second": daily_dialogues("test", n=3, start=3)}
    report = evaluate_model(
        model,
        tokenizer,
        data,
        max_len=48,
        num_samples=2,
        max_new_tokens=4,
        use_cpu=True,
        batch_size=3,
    )
    rows = {r.dataset: r for r in report.rows}
    assert list(rows) == ["first", "second", "all"]
    total_nll = total_tokens = 0.0
    for name in ("first", "second"):
        features = prepare_dataset(data[name], tokenizer, max_len=48)
        ppl, count = manual_perplexity(model, features, use_token_type_ids=True)
        assert rows[name].tokens == count and rows[name].perplexity == pytest.approx(ppl, rel=1e-5)
        total_nll += math.log(ppl) * count
        total_tokens += count
        assert (
            rows[name].samples == 2
            and 0 <= rows[name].f1 <= 1
            and rows[name].distinct_1 is not None
        )
    # overall: token-weighted over both datasets, not the mean of the two perplexities
    assert rows["all"].perplexity == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-5)
    assert rows["all"].samples == 4
    table = report.format_table()
    assert "first" in table and "all" in table and "BLEU" in table
    assert report.to_dict()["settings"]["token_type_ids"] is True


def test_replies_end_where_chat_ends_them():
    """Evaluation scores the replies chat would give: <sp1> ends a reply as <eos> does."""
    from gpt2chat import ChatSession, get_speaker_tokens

    tokenizer = gpt2_tokenizer()
    model = tiny_model()
    add_speaker_tokens(tokenizer, model)
    sp1 = get_speaker_tokens(tokenizer).sp1_token_id
    calls = {"n": 0}

    def third_token_is_sp1(module, args, output):  # one call per new token
        calls["n"] += 1
        if calls["n"] == 3:
            output[..., sp1] = 1e4
        return output

    model.lm_head.register_forward_hook(third_token_is_sp1)
    dialogue = daily_dialogues("test", n=1)
    features = prepare_dataset(dialogue, tokenizer, max_len=48)
    (context,) = reply_contexts(features, [0])
    (reply,) = generate_replies(
        model, tokenizer, [context], use_token_type_ids=True, batch_size=1, max_new_tokens=8
    )
    assert calls["n"] == 3  # generation ended at <sp1>, 5 tokens before max_new_tokens
    calls["n"] = 0
    chat = ChatSession(model, tokenizer, do_sample=False, max_new_tokens=8, prefix_cache=False)
    assert chat.render_prompt(dialogue[0]["utterances"][0])["input_ids"] == context["input_ids"]
    assert chat.send(dialogue[0]["utterances"][0]) == reply
    assert calls["n"] == 3


@pytest.mark.parametrize("recorded", [False, True])
def test_evaluation_follows_what_training_recorded(tmp_path, recorded):
    """A model loaded from a folder is evaluated with the token types its training used (the
    record in chat_config.json), whatever its forward accepts."""
    from transformers import AutoModelForCausalLM

    from gpt2chat import ChatSettings

    tokenizer = gpt2_tokenizer()
    model = tiny_model()
    add_speaker_tokens(tokenizer, model)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ChatSettings(use_token_type_ids=recorded).save_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    data = daily_dialogues("test", n=3)
    report = evaluate_model(loaded, tokenizer, data, max_len=48, num_samples=0, use_cpu=True)
    assert report.to_dict()["settings"]["token_type_ids"] is recorded
    features = prepare_dataset(data, tokenizer, max_len=48)
    ppl, _ = manual_perplexity(loaded, features, use_token_type_ids=recorded)
    assert report.rows[-1].perplexity == pytest.approx(ppl, rel=1e-5)


def test_token_nll_matches_cross_entropy():
    """The per-example NLL that the trainer's evaluation and evaluate_model both sum."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :4] = -100
    labels[2, :] = -100
    sums, counts = token_nll(logits, labels)
    assert counts.tolist() == [3, 6, 0]
    mean = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert float(sums.sum() / counts.sum()) == pytest.approx(float(mean), rel=1e-6)


def test_evaluate_model_takes_settings_and_prepared_features():
    """One EvalSettings instead of keywords; prepared features are scored as they are."""
    tokenizer = gpt2_tokenizer()
    model = tiny_model()
    add_speaker_tokens(tokenizer, model)
    features = prepare_dataset(daily_dialogues("test", n=3), tokenizer, max_len=48)
    settings = EvalSettings(max_len=48, num_samples=0, use_cpu=True, use_token_type_ids=False)
    report = evaluate_model(model, tokenizer, features, settings, batch_size=2)
    ppl, count = manual_perplexity(model, features, use_token_type_ids=False)
    assert report.overall.tokens == count
    assert report.overall.perplexity == pytest.approx(ppl, rel=1e-5)
    assert report.settings["token_type_ids"] is False and report.overall.samples == 0
    with pytest.raises(TypeError):
        evaluate_model(model, tokenizer, features, settings, no_such_setting=1)
    with pytest.raises(ValueError, match="--max_turns must be >= 1"):
        EvalSettings(max_turns=0)
    llama = tiny_llama(len(tokenizer))
    with pytest.raises(ValueError, match="takes no token_type_ids"):
        evaluate_model(llama, tokenizer, features, settings, use_token_type_ids=True)


EVAL_SCRIPT = """
import json, sys
from accelerate import PartialState
from tests.training.helpers import daily_dialogues, gpt2_tokenizer, tiny_model
from gpt2chat import add_speaker_tokens, evaluate_model
tokenizer, model = gpt2_tokenizer(), tiny_model()
add_speaker_tokens(tokenizer, model)
data = {"a": daily_dialogues("test", n=5), "b": daily_dialogues("test", n=3, start=5)}
report = evaluate_model(model, tokenizer, data, max_len=48, num_samples=3, max_new_tokens=4,
                        use_cpu=True, batch_size=2, use_token_type_ids=True)
if PartialState().is_main_process:
    json.dump(report.to_dict(), open(sys.argv[1], "w"))
"""


@pytest.mark.slow
def test_two_processes_evaluate_like_one(tmp_path):
    """torchrun: the examples and the sampled contexts split between 2 processes (gloo), the
    perplexity and the replies gathered: the same report as one process."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from .conftest import REPO

    script = tmp_path / "two_processes.py"  # not evaluate.py: the package of that name
    script.write_text(EVAL_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = {}
    for n in (1, 2):
        out = tmp_path / f"{n}.json"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
             "--master_port", str(port), str(script), str(out)],
            cwd=REPO, timeout=300, capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-6000:]
        results[n] = json.loads(out.read_text())
    assert results[2]["settings"]["processes"] == 2
    for one, two in zip(results[1]["results"], results[2]["results"]):
        assert (one["tokens"], one["samples"]) == (two["tokens"], two["samples"])
        assert two["perplexity"] == pytest.approx(one["perplexity"], rel=1e-9)
    assert results[1]["examples"] == results[2]["examples"]
