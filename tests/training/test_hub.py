"""The model card and the Hub upload, without network (the Hub client is replaced)."""

from __future__ import annotations

from types import SimpleNamespace

from gpt2chat import DialogueTrainer
from gpt2chat.training import DataArguments, ModelCardInfo, render_model_card

from .helpers import daily_dialogues, gpt2_tokenizer, tiny_model, training_args


class FakeHub:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {
            p.name: p.read_text() for p in __import__("pathlib").Path(folder_path).glob("*.md")
        }
        self.calls.append(
            ("upload_folder", repo_id, {"folder_path": folder_path, "cards": files, **kwargs})
        )
        return "https://huggingface.co/" + repo_id


def test_push_to_hub_uploads_the_model_with_our_card(tmp_path, monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: hub)
    trainer = DialogueTrainer(
        tiny_model(),
        training_args(
            tmp_path / "out",
            max_steps=1,
            push_to_hub=True,
            hub_model_id="someone/tiny-chat",
            hub_strategy="end",
            eval_strategy="steps",
            eval_steps=1,
        ),
        train_dataset=daily_dialogues("validation", n=4),
        eval_dataset=daily_dialogues("validation", n=2, start=4),
        processing_class=gpt2_tokenizer(),
        data_args=DataArguments(datasets="daily_dialog", max_len=48),
    )
    assert hub.calls[0][:2] == ("create_repo", "someone/tiny-chat")  # at init, like Trainer
    trainer.train()
    trainer.push_to_hub(commit_message="End of training")
    name, repo, kwargs = hub.calls[-1]
    assert (name, repo) == ("upload_folder", "someone/tiny-chat")
    assert kwargs["folder_path"] == str(tmp_path / "out")
    assert kwargs["commit_message"] == "End of training"
    card = kwargs["cards"]["README.md"]
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "# tiny-chat" in card
    assert "`daily_dialog`" in card  # the datasets
    assert "| `learning_rate` | 0.003 |" in card  # the training settings
    assert "`eval_perplexity`" in card and "`train_loss`" in card  # the final metrics
    assert 'ChatSession.from_pretrained("someone/tiny-chat")' in card  # usage snippets
    assert 'AutoModelForCausalLM.from_pretrained("someone/tiny-chat")' in card


def test_card_renders_every_section():
    info = ModelCardInfo(
        model_name="my-bot",
        repo_id="me/my-bot",
        base_model="gpt2",
        datasets=["daily_dialog", "persona_chat"],
        training={"learning_rate": 2e-5, "num_train_epochs": 10},
        metrics={"eval_loss": 2.5, "eval_perplexity": 12.18},
        peft={"lora_r": 16},
        speaker_tokens={"bos_token": "<s>", "sp1_token": "<u>", "sp2_token": "<b>"},
        use_token_type_ids=True,
        license="mit",
    )
    card = render_model_card(info)
    assert (
        "library_name: peft" in card and 'base_model: "gpt2"' in card and 'license: "mit"' in card
    )
    assert "[`gpt2`]" in card and "Persona-Chat" in card and "| `eval_perplexity` | 12.18 |" in card
    assert "gpt2chat export" in card and "`<s> [persona] <u> user <b> bot" in card
    # Trained with token types: no plain-transformers snippet (other engines cannot feed them);
    # the card says so and sends readers to gpt2chat.
    assert "trained with `token_type_ids`" in card and "AutoModelForCausalLM" not in card
    plain = render_model_card(
        ModelCardInfo(model_name="b", repo_id="me/b", training={"max_turns": 3})
    )
    assert "AutoModelForCausalLM" in plain and "messages[-2:]" in plain  # the trained window
    assert "vllm serve me/b" in plain
    adapter = render_model_card(ModelCardInfo(model_name="a", repo_id="me/a", peft={"lora_r": 4}))
    assert "merge the adapter first" in adapter and "AutoModelForCausalLM" not in adapter
