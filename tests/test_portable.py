"""Portable checkpoints: a folder trained with the CLI's defaults chats the same through a
stranger's code (transformers only: ``apply_chat_template`` + ``generate``) as through
gpt2chat's ``ChatSession``; the model card's code blocks run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt2chat import ChatSession
from gpt2chat.cli import main

from .training.helpers import daily_dialog_dir, gpt2_tokenizer, tiny_llama, tiny_model

pytestmark = pytest.mark.slow

#: Multi-turn conversations (user turns; the model's replies come from ChatSession), one with a
#: persona, one longer than the trained window of 5 utterances (the prompt keeps 4 messages).
CONVERSATIONS = [
    {"user": ["Hello, how are you today?"]},
    {"user": ["Do you like football?", "Who is your favourite player?"]},
    {"user": ["I failed my exam.", "What should I do now?"], "persona": "I am a kind teacher."},
    {"user": ["Can I help you?", "Where is the bank?", "Thanks a lot!"]},
    {"user": ["Let's go to the cinema tonight.", "At eight?", "Great, see you there."]},
]
MAX_NEW_TOKENS = 12
#: A tiny model trained for seconds ends most replies at once; a floor on the reply's length (the
#: standard ``min_new_tokens``, given to both sides) makes the greedy replies differ per prompt.
MIN_NEW_TOKENS = 4

#: The stranger's code: no gpt2chat anywhere; what a model card reader or a serving engine does.
STRANGER = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, window, max_new, min_new = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:5])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    replies = []
    for messages in json.load(sys.stdin):
        system = [m for m in messages if m["role"] == "system"]
        body = [m for m in messages if m["role"] != "system"]
        inputs = tokenizer.apply_chat_template(
            system + body[-(window - 1):], add_generation_prompt=True,
            return_tensors="pt", return_dict=True,
        )
        output = model.generate(
            **inputs, do_sample=False, max_new_tokens=max_new, min_new_tokens=min_new
        )
        new = output[0, inputs["input_ids"].shape[1]:]
        replies.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert not any(name.startswith("gpt2chat") for name in sys.modules), "gpt2chat was imported"
    print(json.dumps(replies))
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _train(tmp: Path, model) -> Path:
    """``gpt2chat train`` with its defaults (no token-type flag), enough steps that the weights
    are not trivial."""
    base = tmp / "base"
    model.save_pretrained(str(base))
    gpt2_tokenizer().save_pretrained(str(base))
    out = tmp / "out"
    code = main(
        ["train", "--model_name_or_path", str(base), "--datasets", "daily_dialog",
         "--data_dir", str(daily_dialog_dir()), "--train_split", "train", "--eval_split", "test",
         "--max_train_samples", "80", "--max_eval_samples", "8", "--max_steps", "10",
         "--batch_size", "8", "--ckpt_dir", str(out), "--use_cpu",
         "--report_to", "none", "--disable_tqdm", "true", "--seed", "0"]
    )  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def checkpoint(request, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp(f"portable-{request.param}")
    if request.param == "gpt2":
        model = tiny_model()
    else:
        model = tiny_llama(vocab_size=len(gpt2_tokenizer()))
    return _train(tmp, model)


def _chat_session_replies(folder: Path, **kwargs) -> list[list[dict[str, str]]]:
    """Each conversation played through ChatSession (greedy); returns, for every reply, the
    messages it answered and the reply itself, as ``messages + [assistant]``."""
    turns = []
    for conv in CONVERSATIONS:
        chat = ChatSession.from_pretrained(
            folder,
            device="cpu",
            do_sample=False,
            max_new_tokens=MAX_NEW_TOKENS,
            min_new_tokens=MIN_NEW_TOKENS,
            **kwargs,
        )
        chat.persona = conv.get("persona")
        for text in conv["user"]:
            prompt = chat.messages_for(text)
            reply = chat.send(text)
            turns.append([*prompt, {"role": "assistant", "content": reply}])
    return turns


def test_the_cli_default_checkpoint_says_what_it_needs(checkpoint):
    chat_config = json.loads((checkpoint / "chat_config.json").read_text())
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    assert chat_config["use_token_type_ids"] is False  # the default: input_ids only
    assert chat_config["max_turns"] == 5
    stops = generation["eos_token_id"]
    saved = ChatSession.from_pretrained(checkpoint, device="cpu")
    assert stops == list(saved.tokens.reply_stop_ids)  # <eos> and <sp1>
    assert generation["do_sample"] is True and generation["top_p"] == 0.8
    assert generation["max_new_tokens"] == 64 and generation["top_k"] == 0
    assert saved.use_token_type_ids is False


def test_a_strangers_transformers_code_gives_chat_sessions_greedy_replies(checkpoint):
    turns = _chat_session_replies(checkpoint)
    replies = [t[-1]["content"] for t in turns]
    assert len(set(replies)) >= 3, f"the trained model is too trivial to compare: {replies}"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            STRANGER,
            str(checkpoint),
            "5",
            str(MAX_NEW_TOKENS),
            str(MIN_NEW_TOKENS),
        ],
        input=json.dumps([t[:-1] for t in turns]),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == replies


def test_the_model_cards_code_blocks_run(checkpoint, tmp_path):
    card = (checkpoint / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 2, card  # gpt2chat's ChatSession, then plain transformers
    assert "apply_chat_template" in blocks[1] and "gpt2chat" not in blocks[1]
    for block in blocks:
        run = subprocess.run(
            [sys.executable, "-c", block],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=tmp_path,
            timeout=300,
        )
        assert run.returncode == 0, f"{block}\n{run.stderr[-3000:]}"
        assert run.stdout.endswith("\n")  # the reply was printed
