"""The model card (``README.md``) written into every saved model folder and pushed to the Hub:
what it says (:class:`ModelCardInfo`) and its Markdown (:func:`render_model_card`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelCardInfo", "render_model_card"]


@dataclass
class ModelCardInfo:
    """What the card says; :func:`gpt2chat.training.saving.model_card_info` builds it from a
    :class:`gpt2chat.DialogueTrainer`'s state.

    Args:
        model_name: the card's title (the Hub repo name or the output folder's name).
        repo_id: where the model is loaded from in the usage snippets (a Hub id or a path).
        base_model: the model fine-tuned (a Hub id or a path), ``None`` for a from-scratch run.
        datasets: names of the dialogue datasets trained on.
        training: training settings, ``{name: value}``.
        metrics: final evaluation metrics, ``{name: value}``.
        peft: LoRA settings when an adapter was trained, else ``None``.
        speaker_tokens: ``{"bos_token", "sp1_token", "sp2_token"}``.
        use_token_type_ids: whether the model was fed ``token_type_ids`` (then the card sends
            readers to gpt2chat, the one engine that feeds them).
        license, language, tags: card metadata.
    """

    model_name: str
    repo_id: str
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    peft: dict[str, Any] | None = None
    speaker_tokens: dict[str, str] = field(default_factory=dict)
    use_token_type_ids: bool = False
    license: str | None = None
    language: str | list[str] | None = "en"
    tags: list[str] = field(default_factory=list)


DATASET_DESCRIPTIONS = {
    "daily_dialog": "DailyDialog (Li et al., 2017): daily-life conversations",
    "empathetic_dialogues": "EmpatheticDialogues (Rashkin et al., 2019): empathetic conversations",
    "persona_chat": "Persona-Chat / ConvAI2 (Zhang et al., 2018): persona-grounded chit-chat",
    "blended_skill_talk": "BlendedSkillTalk (Smith et al., 2020): persona, empathy and knowledge",
    "chitchat": "chitchat-dataset: casual conversations",
    "jsonl": "custom dialogues from JSON-lines files",
}


def _yaml_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _front_matter(info: ModelCardInfo) -> str:
    lines = ["---", "library_name: " + ("peft" if info.peft else "transformers")]
    if info.base_model:
        lines.append(f"base_model: {_yaml_value(info.base_model)}")
    if info.license:
        lines.append(f"license: {_yaml_value(info.license)}")
    if info.language:
        langs = [info.language] if isinstance(info.language, str) else list(info.language)
        lines.append("language:")
        lines += [f"- {_yaml_value(lang)}" for lang in langs]
    tags = list(dict.fromkeys(["gpt2chat", "conversational", "text-generation", *info.tags]))
    lines.append("tags:")
    lines += [f"- {_yaml_value(t)}" for t in tags]
    lines.append("pipeline_tag: text-generation")
    lines.append("---")
    return "\n".join(lines)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    out = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    out += [f"| `{k}` | {_format(v)} |" for k, v in rows.items()]
    return "\n".join(out)


def _usage(info: ModelCardInfo) -> str:
    repo = info.repo_id
    chat = f"""```python
from gpt2chat import ChatSession

chat = ChatSession.from_pretrained("{repo}")
print(chat.send("Hi! How was your day?"))
```"""
    text = (
        "## How to use\n\nWith gpt2chat (`pip install gpt2chat`):\n\n"
        + chat
        + f"\n\nor in the terminal: `gpt2chat chat --model_path {repo}`; "
        f"`gpt2chat serve --model {repo}` serves an OpenAI-compatible API and a web page."
    )
    if info.use_token_type_ids:
        return text + (
            "\n\nThis model was trained with `token_type_ids` (the speaker of every position, "
            "the original recipe's option), recorded in `chat_config.json`. gpt2chat feeds them; "
            "transformers' `pipeline`, vLLM and llama.cpp feed `input_ids` only, so the model "
            "chats differently there. To serve it with those engines, train with "
            "`--use_token_type_ids false` (the default)."
        )
    if info.peft:
        return text + (
            "\n\nFor other engines, merge the adapter first (`gpt2chat export`, above): the "
            "merged folder loads like any transformers model."
        )
    window = int(info.training.get("max_turns", 5))
    plain = f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{repo}")
model = AutoModelForCausalLM.from_pretrained("{repo}")
messages = [{{"role": "user", "content": "Hi! How was your day?"}}]
# Trained on windows of {window} utterances: the prompt keeps the last {window - 1} messages.
inputs = tokenizer.apply_chat_template(
    messages[-{window - 1}:], add_generation_prompt=True, return_tensors="pt", return_dict=True
)
# generation_config.json holds the decoding settings and stops at the end of the reply.
output = model.generate(**inputs)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""
    return text + (
        "\n\nWith plain transformers (the chat template is saved with the tokenizer; the "
        "decoding settings and the stop tokens, `<eos>` and the user's speaker token, are in "
        "`generation_config.json`):\n\n" + plain + "\n\nvLLM reads the same files: "
        f"`vllm serve {repo}`. Context guidance and reranking, if set in `chat_config.json`, "
        "are gpt2chat's own and apply only through gpt2chat."
    )


def render_model_card(info: ModelCardInfo) -> str:
    """The card's Markdown, with YAML metadata for the Hub."""
    tokens = info.speaker_tokens
    fmt = (
        f"`{tokens.get('bos_token', '<bos>')} [persona] {tokens.get('sp1_token', '<sp1>')} user "
        f"{tokens.get('sp2_token', '<sp2>')} bot ... {tokens.get('sp2_token', '<sp2>')} reply "
        "<eos>`"
    )
    base = f"[`{info.base_model}`]" if info.base_model else "a randomly initialised model"
    parts = [
        _front_matter(info),
        f"# {info.model_name}",
        f"A chatbot fine-tuned from {base} with "
        "[gpt2chat](https://github.com/gpt2chat/gpt2chat) on multi-turn dialogues. "
        f"Each training example is {fmt}; only the reply and its end-of-sequence token are "
        "supervised.",
    ]
    if info.datasets:
        parts.append(
            "## Training data\n\n"
            + "\n".join(
                f"- `{d}`: {DATASET_DESCRIPTIONS.get(d, 'custom data')}" for d in info.datasets
            )
        )
    if info.training:
        parts.append("## Training settings\n\n" + _table(info.training, ("setting", "value")))
    if info.peft:
        parts.append(
            "## LoRA adapter\n\nThis folder holds a LoRA adapter. `gpt2chat export --model "
            "<this folder> --output_dir merged` writes a plain merged model.\n\n"
            + _table(info.peft, ("setting", "value"))
        )
    if info.metrics:
        parts.append(
            "## Evaluation\n\nPerplexity is token-weighted: exp(total negative log-likelihood of "
            "the reply tokens / their number) over the whole evaluation set.\n\n"
            + _table(info.metrics, ("metric", "value"))
        )
    parts.append(_usage(info))
    return "\n\n".join(parts) + "\n"
