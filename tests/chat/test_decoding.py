"""gpt2chat.chat.decoding: the LM-head re-layout, fast top-p, the engine-built sampling warpers
and the generator-driven sampling step (tiny random models; no tokenizer needed)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gpt2chat.chat.decoding import (
    FastTopPLogitsWarper,
    GeneratorSampler,
    relayout_output_embeddings,
    sampling_processors,
)

VOCAB = 300


def small_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(config).eval()


def test_relayout_keeps_values_shape_and_tie_and_saves_normally(tmp_path):
    model = small_gpt2()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = model(ids).logits
    weight = model.get_output_embeddings().weight
    values = weight.detach().clone()
    assert relayout_output_embeddings(model) is True
    head = model.get_output_embeddings().weight
    assert head is weight and head.shape == values.shape and head.stride() == (1, VOCAB)
    assert model.get_input_embeddings().weight is head  # still tied
    assert torch.equal(head, values)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before)
    assert relayout_output_embeddings(model) is False  # already done: nothing to do
    assert relayout_output_embeddings(model, transposed=False) is True  # before saving
    assert head.is_contiguous() and torch.equal(head, values)
    model.save_pretrained(tmp_path)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded.get_output_embeddings().weight, values)


def test_relayout_leaves_other_models_alone():
    class NoHead(torch.nn.Module):
        pass

    assert relayout_output_embeddings(NoHead()) is False


@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("spread", [0.2, 5.0], ids=["flat", "peaked"])
@pytest.mark.parametrize("keep", [1, 3])
def test_fast_top_p_keeps_the_same_tokens_as_transformers(top_p, spread, keep):
    generator = torch.Generator().manual_seed(int(top_p * 1000) + keep)
    scores = torch.randn(3, 5000, generator=generator) * spread
    ids = torch.zeros(3, 1, dtype=torch.long)
    ours = FastTopPLogitsWarper(top_p, min_tokens_to_keep=keep)(ids, scores.clone())
    if top_p == 1.0:  # all kept (transformers drops only tokens whose probability is 0.0)
        assert torch.equal(ours, scores)
        return
    theirs = TopPLogitsWarper(top_p, min_tokens_to_keep=keep)(ids, scores.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours[~torch.isinf(ours)], scores[~torch.isinf(theirs)])


def test_fast_top_p_on_a_gpt2_sized_vocabulary_and_equal_scores():
    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros(1, 1, dtype=torch.long)
    for spread in (0.05, 1.0, 8.0):  # bucket path, bucket path, topk path
        scores = torch.randn(1, 50260, generator=generator) * spread
        for top_p in (0.8, 0.9):
            ours = FastTopPLogitsWarper(top_p)(ids, scores.clone())
            theirs = TopPLogitsWarper(top_p)(ids, scores.clone())
            assert torch.equal(torch.isinf(ours), torch.isinf(theirs)), (spread, top_p)
    equal = torch.zeros(1, 1000)  # all tied: the sort decides, as in transformers
    kept = ~torch.isinf(FastTopPLogitsWarper(0.5)(ids, equal))
    assert int(kept.sum()) == int((~torch.isinf(TopPLogitsWarper(0.5)(ids, equal))).sum()) == 500


def test_fast_top_p_refuses_bad_values():
    with pytest.raises(ValueError, match="top_p"):
        FastTopPLogitsWarper(1.5)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        FastTopPLogitsWarper(0.9, min_tokens_to_keep=0)


def test_sampling_processors_follow_generates_order_and_switch_its_own_off():
    config = GenerationConfig(do_sample=True, temperature=0.7, top_k=40, top_p=0.9)
    processors, neutral = sampling_processors(config)
    assert [type(p) for p in processors] == [
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        FastTopPLogitsWarper,
    ]
    assert neutral["temperature"] == 1.0 and neutral["top_k"] == 0 and neutral["top_p"] == 1.0
    assert sampling_processors(GenerationConfig(do_sample=False)) == ([], {})
    beams = GenerationConfig(do_sample=True, num_beams=2, top_p=0.9)
    assert sampling_processors(beams) == ([], {})


def test_sampling_with_the_session_warpers_draws_generates_tokens():
    model = small_gpt2()
    ids = torch.tensor([list(range(10, 30))])
    config = GenerationConfig(
        do_sample=True, temperature=0.7, top_k=50, top_p=0.9, max_new_tokens=25, pad_token_id=0
    )
    processors, neutral = sampling_processors(config)
    with torch.inference_mode():
        torch.manual_seed(3)
        theirs = model.generate(ids, generation_config=config)
        torch.manual_seed(3)
        ours = model.generate(
            ids,
            generation_config=config,
            logits_processor=LogitsProcessorList(processors),
            **neutral,
        )
    assert ours.tolist() == theirs.tolist()


def test_the_generator_sampler_draws_generates_tokens_without_the_global_generator():
    model = small_gpt2()
    ids = torch.tensor([list(range(10, 30))] * 2)  # two rows, as reranking samples
    config = GenerationConfig(
        do_sample=True, top_k=50, top_p=0.9, max_new_tokens=25, pad_token_id=0
    )
    processors, neutral = sampling_processors(config)
    with torch.inference_mode():
        torch.manual_seed(3)
        theirs = model.generate(ids, generation_config=config)
        state = torch.get_rng_state()
        sampler = GeneratorSampler(torch.Generator().manual_seed(3))
        ours = model.generate(
            ids,
            generation_config=config,
            logits_processor=LogitsProcessorList([*processors, sampler]),
            **{**neutral, "do_sample": False},
        )
    assert ours.tolist() == theirs.tolist()
    assert torch.equal(torch.get_rng_state(), state)
