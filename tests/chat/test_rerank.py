"""ChatSession(num_candidates=N): sampled candidates scored by MMI, the best one answered."""

from __future__ import annotations

import pytest
import torch

from gpt2chat import ChatSession, render_messages
from gpt2chat.chat.guidance import ContextGuidanceLogitsProcessor

from .conftest import tiny_llama

MESSAGES = ["Hi there, how are you?", "I failed my exam today.", "What do you do on weekends?"]


def log_prob(model, ids: list[int], types: list[int] | None, start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, from one plain forward pass."""
    kwargs = {"token_type_ids": torch.tensor([types])} if types is not None else {}
    with torch.inference_mode():
        logits = model(torch.tensor([ids]), **kwargs).logits[0].float()
    targets = torch.tensor(ids[start:])
    return float(logits[start - 1 : -1].log_softmax(-1).gather(1, targets[:, None]).sum())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_candidates_are_scored_from_scratch_and_the_best_one_is_the_reply(arch, gpt2, tok):
    model = gpt2 if arch == "gpt2" else tiny_llama(tok)
    types = arch == "gpt2"
    session = ChatSession(
        model, tok, num_candidates=5, mmi_weight=0.7, max_new_tokens=10, max_turns=20, seed=0
    )
    sp2 = session.tokens.sp2_token_id
    for text in MESSAGES:
        prompt = session.render_prompt(text)
        empty = render_messages([], tok, add_generation_prompt=True)
        reply = session.send(text)
        candidates = session.last_candidates
        assert len(candidates) == 5
        for c in candidates:
            ids = prompt["input_ids"] + c.token_ids
            cond_types = prompt["token_type_ids"] + [sp2] * len(c.token_ids) if types else None
            cond = log_prob(model, ids, cond_types, len(prompt["input_ids"]))
            ids = empty["input_ids"] + c.token_ids
            uncond_types = empty["token_type_ids"] + [sp2] * len(c.token_ids) if types else None
            uncond = log_prob(model, ids, uncond_types, len(empty["input_ids"]))
            assert c.log_prob == pytest.approx(cond, abs=1e-3)
            assert c.unconditional_log_prob == pytest.approx(uncond, abs=1e-3)
            assert c.score == pytest.approx(c.log_prob - 0.7 * c.unconditional_log_prob)
            assert c.ended == (c.token_ids[-1] in (tok.eos_token_id, session.tokens.sp1_token_id))
        best = max(candidates, key=lambda c: (c.ended, c.score))
        assert reply == best.text
        assert session.history[-1] == {"role": "assistant", "content": reply}
        assert session.last_turn.generated_tokens == len(best.token_ids)
    assert len({tuple(c.token_ids) for c in candidates}) > 1  # sampled, not one reply 5 times


def test_candidates_with_the_prefix_cache_match_a_session_without_it(gpt2, tok):
    options = {"num_candidates": 3, "max_new_tokens": 8, "max_turns": 20}
    cached = ChatSession(gpt2, tok, **options)
    fresh = ChatSession(gpt2, tok, prefix_cache=False, **options)
    for seed, text in enumerate(MESSAGES):
        torch.manual_seed(seed)  # the same draws for both sessions
        reply = cached.send(text)
        torch.manual_seed(seed)
        assert fresh.send(text) == reply
        assert [c.token_ids for c in cached.last_candidates] == [
            c.token_ids for c in fresh.last_candidates
        ]
    assert cached.last_turn.reused_tokens > 0 and fresh.last_turn.reused_tokens == 0


def test_an_unfinished_candidate_is_chosen_only_when_none_ended(gpt2, tok):
    session = ChatSession(gpt2, tok, num_candidates=2, max_new_tokens=2)
    prompt = session.render_prompt("Hello")["input_ids"]
    eos, vocab = tok.eos_token_id, gpt2.config.vocab_size
    references = [session.engine.no_conversation_prompt()]
    sequences = torch.tensor([[*prompt, 5, eos], [*prompt, 7, 8]])
    logits = [torch.zeros(2, vocab), torch.zeros(2, vocab)]
    for step, (a, b) in enumerate([(5, 7), (eos, 8)]):
        logits[step][0, a] = -30.0  # the ended reply is very unlikely...
        logits[step][1, b] = 30.0  # ...the unfinished one very likely
    with torch.inference_mode():
        best, candidates = session.engine._rerank(len(prompt), sequences, logits, references)
    ended = [c.ended for c in candidates]
    assert ended == [True, False] and best == 0
    assert candidates[1].score > candidates[0].score
    sequences = torch.tensor([[*prompt, 5, 6], [*prompt, 7, 8]])  # neither ended: best score
    with torch.inference_mode():
        assert session.engine._rerank(len(prompt), sequences, logits, references)[0] == 1


def test_streaming_with_candidates_gives_the_reply_in_one_piece(gpt2, tok):
    session = ChatSession(gpt2, tok, num_candidates=3, max_new_tokens=6, seed=0)
    pieces = list(session.stream("Hello there"))
    assert len(pieces) <= 1
    assert "".join(pieces) == session.history[-1]["content"]
    assert session.last_turn.first_token_seconds is None


def test_guidance_runs_per_candidate(gpt2, tok):
    """A batch of identical rows gets the scores each row would get alone."""

    def processor():
        return ContextGuidanceLogitsProcessor(gpt2, 1.5, prompt_length=3, unconditional_ids=[1, 2])

    scores = torch.randn(1, gpt2.config.vocab_size)
    one = processor()(torch.tensor([[7, 8, 9, 11]]), scores)
    two = processor()(torch.tensor([[7, 8, 9, 11], [7, 8, 9, 11]]), scores.repeat(2, 1))
    torch.testing.assert_close(two[0], one[0])
    torch.testing.assert_close(two[1], one[0])
    guided = processor()
    guided(torch.tensor([[7, 8, 9, 11]]), scores)
    with pytest.raises(ValueError, match="batch changed size"):
        guided(torch.tensor([[7, 8, 9, 11, 12]] * 2), scores.repeat(2, 1))
    session = ChatSession(gpt2, tok, num_candidates=3, guidance_scale=1.5, max_new_tokens=6)
    assert isinstance(session.send("Hello there"), str) and len(session.last_candidates) == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_candidates": 0}, "between 1"),
        ({"num_candidates": 2.0}, "integer"),
        ({"num_candidates": 4, "do_sample": False}, "do_sample=True"),
        ({"num_candidates": 4, "num_beams": 2}, "num_beams=1"),
        ({"num_candidates": 4, "cache_implementation": "static"}, "static cache"),
        ({"num_candidates": 4, "mmi_weight": -1}, "mmi_weight"),
        ({"num_candidates": 4, "mmi_weight": "high"}, "mmi_weight"),
    ],
)
def test_bad_candidate_options_are_refused(gpt2, tok, options, match):
    with pytest.raises(ValueError, match=match):
        ChatSession(gpt2, tok, **options)


def test_sampling_candidates_stops_once_half_of_them_ended():
    from gpt2chat.chat.rerank import EnoughEnded

    criterion = EnoughEnded(prompt_length=2, stop_ids=[9, 8], needed=2)
    running = torch.tensor([[1, 9, 5, 6], [1, 2, 9, 6], [1, 2, 3, 4]])  # a 9 in a prompt: ignored
    assert not criterion(running).any()
    one = torch.tensor([[1, 1, 5, 9], [1, 2, 3, 6], [1, 2, 3, 4]])
    assert not criterion(one).any()
    two = torch.tensor([[1, 1, 5, 9], [1, 2, 8, 6], [1, 2, 3, 4]])
    assert criterion(two).all()


def test_distinct_first_tokens_draws_without_replacement_from_the_final_scores():
    from gpt2chat.chat.rerank import DistinctFirstTokens

    torch.manual_seed(0)
    processor = DistinctFirstTokens(prompt_length=3)
    scores = torch.full((4, 50), -float("inf"))
    scores[:, [2, 7, 11, 20, 33]] = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1])  # a 5-token nucleus
    first = processor(torch.zeros(4, 3, dtype=torch.long), scores.clone())
    picks = first.argmax(-1)
    assert len(set(picks.tolist())) == 4  # every row its own first token...
    assert set(picks.tolist()) <= {2, 7, 11, 20, 33}  # ...from the nucleus...
    for row, token in enumerate(picks.tolist()):  # ...with its score kept, the rest removed
        assert first[row, token] == scores[row, token]
        assert torch.isinf(first[row]).sum() == 49
    later = processor(torch.zeros(4, 4, dtype=torch.long), scores.clone())
    assert torch.equal(later, scores)  # later steps untouched
    counts = torch.zeros(50)
    for _ in range(300):  # the likelier tokens come first more often
        counts[processor(torch.zeros(4, 3, dtype=torch.long), scores.clone()).argmax(-1)] += 1
    assert counts[2] > counts[20] and counts[7] > counts[33]
    small = torch.full((4, 50), -float("inf"))
    small[:, [5, 9]] = 1.0  # fewer tokens than rows: they repeat, none outside
    assert set(processor(torch.zeros(4, 3, dtype=torch.long), small).argmax(-1).tolist()) == {5, 9}


def test_candidates_start_with_different_tokens(gpt2, tok):
    """With 4 candidates sampling from 4 tokens (top_k=4), independent rows rarely open with 4
    different tokens; drawn without replacement (the default) they always do."""
    options = {"num_candidates": 4, "max_new_tokens": 6, "max_turns": 20, "top_k": 4}
    firsts = {}
    for distinct in (True, False):
        session = ChatSession(gpt2, tok, seed=0, distinct_first_tokens=distinct, **options)
        firsts[distinct] = []
        for text in MESSAGES:
            session.send(text)
            firsts[distinct].append({c.token_ids[0] for c in session.last_candidates})
    assert all(len(row) == 4 for row in firsts[True]), firsts
    assert not all(len(row) == 4 for row in firsts[False]), firsts


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generic_contexts_are_the_reference_side(arch, gpt2, tok):
    """With mmi_contexts, a candidate's reference log-probability is the log of its mean
    probability after each generic message, from plain forward passes."""
    import math

    model = gpt2 if arch == "gpt2" else tiny_llama(tok)
    types = arch == "gpt2"
    contexts = ["Hi.", "What's up?", "Okay."]
    session = ChatSession(
        model, tok, num_candidates=3, mmi_contexts=contexts, max_new_tokens=8, max_turns=20, seed=0
    )
    sp2 = session.tokens.sp2_token_id
    session.send(MESSAGES[1])
    for c in session.last_candidates:
        values = []
        for text in contexts:
            prompt = render_messages([{"role": "user", "content": text}], tok,
                                     add_generation_prompt=True)  # fmt: skip
            ids = prompt["input_ids"] + c.token_ids
            t = prompt["token_type_ids"] + [sp2] * len(c.token_ids) if types else None
            values.append(log_prob(model, ids, t, len(prompt["input_ids"])))
        expected = math.log(sum(math.exp(v) for v in values) / len(values))
        assert c.unconditional_log_prob == pytest.approx(expected, abs=1e-3)
        assert c.score == pytest.approx(c.log_prob - 0.5 * expected, abs=1e-3)
    with pytest.raises(ValueError, match="mmi_contexts"):
        ChatSession(gpt2, tok, num_candidates=3, mmi_contexts="Hi.")
    with pytest.raises(ValueError, match="mmi_contexts"):
        ChatSession(gpt2, tok, num_candidates=3, mmi_contexts=["Hi.", "  "])
    with pytest.raises(ValueError, match="mmi_contexts"):
        ChatSession(gpt2, tok, num_candidates=3, mmi_contexts=3)
