"""The decoding engine: token ids in, token ids out (``model.generate`` and what surrounds it).

:class:`Engine` owns everything between a rendered prompt and the reply's ids: the KV cache and
the *prefix cache*, context guidance, MMI reranking, stopping at ``<eos>`` / ``<sp1>``, streaming
from a worker thread, and sampling with a ``torch.Generator`` per call (torch's global generator
is neither seeded nor drawn from by a seeded call, and no lock is needed). It knows no messages,
persona or history: :class:`~gpt2chat.ChatSession` (``session.py``) keeps the conversation and
renders the prompts. A new decoding option is applied here and checked in ``options.py``.

The prefix cache (``prefix_cache.py``) lets a conversation's next prompt encode only what is
new; streaming and what a call returns are in ``stream.py``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..render import render_messages
from ..tokens import SpeakerTokens, get_speaker_tokens
from .decoding import GeneratorSampler, relayout_output_embeddings, sampling_processors
from .guidance import ContextGuidanceLogitsProcessor
from .options import (
    build_generation_config,
    check_engine_options,
    context_size,
    forward_parameters,
    token_types_for,
)
from .prefix_cache import PrefixCache
from .rerank import (
    Candidate,
    DistinctFirstTokens,
    EnoughEnded,
    best_candidate,
    cut_at_stop,
    score_candidates,
)
from .stream import Call, Prompt, Reply, StopFlag, Tee, TokenStream, TurnStats

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["Engine", "Prompt", "Reply", "TokenStream", "TurnStats"]


class Engine:
    """Decode replies from prompt ids with a fine-tuned causal LM (see the module docs).

    ```python
    >>> engine = Engine(model, tokenizer, do_sample=False, max_new_tokens=20)
    >>> reply = engine.generate(prompt_ids, generator=torch.Generator().manual_seed(0))
    >>> tokenizer.decode(reply.token_ids, skip_special_tokens=True)
    ```

    Args:
        model: a causal LM whose embeddings include the speaker tokens (GPT-2 family, Llama /
            SmolLM2...; a ``peft`` model too).
        tokenizer: its tokenizer, extended by :func:`gpt2chat.add_speaker_tokens` (the stop,
            pad and reply ids; candidates' text).
        max_len: the context size prompt + ``max_new_tokens`` must fit (default: the model's).
        prefix_cache: keep the KV cache between calls (see the module docs).
        cache_implementation: ``"dynamic"`` (transformers' ``DynamicCache``) or ``"static"`` (a
            preallocated ``StaticCache`` of ``max_len`` positions: compilable).
        compile: ``torch.compile`` the decoding step (through generate's ``compile_config``;
            needs ``cache_implementation="static"``, which it selects). Pays off on GPUs.
        fast_lm_head: on CPU, store the LM head transposed in memory (same values, ~1.8x faster
            batch-1 reads; in place: :func:`~gpt2chat.chat.decoding.relayout_output_embeddings`).
        use_token_type_ids: feed ``token_type_ids``: what training recorded
            (``chat_config.json``); ``None`` with no record: when the forward accepts them.
        guidance_scale: context guidance (:mod:`gpt2chat.chat.guidance`): each step contrasts
            the scores given the conversation with those given none, ``g * cond - (g - 1) *
            uncond``. ``1`` (default) is off; not with beam search.
        num_candidates: sample this many replies side by side and answer with the one the
            conversation explains best (MMI reranking, :mod:`gpt2chat.chat.rerank`): ``log
            p(reply | conversation) - mmi_weight * log p(reply | reference)``. ``1`` is off;
            needs sampling; sampling stops once half of the candidates have ended.
        mmi_weight: the weight of the reference log-probability in that score.
        distinct_first_tokens: with ``num_candidates`` > 1, open every candidate with a
            different token (:class:`~gpt2chat.chat.rerank.DistinctFirstTokens`).
        generation_config: a ``GenerationConfig`` to start from instead of the recipe's
            defaults (the options below still override it).
        **generation_options: any ``GenerationConfig`` field: ``do_sample`` (default ``True``),
            ``top_p`` (``0.8``), ``top_k`` (``0``: off), ``temperature`` (``1.0``),
            ``max_new_tokens`` (``64``), ``min_new_tokens``, ``repetition_penalty``,
            ``no_repeat_ngram_size``, ``num_beams``... ``do_sample=False`` is greedy decoding.
            Generation stops at ``<eos>`` or when the model starts a ``<sp1>`` turn.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_len: int | None = None,
        prefix_cache: bool = True,
        cache_implementation: str = "dynamic",
        compile: bool = False,
        fast_lm_head: bool | None = None,
        use_token_type_ids: bool | None = None,
        guidance_scale: float | None = None,
        num_candidates: int = 1,
        mmi_weight: float = 0.5,
        distinct_first_tokens: bool = True,
        generation_config: GenerationConfig | None = None,
        **generation_options: Any,
    ) -> None:
        try:
            self.tokens: SpeakerTokens = get_speaker_tokens(tokenizer)
        except ValueError:
            raise ValueError(
                "`tokenizer` has no gpt2chat speaker tokens: pass the tokenizer saved with the "
                "fine-tuned model, or call gpt2chat.add_speaker_tokens(tokenizer, model) first "
                "(an untuned model will not answer well)."
            ) from None
        n_embeddings = model.get_input_embeddings().weight.shape[0]
        if self.tokens.sp2_token_id >= n_embeddings:
            raise ValueError(
                f"The model has {n_embeddings} embeddings but the tokenizer's speaker tokens go up "
                f"to id {self.tokens.sp2_token_id}: use the model saved with this tokenizer, or "
                "call gpt2chat.add_speaker_tokens(tokenizer, model)."
            )
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = self.tokens.reply_stop_ids  # where a reply ends
        self.prefix_cache = bool(prefix_cache)
        self.compile = bool(compile)
        context = context_size(model, tokenizer)
        if max_len is not None and (not isinstance(max_len, int) or not 8 <= max_len <= context):
            raise ValueError(
                f"`max_len` must be an integer between 8 and the model's context size {context}, "
                f"got {max_len!r}."
            )
        self.max_len = max_len or context
        params = forward_parameters(model)
        self.use_token_type_ids = token_types_for(model, use_token_type_ids)
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.generation_config = build_generation_config(
            generation_config,
            generation_options,
            tokens=self.tokens,
            max_len=self.max_len,
            compile=self.compile,
        )
        if guidance_scale is None:  # a GenerationConfig may carry one: the engine applies it
            guidance_scale = getattr(generation_config, "guidance_scale", None)
        self.guidance_scale = check_engine_options(
            self.generation_config,
            cache_implementation=cache_implementation,
            guidance_scale=guidance_scale,
            num_candidates=num_candidates,
            mmi_weight=mmi_weight,
        )
        self.cache_implementation = "static" if self.compile else cache_implementation
        self.num_candidates = num_candidates
        self.mmi_weight = float(mmi_weight)
        self.distinct_first_tokens = bool(distinct_first_tokens)
        self.cache = PrefixCache(
            model,
            enabled=self.prefix_cache,
            implementation=self.cache_implementation,
            max_len=self.max_len,
        )
        model.eval()
        if fast_lm_head:
            relayout_output_embeddings(model)

    # ------------------------------------------------------------------ facts
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_new_tokens(self) -> int:
        return int(self.generation_config.max_new_tokens)

    @property
    def beam_search(self) -> bool:
        return (self.generation_config.num_beams or 1) > 1

    @property
    def samples(self) -> bool:
        """Whether decoding draws random numbers (sampling, reranked or not)."""
        return bool(self.generation_config.do_sample)

    @property
    def streams_tokens(self) -> bool:
        """Whether :meth:`stream` yields tokens as they come (not with beams or reranking)."""
        return not self.beam_search and self.num_candidates == 1

    def no_conversation_prompt(self, persona: str | None = None) -> Prompt:
        """The renderer's ``<bos> [persona] <sp2>``: a reply's prompt with the conversation left
        out, the default reference of guidance and reranking."""
        system = [{"role": "system", "content": persona}] if persona else []
        empty = render_messages(
            system, self.tokenizer, tokens=self.tokens, add_generation_prompt=True
        )
        return empty["input_ids"], empty["token_type_ids"]

    def decode(self, token_ids: Sequence[int]) -> str:
        """A reply's text: without its stop token, special tokens or surrounding whitespace."""
        ids = list(token_ids)
        if ids and ids[-1] in self.stop_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def forget(self) -> None:
        """Drop the prefix cache (the next call encodes its whole prompt)."""
        self.cache.forget()

    # ------------------------------------------------------------------ calls
    def generate(
        self,
        input_ids: Sequence[int],
        token_type_ids: Sequence[int] | None = None,
        *,
        generator: torch.Generator | None = None,
        unconditional: Prompt | None = None,
        references: Sequence[Prompt] | None = None,
    ) -> Reply:
        """Decode a reply to the prompt ``input_ids`` (one sequence).

        Args:
            input_ids: the rendered prompt, ending with the reply's ``<sp2>``.
            token_type_ids: its token types (needed when the model is fed them).
            generator: the random numbers of this call's sampling (on the model's device). A
                generator seeded alike gives the same reply. ``None``: one seeded from a draw of
                torch's global generator (so ``torch.manual_seed`` still fixes the reply).
            unconditional: guidance's no-conversation prompt (default
                :meth:`no_conversation_prompt`).
            references: reranking's reference prompts (default ``[unconditional]``).
        """
        return self._run(
            self._call(input_ids, token_type_ids, generator, unconditional, references)
        )

    def stream(
        self,
        input_ids: Sequence[int],
        token_type_ids: Sequence[int] | None = None,
        *,
        generator: torch.Generator | None = None,
        unconditional: Prompt | None = None,
        references: Sequence[Prompt] | None = None,
    ) -> TokenStream:
        """Like :meth:`generate`, but a :class:`TokenStream` of the ids as they are generated
        (checked now, generated from the first ``next``)."""
        return TokenStream(
            self, self._call(input_ids, token_type_ids, generator, unconditional, references)
        )

    def _call(self, input_ids, token_type_ids, generator, unconditional, references) -> Call:
        ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else input_ids
        if (
            not isinstance(ids, Sequence)
            or not ids
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids)
        ):
            raise ValueError("`input_ids` must be a non-empty list of token ids (one prompt).")
        ids = list(ids)
        if len(ids) + self.max_new_tokens > self.max_len:
            raise ValueError(
                f"`input_ids` has {len(ids)} tokens: with max_new_tokens={self.max_new_tokens} it "
                f"does not fit the context of {self.max_len}: shorten the prompt."
            )
        types = None
        if self.use_token_type_ids:
            if token_type_ids is None or len(token_type_ids) != len(ids):
                raise ValueError(
                    "`token_type_ids` must give one type per prompt token: this model is fed "
                    "token types (render the prompt with gpt2chat.render_messages)."
                )
            types = [int(t) for t in token_type_ids]
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"`generator` must be a torch.Generator, got {generator!r}.")
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(
                f"`generator` is on {generator.device} but the model on {self.device}: create it "
                "with torch.Generator(device=...) on the model's device."
            )
        references = list(references) if references else None
        return Call(ids, types, generator, unconditional, references)

    def _generator(self, call: Call) -> torch.Generator:
        if call.generator is not None:
            return call.generator
        seed = int(torch.randint(0, 2**62, (1,)))  # one draw of the global generator
        return torch.Generator(device=self.device).manual_seed(seed)

    @contextlib.contextmanager
    def _beam_sampling(self, generator: torch.Generator | None) -> Iterator[None]:
        """Beam search with sampling draws inside transformers (no generator argument): run it
        on torch's generator seeded from ``generator``, the global state restored afterwards.
        The only path that touches the global generator (the server never uses beams)."""
        if generator is None:
            yield
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        device = self.device
        cuda = device.type == "cuda"
        index = (
            device.index if device.index is not None or not cuda else torch.cuda.current_device()
        )
        with torch.random.fork_rng(devices=[index] if cuda else []):
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)
            yield

    def _run(self, call: Call, on_token=None, stop: StopFlag | None = None) -> Reply:
        """Run ``generate`` for a prompt; keep the new cache; return the reply."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        start = time.perf_counter()
        rows = self.num_candidates  # > 1: sampled side by side, then reranked
        prompt_length = len(call.input_ids)
        with torch.inference_mode():  # the caches hold inference tensors: touch them in there
            types = call.token_type_ids
            cache, reused = self.cache.take(call.input_ids, types, beam_search=self.beam_search)
            if rows > 1 and reused:
                cache.batch_repeat_interleave(rows)
        device = self.device
        input_ids = torch.tensor([call.input_ids] * rows, dtype=torch.long, device=device)
        # The engine builds the sampling warpers itself, so that its own processors (context
        # guidance) run after temperature / top-k / top-p (generate puts user processors
        # first), and it draws the token with the call's generator: generate then runs greedily.
        config = self.generation_config
        processors, neutral = sampling_processors(config, device)
        generator = self._generator(call) if self.samples else None
        if generator is not None and not self.beam_search:
            # Greedy: no warper runs. top_k 50 is transformers' unset value: 0 (or None, which
            # generate fills from the model's generation_config) draws a "not valid" warning.
            neutral = {**neutral, "do_sample": False, "top_k": 50}
        if rows > 1:  # the raw logits score the candidates
            neutral = {**neutral, "output_logits": True, "return_dict_in_generate": True}
        if neutral:  # a copy with generate's own warpers and sampling switched off
            config = copy.deepcopy(config)
            config.update(**neutral)
        unconditional = call.unconditional
        if unconditional is None and (self.guidance_scale != 1.0 or rows > 1):
            unconditional = self.no_conversation_prompt()
        if self.guidance_scale != 1.0:
            processors.append(self._guidance(prompt_length, unconditional))
        if rows > 1 and self.distinct_first_tokens:  # it draws from the final scores
            processors.append(DistinctFirstTokens(prompt_length, generator))
        if generator is not None and not self.beam_search:
            processors.append(GeneratorSampler(generator))  # last: the token itself
        kwargs: dict[str, Any] = {
            "attention_mask": torch.ones_like(input_ids),
            "generation_config": config,
        }
        if call.token_type_ids is not None:
            kwargs["token_type_ids"] = torch.tensor(
                [call.token_type_ids] * rows, dtype=torch.long, device=device
            )
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        criteria: list = [] if stop is None else [stop]
        if rows > 1:  # sampling ends once half of the candidates have ended
            criteria.append(EnoughEnded(prompt_length, self.stop_ids, (rows + 1) // 2))
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        timer = Tee(on_token)
        if self.streams_tokens:  # generate streams one sequence, no beams
            kwargs["streamer"] = timer
        candidates: list[Candidate] = []
        beams = self._beam_sampling(generator) if self.beam_search else contextlib.nullcontext()
        with torch.inference_mode(), beams:
            output = self.model.generate(input_ids, **kwargs)
            if rows > 1:
                references = call.references or [unconditional]
                best, candidates = self._rerank(
                    prompt_length, output.sequences, output.logits, references
                )
                if cache is not None:
                    cache.batch_select_indices(torch.tensor([best], device=device))
                sequence = output.sequences[best].tolist()
            else:
                sequence = output[0].tolist()
        generated = sequence[prompt_length:]
        if types is not None:
            types = types + [self.tokens.sp2_token_id] * len(generated)
        self.cache.keep(cache, sequence, types)
        if rows > 1:
            generated = cut_at_stop(generated, self.stop_ids)
            timer.first_token_time = None  # the reply comes whole, once reranked
        first = timer.first_token_time
        stats = TurnStats(
            prompt_tokens=prompt_length,
            reused_tokens=reused,
            generated_tokens=len(generated),
            first_token_seconds=(first - start) if first else None,
            total_seconds=time.perf_counter() - start,
        )
        return Reply(generated, stats, candidates)

    def _rerank(
        self,
        prompt_length: int,
        sequences: torch.Tensor,
        logits: Sequence[torch.Tensor],
        references: Sequence[Prompt],
    ) -> tuple[int, list[Candidate]]:
        """Score each sampled row (see ``num_candidates``); the best row and the candidates."""
        types = self.use_token_type_ids
        candidates = score_candidates(
            self.model,
            sequences,
            logits,
            prompt_length=prompt_length,
            unconditional_prompts=[(ids, kinds if types else None) for ids, kinds in references],
            reply_token_type=self.tokens.sp2_token_id,
            stop_ids=self.stop_ids,
            pad_token_id=self.tokens.pad_token_id,
            mmi_weight=self.mmi_weight,
            decode=self.decode,
        )
        best = best_candidate(candidates)
        logger.debug(
            "candidates (best %d): %s", best, [(round(c.score, 2), c.text) for c in candidates]
        )
        return best, candidates

    def _guidance(
        self, prompt_length: int, unconditional: Prompt
    ) -> ContextGuidanceLogitsProcessor:
        """The context-guidance processor of a call, contrasting with ``unconditional``."""
        config = self.generation_config
        ids, types = unconditional
        return ContextGuidanceLogitsProcessor(
            self.model,
            self.guidance_scale,
            prompt_length=prompt_length,
            unconditional_ids=ids,
            unconditional_token_type_ids=types if self.use_token_type_ids else None,
            reply_token_type=self.tokens.sp2_token_id,
            temperature=(config.temperature or 1.0) if config.do_sample else 1.0,
            cache_kwarg=self._cache_kwarg,
        )
