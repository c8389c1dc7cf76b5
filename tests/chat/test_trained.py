"""Chat on real DailyDialog conversations, with a tiny GPT-2 trained a few steps on their
training features: the prompts are the training examples' prefixes, the trained model ends its
replies on ``<eos>`` by itself, and the prefix cache then serves the whole previous exchange."""

from __future__ import annotations

import datasets

from gpt2chat import ChatSession, encode_texts, get_speaker_tokens, prepare_dataset


def alternate(texts):
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(texts)]


def test_training_worked(trained):
    _, _, _, losses = trained
    assert sum(losses[-10:]) / 10 < losses[0] - 1.5  # nats per reply token


def test_chat_prompts_are_the_training_examples_of_real_dialogues(gpt2, tok, trained):
    """Every (history, user turn) of 30 real dialogues renders to the training example's prefix."""
    _, _, dialogues, _ = trained
    dialogues = dialogues.select(range(30))
    max_turns, max_new = 5, 8
    features = prepare_dataset(
        datasets.Dataset.from_dict({"utterances": dialogues["utterances"]}),
        tok,
        max_turns=max_turns,
        max_len=1024,
        load_from_cache_file=False,
    )
    chat = ChatSession(gpt2, tok, max_turns=max_turns, max_new_tokens=max_new, do_sample=False)
    eos = get_speaker_tokens(tok).eos_token_id
    examples = iter(features)
    compared = 0
    for utterances in dialogues["utterances"]:
        for h in range(1, len(utterances), 2):
            example = next(examples)
            if example["length"] + max_new > chat.max_len:
                continue  # the chat window would be cropped for length, training's is not
            chat.history = alternate(utterances[: h - 1])
            prompt = chat.render_prompt(utterances[h - 1])
            (reply,) = encode_texts(tok, [utterances[h]])
            assert example["input_ids"] == [*prompt["input_ids"], *reply, eos]
            n = len(prompt["token_type_ids"])
            assert example["token_type_ids"][:n] == prompt["token_type_ids"]
            compared += 1
    assert compared > 100


def test_trained_model_on_a_real_conversation(trained):
    model, tokenizer, dialogues, _ = trained
    user_turns = [u for d in dialogues.select(range(2))["utterances"] for u in d[::2]]
    cached = ChatSession(model, tokenizer, max_turns=5, max_new_tokens=16, do_sample=False)
    plain = ChatSession(
        model, tokenizer, max_turns=5, max_new_tokens=16, do_sample=False, prefix_cache=False
    )
    stops = get_speaker_tokens(tokenizer)
    for i, text in enumerate(user_turns):
        reply = cached.send(text)
        assert reply == plain.send(text)
        stats = cached.last_turn
        # The trained model ends its replies itself, on <eos>.
        assert stats.generated_tokens < 16
        assert "<|endoftext|>" not in reply
        if i == 1:  # window not slid yet: only "<sp1> text <sp2>" is run through the model
            assert stats.encoded_tokens == len(encode_texts(tokenizer, [text])[0]) + 2
    assert stops.eos_token_id == plain.generation_config.eos_token_id[0]
