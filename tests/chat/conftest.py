"""Fixtures of the chat tests: a tiny random GPT-2 with the suite's GPT-2-format tokenizer (speaker
tokens added), a tiny Llama-style model without token types, and a tiny GPT-2 trained for a few
steps on the suite's DailyDialog-format validation split."""

from __future__ import annotations

import pytest
import torch

from ..conftest import tiny_gpt2
from ..fixtures import corpus_dir, load_tokenizer


def base_tokenizer():
    """The suite's GPT-2-format tokenizer (see tests/fixtures.py), not extended."""
    return load_tokenizer()


def fresh_chat_tokenizer():
    from gpt2chat import add_speaker_tokens

    tokenizer = base_tokenizer()
    add_speaker_tokens(tokenizer)
    return tokenizer


def tiny_chat_gpt2(n_positions: int = 256, seed: int = 0):
    """A tiny random GPT-2 extended by ``add_speaker_tokens`` (new rows = mean embedding), as
    fine-tuning starts; its ids match :func:`fresh_chat_tokenizer`'s."""
    from gpt2chat import add_speaker_tokens

    model = tiny_gpt2(n_positions=n_positions, seed=seed)
    add_speaker_tokens(base_tokenizer(), model)
    return model.eval()


def tiny_llama(tokenizer, seed: int = 0):
    """A tiny random Llama (no token types), with the speaker-token ids on its config."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from gpt2chat import get_speaker_tokens

    tokens = get_speaker_tokens(tokenizer)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokens.bos_token_id,
        eos_token_id=tokens.eos_token_id,
        pad_token_id=tokens.pad_token_id,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second intra-op thread, and on a shared machine an
    OpenMP thread waiting for a busy core makes every small op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_chat_folder(folder):
    """A tiny GPT-2 with speaker tokens and its tokenizer saved as a model folder."""
    tiny_chat_gpt2().save_pretrained(folder)
    fresh_chat_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny chat model folder (no chat_config.json)."""
    return save_chat_folder(tmp_path_factory.mktemp("chat-model"))


@pytest.fixture(scope="module")
def tok():
    """The suite's tokenizer with the speaker tokens (shared by a test module: do not modify)."""
    return fresh_chat_tokenizer()


@pytest.fixture(scope="module")
def gpt2(tok):
    return tiny_chat_gpt2()


@pytest.fixture
def make_session(gpt2, tok):
    """``make_session(**options)``: a greedy ChatSession on the tiny GPT-2 (8 new tokens)."""
    from gpt2chat import ChatSession

    def make(model=None, **options):
        options = {"do_sample": False, "max_new_tokens": 8, **options}
        return ChatSession(model if model is not None else gpt2, tok, **options)

    return make


def _train_steps(model, features, pad_token_id: int, steps: int, batch_size: int, lr: float):
    """A plain torch loop. The loss is computed on the supervised (reply) positions only, with the
    softmax restricted to the token ids that occur as labels (a few thousand of GPT-2's 50k):
    the same optimum for this data at a fraction of the cost; other tokens keep their (small)
    random logits."""
    from gpt2chat import DialogueCollator

    collate = DialogueCollator(pad_token_id=pad_token_id)
    rows = features.select_columns(["input_ids", "token_type_ids", "labels"]).to_list()
    vocab = torch.tensor(sorted({t for r in rows for t in r["labels"] if t >= 0}))
    index = torch.full((model.get_input_embeddings().weight.shape[0],), -1, dtype=torch.long)
    index[vocab] = torch.arange(len(vocab))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        picks = torch.randint(0, len(rows), (batch_size,), generator=generator).tolist()
        batch = collate([rows[i] for i in picks])
        hidden = model.transformer(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"]
        ).last_hidden_state[:, :-1]
        labels = batch["labels"][:, 1:]
        supervised = labels != -100
        logits = hidden[supervised] @ model.lm_head.weight[vocab].T
        loss = torch.nn.functional.cross_entropy(logits, index[labels[supervised]])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def train_tiny_chat_model(data_dir, steps: int = 120, batch_size: int = 8, lr: float = 5e-3):
    """``(model, tokenizer, dialogues, losses)``: a tiny GPT-2 trained ``steps`` steps on DailyDialog
    validation features (2-utterance examples of <= 40 tokens)."""
    from gpt2chat import load_dialogues, prepare_dataset

    tokenizer = fresh_chat_tokenizer()
    dialogues = load_dialogues("daily_dialog", "validation", data_dir=str(data_dir))
    features = prepare_dataset(
        dialogues, tokenizer, max_turns=2, max_len=40, load_from_cache_file=False
    )
    model = tiny_chat_gpt2(n_positions=128)
    torch.manual_seed(0)
    losses = _train_steps(model, features, tokenizer.pad_token_id, steps, batch_size, lr)
    return model, tokenizer, dialogues, losses


@pytest.fixture(scope="session")
def trained():
    """A tiny GPT-2 trained for a few seconds on DailyDialog validation (see
    :func:`train_tiny_chat_model`). After ~120 steps it answers "." and ends with <eos>."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_tiny_chat_model(corpus_dir() / "dailydialog")
    finally:
        torch.set_num_threads(threads)
