"""``gpt2chat demo``: the real SmolLM2 fine-tune in a fast mode, through a pipe, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib.util import find_spec
from types import SimpleNamespace

import pytest

from gpt2chat.demo import (
    BASES,
    DEMO_SCRIPT,
    DONE_FILE,
    MMI_CONTEXTS,
    DemoArguments,
    run_demo,
)
from gpt2chat.demo.training import _cut_short_note
from gpt2chat.training import TimeBudgetCallback

#: The packaged bases and their model types; each runs where its package is installed (`make venv`).
BASE_CASES = [
    pytest.param(
        name,
        model_type,
        marks=pytest.mark.skipif(
            find_spec(BASES[name].module) is None or find_spec("gguf") is None,
            reason=f"--base {name} needs gguf and `{BASES[name].pip_install}` (`make venv`)",
        ),
    )
    for name, model_type in (("gemma3-270m", "gemma3_text"), ("smollm2", "llama"))
]
FORMAT_TOKENS = ("<sp1>", "<sp2>", "<bos>", "<|im_end|>", "<|im_start|>", "<start_of_turn>",
                 "<end_of_turn>")  # fmt: skip

FAST = [
    "--max_steps", "2",
    "--per_device_train_batch_size", "2",
    "--max_train_samples", "16",
    "--eval_samples", "4",
    "--max_new_tokens", "12",
]  # fmt: skip


def _demo(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpt2chat", "demo", *args],
        input="",  # stdin is a pipe, not a terminal: the scripted conversation plays
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize("base, model_type", BASE_CASES)
def test_demo_fast_mode_through_a_pipe(tmp_path, base, model_type):
    out_dir = tmp_path / "demo-model"
    # A time cap too small for the 3 steps: training stops after the first and the demo says so.
    cut = ["--max_steps", "3", "--time_budget", "0.001"]
    first = _demo(["--base", base, "--output_dir", str(out_dir), *FAST, *cut], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    text = first.stdout
    assert "Validation perplexity before fine-tuning" in text
    assert "train_runtime" not in text + first.stderr  # no log dicts printed by the trainer
    assert "generation flags are not valid" not in first.stderr  # no top_k warning at chat
    assert "validation perplexity" in text and "->" in text
    for line in DEMO_SCRIPT:
        assert f"You: {line}\n" in text
    bot_lines = [ln for ln in text.splitlines() if ln.startswith("Bot:")]
    assert len(bot_lines) == len(DEMO_SCRIPT)
    for ln in bot_lines:  # no format tokens leak into the replies
        assert not any(t in ln for t in FORMAT_TOKENS)
    assert f"gpt2chat chat --model_path {out_dir}" in text
    assert f"gpt2chat serve --model {out_dir}" in text
    assert f"settings saved in {out_dir}/" in text  # where the next commands' decoding lives
    assert "gpt2chat train" in text
    from gpt2chat import ChatSettings

    # The chat settings the transcript was made with are saved with the model.
    assert ("Gemma Terms of Use" in text) == (base == "gemma3-270m")  # the licence, said
    fast_args = DemoArguments(base=base, output_dir=str(out_dir), max_new_tokens=12)
    assert ChatSettings.from_pretrained(out_dir) == fast_args.chat_settings
    metrics = json.loads((out_dir / DONE_FILE).read_text())
    assert metrics["steps"] == 1 and metrics["eval_examples"] == 4
    assert metrics["stopped_by_time_budget"] is True
    assert "NOTE: training was cut short by the 0 s time cap after 1 of 3 steps" in text
    assert "under-trained" in text and "--retrain" in text
    assert metrics["perplexity_before"] > 1 and metrics["perplexity_after"] > 1

    # The saved folder is a plain Hugging Face folder: transformers alone loads it.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt2chat import render_messages

    model = AutoModelForCausalLM.from_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert model.config.model_type == model_type
    assert not (out_dir / "adapter_config.json").exists()  # a LoRA recipe is merged on save
    card = (out_dir / "README.md").read_text()
    assert "library_name: transformers" in card and "This folder holds a LoRA adapter" not in card
    hub_id, licence = {"gemma3-270m": ("google/gemma-3-270m", "gemma")}.get(
        base, ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    )
    assert f'base_model: "{hub_id}"' in card and f'license: "{licence}"' in card
    assert tokenizer.convert_tokens_to_ids("<sp2>") < model.get_input_embeddings().weight.shape[0]
    messages = [{"role": "user", "content": "Hi, how are you today?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == render_messages(messages, tokenizer)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert torch.isfinite(logits).all()

    # A second run reuses the saved model instead of training again.
    second = _demo(["--output_dir", str(out_dir), "--chat", "none"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Reusing the demo model" in second.stdout
    assert "cut short by the 0 s time cap after 1 of 3 steps" in second.stdout  # said again
    assert "Fine-tuning" not in second.stdout

    # The chat's sampling seed is fresh each run and printed; --chat_seed replays the replies.
    seed = int(text.split("(sampling seed ", 1)[1].split(";", 1)[0])
    replay_args = ["--output_dir", str(out_dir), "--chat_seed", str(seed), "--max_new_tokens", "12"]
    replay = _demo(replay_args, tmp_path)
    assert replay.returncode == 0, replay.stderr[-3000:]
    replayed = [ln for ln in replay.stdout.splitlines() if ln.startswith("Bot:")]
    assert replayed == bot_lines


def test_demo_refuses_a_foreign_output_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--retrain"):
        run_demo(DemoArguments(output_dir=str(tmp_path)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_steps": 0}, "--max_steps"),
        ({"time_budget": -1}, "--time_budget"),
        ({"learning_rate": 2.0}, "--learning_rate"),
        ({"min_reply_tokens": 10, "max_reply_tokens": 5}, "--min_reply_tokens"),
        ({"skip_replies": "(unclosed"}, "--skip_replies"),
        ({"data_dir": "/no/such/folder"}, "--data_dir"),
        ({"max_turns": 1}, "--max_turns"),
        ({"guidance_scale": -0.5}, "--guidance_scale must be a number >= 0"),
        ({"num_candidates": 0}, "--num_candidates must be an integer between 1"),
        ({"mmi_weight": -1.0}, "--mmi_weight must be a number >= 0"),
        ({"unconditional_fraction": 1.0}, "--unconditional_fraction must be in"),
    ],
)
def test_demo_arguments_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoArguments(**kwargs)


def test_reply_filter_counts_what_it_skips(chat_tokenizer, caplog):
    import datasets

    from gpt2chat import prepare_dataset
    from gpt2chat.demo.data import _filter_replies

    dialogues = datasets.Dataset.from_dict(
        {
            "utterances": [
                ["Hi there, how are you?", "hahaha good", "Nice to hear that, really nice."],
                ["I failed my exam.", "Oh no, I am so sorry to hear that.", "ok"],
            ],
            "source": ["t", "t"],
        }
    )
    features = prepare_dataset(dialogues, chat_tokenizer, reply_speakers="both")
    assert len(features) == 4
    with caplog.at_level("INFO", logger="gpt2chat.demo"):
        kept, skipped = _filter_replies(features, chat_tokenizer, 3, 20, r"^\W*ha(ha)+")
    assert _replies(kept, chat_tokenizer) == [
        "Nice to hear that, really nice.",
        "Oh no, I am so sorry to hear that.",
    ]
    assert skipped == {"reply length": 1, "--skip_replies": 1, "not reactive": 0}
    assert "Skipped 2 of 4 training examples: 1 reply length, 1 --skip_replies." in caplog.text


def _replies(features, tokenizer) -> list[str]:
    return [
        tokenizer.decode([t for t in ex["labels"] if t != -100], skip_special_tokens=True).strip()
        for ex in features
    ]


def test_reactive_filter_keeps_reactions_questions_and_answers(chat_tokenizer, caplog):
    import datasets

    from gpt2chat import prepare_dataset
    from gpt2chat.demo.data import _filter_replies

    dialogues = datasets.Dataset.from_dict(
        {
            "utterances": [
                # a statement, then replies that react, ask, or just talk about themselves
                ["I failed my exam today.", "Oh no, that is awful."],
                ["I failed my exam today.", "Which exam was it?"],
                ["I failed my exam today.", "I went to the beach with my family."],
                ["I got a new puppy!", "Congrats, what breed is it"],
                ["I got a new puppy!", "Yeah I like hiking a lot."],
                ["I got a new puppy!", "What about you?"],
                # a question: any answer is a reply to it
                ["What do you do on weekends?", "I go hiking with my family."],
            ],
            "source": ["t"] * 7,
        }
    )
    features = prepare_dataset(dialogues, chat_tokenizer, reply_speakers="both")
    with caplog.at_level("INFO", logger="gpt2chat.demo"):
        kept, skipped = _filter_replies(features, chat_tokenizer, 1, 40, None, reactive=True)
    assert _replies(kept, chat_tokenizer) == [
        "Oh no, that is awful.",
        "Which exam was it?",
        "Congrats, what breed is it",
        "I go hiking with my family.",
    ]
    assert skipped == {"reply length": 0, "--skip_replies": 0, "not reactive": 3}
    assert "3 not reactive" in caplog.text
    kept, skipped = _filter_replies(features, chat_tokenizer, 1, 40, None, reactive=False)
    assert len(kept) == 7 and sum(skipped.values()) == 0


def test_some_examples_leave_the_conversation_out(chat_tokenizer):
    """The unconditional examples that context guidance contrasts with: <bos> <sp2> reply <eos>."""
    import datasets

    from gpt2chat import get_speaker_tokens, prepare_dataset
    from gpt2chat.demo.data import _drop_conversation

    dialogues = datasets.Dataset.from_dict(
        {"utterances": [["Hi there", "Hello, how are you?", "Fine, thanks."]], "source": ["t"]}
    )
    features = prepare_dataset(dialogues, chat_tokenizer, reply_speakers="both")
    tokens = get_speaker_tokens(chat_tokenizer)
    dropped = features.map(
        _drop_conversation, with_indices=True, fn_kwargs={"count": 1, "tokens": tokens}
    )
    first, second = dropped[0], dropped[1]
    assert chat_tokenizer.decode(first["input_ids"]) == "<bos><sp2>Hello, how are you?<|endoftext|>"
    assert first["token_type_ids"] == [tokens.sp2_token_id] * len(first["input_ids"])
    assert first["labels"][:2] == [-100, -100]
    assert first["labels"][2:] == [t for t in features[0]["labels"] if t != -100]
    assert first["length"] == len(first["input_ids"])
    assert second == features[1]  # beyond `count`: unchanged


def _state(step: int, max_steps: int = 10):
    return SimpleNamespace(global_step=step, max_steps=max_steps)


def test_the_demo_trains_all_its_steps_unless_a_generous_cap_cuts_it():
    args = DemoArguments()
    assert args.base == "gemma3-270m" and args.time_budget == 900  # 15 minutes: a safety cap
    assert (args.max_steps, args.learning_rate, args.use_peft) == (52, 3e-4, True)  # its recipe
    smollm2 = DemoArguments(base="smollm2")
    assert (smollm2.max_steps, smollm2.learning_rate, smollm2.use_peft) == (100, 1e-4, False)
    local = DemoArguments(base="some/folder", max_steps=7, use_peft=True)  # a flag wins
    assert (local.max_steps, local.learning_rate, local.use_peft) == (7, 1e-4, True)
    note = _cut_short_note(21, 100, 300)
    assert "cut short by the 300 s time cap after 21 of 100 steps" in note
    assert "under-trained" in note and "--time_budget 0" in note


def test_time_budget_callback_stops_before_the_budget_ends():
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    cb = TimeBudgetCallback(0.2)
    cb.on_train_begin(None, _state(0), control)
    time.sleep(0.05)
    cb.on_step_end(None, _state(1), control)  # 0.05 s + 0.05 s per step < 0.2 s: go on
    assert not control.should_training_stop
    time.sleep(0.1)
    cb.on_step_end(None, _state(2), control)  # 0.15 s + 0.075 s > 0.2 s: stop now
    assert control.should_training_stop and cb.stopped_at == 2

    unlimited = TimeBudgetCallback(0)
    control = SimpleNamespace(should_training_stop=False, should_save=False)
    unlimited.on_train_begin(None, _state(0), control)
    unlimited.on_step_end(None, _state(5), control)
    assert not control.should_training_stop
    with pytest.raises(ValueError, match="seconds"):
        TimeBudgetCallback(-1)


def test_the_next_commands_parse_with_the_real_cli():
    """What the demo prints to try next is accepted by the CLIs and, flag-free, leaves the decoding
    to the chat_config.json the demo saves: the demo's chat settings."""
    import shlex

    from gpt2chat.cli import parse
    from gpt2chat.cli.chat import ChatArguments
    from gpt2chat.cli.serve import ServeArguments
    from gpt2chat.demo import next_commands

    args = DemoArguments()
    lines = {
        line.split("gpt2chat ", 1)[1].split()[0]: shlex.split(line.split("gpt2chat ", 1)[1])
        for line in next_commands(args).splitlines()
        if "gpt2chat " in line
    }
    (chat,) = parse((ChatArguments,), lines["chat"][1:], "gpt2chat chat", "")
    assert chat.model_path == args.output_dir and chat.chat_config
    assert args.chat_settings.under(chat.generation_options()) == (
        args.chat_settings.session_kwargs()
    )
    (serve,) = parse((ServeArguments,), lines["serve"][1:], "gpt2chat serve", "")
    resolved = serve.settings().with_chat_settings(args.chat_settings)
    assert (resolved.num_candidates, resolved.mmi_weight) == (args.num_candidates, args.mmi_weight)
    assert (resolved.temperature, resolved.top_p) == (args.temperature, args.top_p)
    assert (resolved.max_new_tokens, resolved.max_turns) == (args.max_new_tokens, args.max_turns)
    assert resolved.guidance_scale == args.guidance_scale
    assert resolved.repetition_penalty == args.repetition_penalty
    assert resolved.mmi_contexts == list(MMI_CONTEXTS)


def test_the_loss_goes_on_the_progress_bar_not_into_printed_dicts():
    import io

    from tqdm.auto import tqdm
    from transformers import TrainerState

    from gpt2chat.training.callbacks import LossOnProgressBar

    stream = io.StringIO()
    callback = LossOnProgressBar()
    callback.training_bar = tqdm(total=10, file=stream)
    state = TrainerState()
    callback.on_log(None, state, None, logs={"loss": 3.68214, "grad_norm": 7.8, "epoch": 0.1})
    callback.on_log(None, state, None, logs={"train_runtime": 138.7, "train_loss": 3.8})
    callback.training_bar.refresh()
    text = stream.getvalue()
    assert "loss=3.682" in text
    assert "grad_norm" not in text and "train_runtime" not in text and "{" not in text
