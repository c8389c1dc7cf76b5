"""``ChatSession``: multi-turn chat on the training renderer, decoded by ``model.generate``.

The prompt of every turn is built by :func:`gpt2chat.render.render_messages` (the function that
also builds the training examples), so chat and training cannot disagree on the format::

    <bos> [persona] <sp1> user <sp2> bot <sp1> user <sp2>   -> generate -> reply <eos>|<sp1>

Decoding is ``model.generate`` with its KV cache. Between turns the session keeps that cache
(the *prefix cache*): the next prompt is compared token by token with what the cache holds and
only the part after the longest common prefix is encoded. While the history window has not
slid, that is just the new user turn, so the time to the first token of a reply does not grow
with the conversation. When the window slides, the prompt's beginning changes and (with GPT-2's
absolute positions) everything is encoded again. Reuse never changes the result: the cached keys
and values of a position depend only on the tokens (and token types) up to that position, and
those are compared exactly.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..loading import (
    check_model_path,
    load_causal_lm,
    load_tokenizer_for,
    resolve_device,
    resolve_dtype,
)
from ..render import encode_texts, render_messages
from ..tokens import SpeakerTokens, get_speaker_tokens
from .decoding import GrowingKVCache, relayout_output_embeddings, sampling_processors
from .guidance import ContextGuidanceLogitsProcessor, check_guidance_scale
from .rerank import (
    Candidate,
    DistinctFirstTokens,
    EnoughEnded,
    best_candidate,
    cut_at_stop,
    score_candidates,
    valid_mmi_contexts,
)
from .settings import MIN_TEMPERATURE, ChatSettings

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_GENERATION_OPTIONS", "Candidate", "ChatSession", "TurnStats", "resolve_dtype"]

#: The original recipe's decoding: nucleus sampling with ``top_p=0.8`` (no top-k).
DEFAULT_GENERATION_OPTIONS: dict[str, Any] = {
    "do_sample": True,
    "top_p": 0.8,
    "top_k": 0,
    "temperature": 1.0,
    "max_new_tokens": 64,
}
#: Options that only matter when sampling: dropped from the defaults under greedy / beam search.
_SAMPLING_ONLY = ("top_p", "top_k", "temperature")
#: Set by the session itself; a user value would break stopping or the prompt format.
_RESERVED = ("eos_token_id", "pad_token_id", "bos_token_id", "max_length", "streamer")
_CACHE_IMPLEMENTATIONS = ("dynamic", "static")
TRANSCRIPT_FORMAT = "gpt2chat-transcript"
TRANSCRIPT_VERSION = 1


@dataclass
class TurnStats:
    """What the last turn cost: tokens in the prompt, how many came from the prefix cache, timings."""

    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    first_token_seconds: float | None
    total_seconds: float
    truncated_input: bool = False

    @property
    def encoded_tokens(self) -> int:
        """Prompt tokens that had to be run through the model (not served by the prefix cache)."""
        return self.prompt_tokens - self.reused_tokens

    def to_dict(self) -> dict:
        return {**asdict(self), "encoded_tokens": self.encoded_tokens}


@dataclass
class _Turn:
    """A rendered turn, ready for ``generate``."""

    user_message: dict[str, str]
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool


# --------------------------------------------------------------------------- helpers
def _base_model(model):
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _forward_parameters(model) -> set[str]:
    return set(inspect.signature(_base_model(model).forward).parameters)


def _context_size(model, tokenizer) -> int:
    config = _base_model(model).config
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**6 else 1024


def _token_type_choice(choice: bool | None, params: set[str]) -> bool:
    """Feed ``token_type_ids``? What training recorded (``choice``), else, with no record, when
    the forward accepts them (the rule before gpt2chat recorded it), said in the log."""
    accepts = "token_type_ids" in params
    if choice is None:
        if accepts:
            logger.warning(
                "No record of whether this model was trained with token_type_ids (its folder "
                "has no use_token_type_ids in chat_config.json): feeding them, as gpt2chat did "
                "for such checkpoints. Pass use_token_type_ids=False for a model trained "
                "without them."
            )
        return accepts
    if choice and not accepts:
        raise ValueError(
            "`use_token_type_ids`=True but the model's forward takes no token_type_ids: pass "
            "False (or leave it unset)."
        )
    return bool(choice)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _tidy_pieces(pieces: Iterator[str]) -> Iterator[str]:
    """Strip the streamed text like the recorded reply: no leading or trailing whitespace."""
    started = False
    pending = ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        body = piece.rstrip()
        if body:
            yield pending + body
            pending = piece[len(body) :]
        else:
            pending += piece


class _StopFlag:
    """A ``StoppingCriteria`` that ends ``generate`` when the consumer of a stream goes away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _Tee:
    """A streamer that records the time of the first generated token and forwards to another."""

    def __init__(self, inner=None) -> None:
        self.inner = inner
        self.prompt_seen = False
        self.first_token_time: float | None = None

    def put(self, value) -> None:
        if self.prompt_seen and self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        self.prompt_seen = True
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


def _validate_messages(messages: Any, arg: str) -> list[dict[str, str]]:
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise ValueError(f"`{arg}` must be a list of {{'role', 'content'}} messages.")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"`{arg}`[{i}] must be a dict with 'role' and 'content', got {m!r}.")
        if m["role"] not in ("user", "assistant"):
            raise ValueError(
                f"`{arg}`[{i}] has role {m['role']!r}: the history holds 'user' and 'assistant' "
                "messages (pass the persona / system text as `persona`)."
            )
        if not isinstance(m["content"], str):
            raise ValueError(f"`{arg}`[{i}]['content'] must be a string, got {m['content']!r}.")
        clean.append({"role": m["role"], "content": m["content"]})
    return clean


# --------------------------------------------------------------------------- the session
class ChatSession:
    """A multi-turn conversation with a causal LM fine-tuned in the gpt2chat format.

    The user speaks as ``<sp1>``, the model answers as ``<sp2>``. Each turn renders the history
    window with :func:`gpt2chat.render_messages` (exactly as training renders examples) and
    decodes with ``model.generate``, reusing the KV cache of the previous turn when the window
    has not slid.

    Example:

    ```python
    >>> from gpt2chat import ChatSession
    >>> chat = ChatSession.from_pretrained("runs/gpt2-dialogue", top_p=0.9, seed=0)
    >>> chat.send("Hi! How are you?")
    "I'm fine, thanks. And you?"
    >>> for piece in chat.stream("Great. Any plans for the weekend?"):
    ...     print(piece, end="", flush=True)
    ```

    Args:
        model: a causal LM whose embeddings include the speaker tokens (GPT-2 family, with
            ``token_type_ids``, or models without token types such as Llama / SmolLM2). It may
            be a ``peft`` model.
        tokenizer: its tokenizer, extended by :func:`gpt2chat.add_speaker_tokens`.
        max_turns: utterances per exchange, the reply included, as in training (the original
            recipe's ``--max_turns``): the prompt holds the last ``max_turns - 1`` messages.
        persona: optional persona / system text placed after ``<bos>`` (as training renders
            Persona-Chat personas with ``with_persona=True``).
        max_len: context size to fit prompt + ``max_new_tokens`` in (default: the model's).
            Older whole utterances are dropped until it fits; an over-long user message is cut.
        prefix_cache: keep the KV cache between turns (see the module docs).
        cache_implementation: ``"dynamic"`` (a ``DynamicCache`` that appends into spare room
            instead of concatenating: :class:`~gpt2chat.chat.decoding.GrowingKVCache`) or
            ``"static"`` (a preallocated ``StaticCache`` of ``max_len`` positions: compilable).
        compile: ``torch.compile`` the decoding step (through generate's ``compile_config``;
            needs ``cache_implementation="static"``, which it selects). Pays off on GPUs.
        fast_lm_head: on CPU, store the model's output embedding (LM head, tied to the input
            embedding in GPT-2) transposed in memory: same values, shape and memory, ~1.8x faster
            batch-1 LM-head reads (:func:`~gpt2chat.chat.decoding.relayout_output_embeddings`).
            Default: on for a model :meth:`from_pretrained` loaded, off for a model passed in
            (the layout change is in place, and ``save_pretrained`` refuses a tied weight laid
            out so until ``relayout_output_embeddings(model, transposed=False)``).
        use_token_type_ids: pass ``token_type_ids`` to the model: ``True`` for a model trained
            with them (``gpt2chat train --use_token_type_ids true``), ``False`` for one trained
            without (the default since token types became opt-in). :meth:`from_pretrained`
            follows what training recorded in ``chat_config.json``. ``None`` with no record:
            when the model's ``forward`` accepts them, with a logged note.
        guidance_scale: context guidance (:mod:`gpt2chat.chat.guidance`): at each step the
            reply's next-token scores given the conversation are contrasted with those given no
            conversation, ``g * cond - (g - 1) * uncond``. ``1`` (default) is off; ``1.2``-``1.5``
            makes a small model's replies follow what was said. Costs one short extra forward
            pass per token; not with beam search.
        num_candidates: sample this many replies side by side (one batched ``generate``) and
            answer with the one the conversation explains best — maximum mutual information
            reranking (Li et al., 2016; DialoGPT's MMI step): ``log p(reply | conversation) -
            mmi_weight * log p(reply | no conversation)``. Generic replies that fit any message
            ("What about you?") score low. ``1`` (default) is off. Sampling stops once half of
            the candidates have ended (a reply still running then is longer and unfinished: it is
            chosen only when none ended). Needs sampling; the reply comes as one piece when
            streamed. The scored candidates of the last turn are in
            :attr:`last_candidates`.
        mmi_weight: the weight of the no-conversation log-probability in that score (``0``:
            the most likely candidate; ``1``: pointwise mutual information).
        mmi_contexts: the reference side of that score: ``None`` (default) is the empty
            conversation, ``log p(reply | no conversation)``; a list of generic messages (e.g.
            ``["Hi.", "What's up?", "Okay."]``) makes it the reply's mean probability after each
            of them as the only message: a reply that fits any message ("Yeah!") scores low, a
            reply that fits this one scores high. The empty conversation is learned from few
            examples (``unconditional_fraction``) and favours any reply that presupposes a
            message; one-message conversations are what the model saw most.
        distinct_first_tokens: with ``num_candidates`` > 1, open every candidate with a
            different token, drawn without replacement from the final first-token distribution
            (:class:`~gpt2chat.chat.rerank.DistinctFirstTokens`), so that reranking chooses
            between different replies rather than N variants of the most likely opening.
        seed: seed for sampling; set at creation and again by :meth:`reset`.
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
        max_turns: int = 5,
        persona: str | None = None,
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
        mmi_contexts: Sequence[str] | None = None,
        seed: int | None = None,
        generation_config: GenerationConfig | None = None,
        **generation_options: Any,
    ) -> None:
        if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 2:
            raise ValueError(
                f"`max_turns` must be an integer >= 2 (the user's message and the reply), got "
                f"{max_turns!r}."
            )
        if cache_implementation not in _CACHE_IMPLEMENTATIONS:
            raise ValueError(
                f"`cache_implementation` must be one of {_CACHE_IMPLEMENTATIONS}, got "
                f"{cache_implementation!r}."
            )
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
        self._stop_ids = self.tokens.reply_stop_ids  # where a reply ends
        self.max_turns = max_turns
        self.prefix_cache = bool(prefix_cache)
        self.compile = bool(compile)
        self.cache_implementation = "static" if self.compile else cache_implementation
        self.seed = seed
        context = _context_size(model, tokenizer)
        if max_len is not None and (not isinstance(max_len, int) or not 8 <= max_len <= context):
            raise ValueError(
                f"`max_len` must be an integer between 8 and the model's context size {context}, "
                f"got {max_len!r}."
            )
        self.max_len = max_len or context
        params = _forward_parameters(model)
        if use_token_type_ids is None:  # a model loaded from a gpt2chat folder: its record
            use_token_type_ids = ChatSettings.recorded_token_types(model)
        self.use_token_type_ids = _token_type_choice(use_token_type_ids, params)
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        if guidance_scale is None:  # a GenerationConfig may carry one: ChatSession applies it
            guidance_scale = getattr(generation_config, "guidance_scale", None)
            guidance_scale = 1.0 if guidance_scale is None else guidance_scale
        self.guidance_scale = check_guidance_scale(guidance_scale)
        self.generation_config = self._build_generation_config(
            generation_config, generation_options
        )
        if self.guidance_scale != 1.0 and self._beam_search():
            raise ValueError(
                "`guidance_scale` works with sampling and greedy decoding, not beam search: "
                "set num_beams=1 or guidance_scale=1."
            )
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, int):
            raise ValueError(f"`num_candidates` must be an integer >= 1, got {num_candidates!r}.")
        if not 1 <= num_candidates <= 64:
            raise ValueError(
                f"`num_candidates` must be between 1 (off) and 64, got {num_candidates}."
            )
        if num_candidates > 1 and (not self.generation_config.do_sample or self._beam_search()):
            raise ValueError(
                "`num_candidates` > 1 reranks sampled replies: it needs do_sample=True and "
                "num_beams=1 (or set num_candidates=1)."
            )
        if num_candidates > 1 and self.cache_implementation == "static":
            raise ValueError(
                "`num_candidates` > 1 decodes a batch, which the static cache (and compile) "
                "here does not: use cache_implementation='dynamic' or num_candidates=1."
            )
        if (
            isinstance(mmi_weight, bool)
            or not isinstance(mmi_weight, (int, float))
            or not mmi_weight >= 0
        ):
            raise ValueError(f"`mmi_weight` must be a number >= 0, got {mmi_weight!r}.")
        self.num_candidates = num_candidates
        self.mmi_weight = float(mmi_weight)
        self.distinct_first_tokens = bool(distinct_first_tokens)
        if mmi_contexts is not None and not valid_mmi_contexts(mmi_contexts):
            raise ValueError(
                "`mmi_contexts` must be a list of 1 to 16 non-empty messages (or None: the empty "
                f"conversation), got {mmi_contexts!r}."
            )
        self.mmi_contexts = list(mmi_contexts) if mmi_contexts else None
        self.last_candidates: list[Candidate] = []
        self._persona: str | None = None
        self._persona_length = 0
        self.persona = persona
        self._history: list[dict[str, str]] = []
        self._cache = None
        self._static_cache = None
        self._cache_ids: list[int] = []
        self._cache_types: list[int] = []
        self.last_turn: TurnStats | None = None
        self._busy = False
        model.eval()
        if fast_lm_head:
            relayout_output_embeddings(model)
        if seed is not None:
            self._seed()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        merge_adapter: bool = True,
        add_tokens: bool = False,
        chat_config: bool = True,
        **session_kwargs: Any,
    ) -> ChatSession:
        """Load a fine-tuned model and its tokenizer and start a session.

        The decoding settings saved with the model (``generation_config.json`` and
        ``chat_config.json``, see :class:`~gpt2chat.ChatSettings`) are the defaults; the keyword
        arguments given here win.

        Args:
            path_or_hub_id: a folder written by ``save_pretrained`` (model + tokenizer with the
                speaker tokens), a hub id, a PEFT adapter folder (with ``adapter_config.json``:
                its base model is loaded, then the adapter), or a ``.gguf`` file.
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... Default: CUDA when available.
            dtype: ``"auto"`` (default: bf16/fp16 on GPU, fp32 on CPU), ``"bfloat16"``,
                ``"float16"`` (GPU only) or ``"float32"``.
            tokenizer: a tokenizer or where to load it from (default: next to the model).
            merge_adapter: merge a LoRA adapter into the base weights (faster decoding).
            add_tokens: call :func:`gpt2chat.add_speaker_tokens` when the tokenizer has none
                (chat with a base model that was never fine-tuned; its replies will be poor).
            chat_config: use the decoding settings saved with the model
                (``generation_config.json`` and ``chat_config.json``, see
                :class:`~gpt2chat.ChatSettings`) as the defaults (``False``: the library's
                defaults). Whether the model takes ``token_type_ids`` follows its record either
                way.
            **session_kwargs: passed to :class:`ChatSession` (``max_turns``, ``top_p``, ...).
        """
        from ..extend import add_speaker_tokens
        from ..tokens import CONFIG_KEY, load_tokenizer

        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        path = Path(path_or_hub_id).expanduser()
        name = str(path) if path.exists() else str(path_or_hub_id)
        check_model_path(name, arg=None)  # one clear error for a bad local path, model first
        own_tokenizer = tokenizer is None  # the model's: an adapter's base is resized to it
        if own_tokenizer:
            tokenizer = load_tokenizer_for(name, arg=None)
        elif isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(str(tokenizer))
        model = load_causal_lm(
            name,
            dtype=torch_dtype,
            tokenizer=tokenizer if own_tokenizer else None,
            merge=merge_adapter,
            arg=None,
        )
        if add_tokens and tokenizer.init_kwargs.get(CONFIG_KEY) is None:
            logger.warning("The tokenizer has no speaker tokens: adding them (untuned model).")
            add_speaker_tokens(tokenizer, model)
        model.to(device)
        logger.info(
            "Loaded %s (%s, %s, %.0fM parameters)",
            path_or_hub_id,
            device,
            str(torch_dtype).replace("torch.", ""),
            sum(p.numel() for p in model.parameters()) / 1e6,
        )
        session_kwargs.setdefault("fast_lm_head", True)  # the session owns the model it loaded
        if chat_config:
            saved = ChatSettings.from_pretrained(name)
        else:  # the decoding is the library's; what the model was trained with still holds
            try:
                saved = ChatSettings.from_pretrained(name)
            except ValueError as err:
                logger.warning("Ignoring the model's chat settings: %s", err)
                saved = None
            saved = ChatSettings(use_token_type_ids=saved.use_token_type_ids) if saved else None
        if saved is not None:
            logger.info("Chat settings saved with the model: %s", saved.to_dict())
            session_kwargs = saved.under(session_kwargs)
        return cls(model, tokenizer, **session_kwargs)

    def _build_generation_config(self, base, options: dict[str, Any]) -> GenerationConfig:
        from transformers import GenerationConfig

        known = set(GenerationConfig().to_dict())
        for key in options:
            if key in _RESERVED:
                raise ValueError(
                    f"`{key}` is set by ChatSession (generation stops at <eos> or <sp1>; the "
                    "length comes from max_new_tokens): remove it."
                )
            if key not in known or key.startswith("_"):
                raise ValueError(
                    f"Unknown generation option `{key}`: use a GenerationConfig field such as "
                    "top_p, top_k, temperature, do_sample, num_beams, repetition_penalty, "
                    "no_repeat_ngram_size, max_new_tokens or min_new_tokens."
                )
        if base is not None:
            values = {k: v for k, v in base.to_dict().items() if v is not None and k in known}
            values = {k: v for k, v in values.items() if k not in _RESERVED}
            values.pop("guidance_scale", None)  # applied by the session (see guidance_scale)
            values.setdefault("max_new_tokens", DEFAULT_GENERATION_OPTIONS["max_new_tokens"])
        else:
            values = dict(DEFAULT_GENERATION_OPTIONS)
        values.update({k: v for k, v in options.items() if v is not None})
        sampling = bool(values.get("do_sample"))
        if not sampling:
            for key in _SAMPLING_ONLY:
                if key not in options:
                    values.pop(key, None)
        if values.get("num_beams", 1) > 1 and values.get("early_stopping") is None:
            values["early_stopping"] = True
        max_new = values.get("max_new_tokens")
        if not isinstance(max_new, int) or max_new < 1:
            raise ValueError(f"`max_new_tokens` must be an integer >= 1, got {max_new!r}.")
        if max_new > self.max_len - 8:
            raise ValueError(
                f"`max_new_tokens`={max_new} leaves no room for a prompt in the context of "
                f"{self.max_len} tokens: lower it (e.g. to {max(1, self.max_len // 4)})."
            )
        top_p = values.get("top_p")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"`top_p` must be in (0, 1], got {top_p!r}.")
        temperature = values.get("temperature")
        if temperature is not None and not temperature >= MIN_TEMPERATURE:
            raise ValueError(
                f"`temperature` must be >= {MIN_TEMPERATURE:g}, got {temperature!r} (for greedy "
                "decoding pass do_sample=False)."
            )
        values.update(
            eos_token_id=list(self._stop_ids),
            pad_token_id=self.tokens.pad_token_id,
            bos_token_id=self.tokens.bos_token_id,
            use_cache=True,
        )
        config = GenerationConfig(**values)
        if self.compile:
            from transformers import CompileConfig

            compile_config = CompileConfig(fullgraph=False, dynamic=False)
            compile_config._compile_all_devices = True  # also compile on CPU when asked
            config.compile_config = compile_config
        try:
            config.validate(strict=True)
        except ValueError as err:
            raise ValueError(f"Invalid generation options: {err}") from None
        return config

    # ------------------------------------------------------------------ state
    @property
    def history(self) -> list[dict[str, str]]:
        """The conversation so far: ``{"role": "user"|"assistant", "content": str}`` dicts (a copy)."""
        return [dict(m) for m in self._history]

    @history.setter
    def history(self, messages: Sequence[Mapping[str, str]]) -> None:
        self._history = _validate_messages(messages, "history")

    @property
    def persona(self) -> str | None:
        """The persona / system text after ``<bos>`` (``None``: no persona)."""
        return self._persona

    @persona.setter
    def persona(self, text: str | None) -> None:
        if text is not None and not isinstance(text, str):
            raise ValueError(f"`persona` must be a string or None, got {type(text).__name__}.")
        text = text.strip() if text else None
        length = len(encode_texts(self.tokenizer, [text])[0]) if text else 0
        if 4 + length + self.max_new_tokens > self.max_len:
            raise ValueError(
                f"The persona ({length} tokens) leaves no room for a message in max_len="
                f"{self.max_len} with max_new_tokens={self.max_new_tokens}: shorten it."
            )
        self._persona, self._persona_length = text or None, length

    @property
    def max_new_tokens(self) -> int:
        return int(self.generation_config.max_new_tokens)

    def describe_decoding(self) -> str:
        """One line on how replies are decoded, e.g. ``"sampling (temperature 0.7, top-p 0.9),
        repetition penalty 1.2, context guidance 1.3, best of 6 candidates (MMI 0.5); up to 48
        tokens; window of 3 utterances"``."""
        config = self.generation_config
        if self._beam_search():
            parts = [f"beam search ({config.num_beams} beams)"]
        elif not config.do_sample:
            parts = ["greedy"]
        else:
            knobs = [f"temperature {config.temperature or 1.0:g}"]
            if config.top_k:
                knobs.append(f"top-k {config.top_k}")
            if config.top_p is not None and config.top_p < 1:
                knobs.append(f"top-p {config.top_p:g}")
            parts = [f"sampling ({', '.join(knobs)})"]
        if config.repetition_penalty not in (None, 1.0):
            parts.append(f"repetition penalty {config.repetition_penalty:g}")
        if config.no_repeat_ngram_size:
            parts.append(f"no repeated {config.no_repeat_ngram_size}-grams")
        if self.guidance_scale != 1.0:
            parts.append(f"context guidance {self.guidance_scale:g}")
        if self.num_candidates > 1:
            against = f" against {len(self.mmi_contexts)} messages" if self.mmi_contexts else ""
            parts.append(
                f"best of {self.num_candidates} candidates (MMI {self.mmi_weight:g}{against})"
            )
        return (
            f"{', '.join(parts)}; up to {config.max_new_tokens} tokens; window of "
            f"{self.max_turns} utterances"
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        """Forget the conversation (and the prefix cache); re-seed when a ``seed`` was given."""
        self._history = []
        self._drop_cache()
        self.last_turn = None
        if self.seed is not None:
            self._seed()

    def _seed(self) -> None:
        from transformers import set_seed

        set_seed(self.seed)

    def _drop_cache(self) -> None:
        self._cache = None
        self._cache_ids, self._cache_types = [], []

    # ------------------------------------------------------------------ transcripts
    def save_transcript(self, path: str | Path) -> Path:
        """Write the conversation (persona and messages) to a JSON file and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": TRANSCRIPT_FORMAT,
            "version": TRANSCRIPT_VERSION,
            "persona": self.persona,
            "max_turns": self.max_turns,
            "messages": self.history,
        }
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return path

    def load_transcript(self, path: str | Path) -> None:
        """Continue a conversation saved by :meth:`save_transcript`.

        Also accepts a plain JSON list of messages (an optional first ``system`` message is the
        persona). Replaces the history and the persona.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"No transcript at {path}.") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a JSON transcript: {err}") from None
        if isinstance(data, list):
            messages = list(data)
            persona = None
            if (
                messages
                and isinstance(messages[0], Mapping)
                and messages[0].get("role") == "system"
            ):
                persona = messages.pop(0).get("content")
        elif isinstance(data, Mapping) and "messages" in data:
            messages, persona = data["messages"], data.get("persona")
        else:
            raise ValueError(
                f"{path} is not a gpt2chat transcript: expected {{'messages': [...]}} or a list "
                "of messages."
            )
        history = _validate_messages(messages, "messages")
        self.persona = persona
        self._history = history
        self._drop_cache()

    # ------------------------------------------------------------------ prompts
    def messages_for(self, text: str) -> list[dict[str, str]]:
        """The full message list of the next turn (persona, history, user message)."""
        system = [{"role": "system", "content": self._persona}] if self._persona else []
        return [*system, *self.history, {"role": "user", "content": text}]

    def render_prompt(self, text: str) -> dict[str, list[int]]:
        """The ``input_ids`` / ``token_type_ids`` that sending ``text`` now would feed the model.

        The same :func:`gpt2chat.render_messages` call that training uses, windowed to the
        last ``max_turns - 1`` messages and to ``max_len - max_new_tokens`` tokens.
        """
        turn = self._prepare(text)
        return {"input_ids": turn.input_ids, "token_type_ids": turn.token_type_ids}

    def _check_text(self, text: Any) -> str:
        if not isinstance(text, str):
            raise ValueError(f"`text` must be a string, got {type(text).__name__}.")
        if not text.strip():
            raise ValueError("The message is empty: type some text to send.")
        return text

    def _fit_user_text(self, text: str) -> tuple[str, bool]:
        """Cut ``text`` (keeping its beginning) so that the message alone fits the context."""
        budget = self.max_len - self.max_new_tokens - 3 - self._persona_length
        if len(encode_texts(self.tokenizer, [text])[0]) <= budget:
            return text, False
        lo, hi = 0, len(text)  # longest prefix that fits: binary search on characters
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(encode_texts(self.tokenizer, [text[:mid]])[0]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        logger.warning(
            "The message (%d characters) is too long for the context of %d tokens: cut to its "
            "first %d characters.",
            len(text),
            self.max_len,
            lo,
        )
        return text[:lo], True

    def _prepare(self, text: str) -> _Turn:
        text = self._check_text(text)
        text, truncated = self._fit_user_text(text)
        if not text.strip():
            raise ValueError("The message has no text that fits the context: send a shorter one.")
        messages = self.messages_for(text)
        rendered = render_messages(
            messages,
            self.tokenizer,
            tokens=self.tokens,
            add_generation_prompt=True,
            max_turns=self.max_turns - 1,
            max_len=self.max_len,
            reserve=self.max_new_tokens,
        )
        return _Turn(messages[-1], rendered["input_ids"], rendered["token_type_ids"], truncated)

    # ------------------------------------------------------------------ decoding
    def _take_cache(self, turn: _Turn) -> tuple[Any, int]:
        """The cache to start from (cropped to the reusable prefix) and how many tokens it holds."""
        from transformers import StaticCache

        cache, cached_ids, cached_types = self._cache, self._cache_ids, self._cache_types
        self._drop_cache()  # until generate succeeds, the session holds no cache
        if self._beam_search():
            return None, 0  # beam search reorders the cache by beam: never reused
        config = _base_model(self.model).config
        keep = 0
        if self.prefix_cache and cache is not None:
            keep = _common_prefix(cached_ids, turn.input_ids)
            if self.use_token_type_ids:
                keep = min(keep, _common_prefix(cached_types, turn.token_type_ids))
            keep = min(keep, len(turn.input_ids) - 1)  # at least one token to run
        if keep > 0:
            held = int(cache.get_seq_length())
            if held > keep:
                cache.crop(keep - held)  # negative: remove that many tokens
            return cache, keep
        if self.cache_implementation == "static":  # one preallocated cache, reused
            if self._static_cache is None:
                self._static_cache = StaticCache(config=config, max_cache_len=self.max_len)
            self._static_cache.reset()
            return self._static_cache, 0
        return GrowingKVCache(config=config), 0

    def _generate(self, turn: _Turn, streamer=None, stop: _StopFlag | None = None) -> list[int]:
        """Run ``generate`` for a prepared turn; return the generated ids; keep the new cache."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        start = time.perf_counter()
        rows = self.num_candidates  # > 1: sampled side by side, then reranked
        with torch.inference_mode():  # the caches hold inference tensors: touch them in there
            cache, reused = self._take_cache(turn)
            if rows > 1 and reused:
                cache.batch_repeat_interleave(rows)
        device = self.device
        input_ids = torch.tensor([turn.input_ids] * rows, dtype=torch.long, device=device)
        # The session builds the sampling warpers itself, so that its own processors (context
        # guidance) run after temperature / top-k / top-p: generate puts user processors first.
        processors, neutral = sampling_processors(self.generation_config, device)
        config = self.generation_config
        if rows > 1:  # the raw logits score the candidates
            neutral = {**neutral, "output_logits": True, "return_dict_in_generate": True}
        if neutral:  # a copy with generate's own warpers switched off
            config = copy.deepcopy(config)
            config.update(**neutral)
        if self.guidance_scale != 1.0:
            processors.append(self._guidance(turn))
        if rows > 1 and self.distinct_first_tokens:  # last: it draws from the final scores
            processors.append(DistinctFirstTokens(len(turn.input_ids)))
        kwargs: dict[str, Any] = {
            "attention_mask": torch.ones_like(input_ids),
            "generation_config": config,
        }
        if self.use_token_type_ids:
            kwargs["token_type_ids"] = torch.tensor(
                [turn.token_type_ids] * rows, dtype=torch.long, device=device
            )
        if cache is not None:
            kwargs[self._cache_kwarg] = cache
        criteria: list = [] if stop is None else [stop]
        if rows > 1:  # sampling ends once half of the candidates have ended
            criteria.append(EnoughEnded(len(turn.input_ids), self._stop_ids, (rows + 1) // 2))
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        if processors:
            kwargs["logits_processor"] = LogitsProcessorList(processors)
        timer = _Tee(streamer)
        if not self._beam_search() and rows == 1:  # generate streams one sequence, no beams
            kwargs["streamer"] = timer
        self.last_candidates = []
        with torch.inference_mode():
            output = self.model.generate(input_ids, **kwargs)
            if rows > 1:
                best = self._rerank(turn, output.sequences, output.logits)
                if cache is not None:
                    cache.batch_select_indices(torch.tensor([best], device=device))
                sequence = output.sequences[best].tolist()
            else:
                sequence = output[0].tolist()
        generated = sequence[len(turn.input_ids) :]
        if cache is not None and self.prefix_cache:
            held = int(cache.get_seq_length())
            if 0 < held <= len(sequence):
                self._cache = cache
                self._cache_ids = sequence[:held]
                types = turn.token_type_ids + [self.tokens.sp2_token_id] * len(generated)
                self._cache_types = types[:held]
        if rows > 1:
            generated = cut_at_stop(generated, self._stop_ids)
            timer.first_token_time = None  # the reply comes whole, once reranked
        end = time.perf_counter()
        self.last_turn = TurnStats(
            prompt_tokens=len(turn.input_ids),
            reused_tokens=reused,
            generated_tokens=len(generated),
            first_token_seconds=(timer.first_token_time - start)
            if timer.first_token_time
            else None,
            total_seconds=end - start,
            truncated_input=turn.truncated,
        )
        return generated

    def _unconditional_prompt(self) -> dict[str, Any]:
        """The no-conversation side that context guidance and reranking contrast with, as their
        keyword arguments: the renderer's ``<bos> [persona] <sp2>`` (a reply's prompt with the
        conversation left out), its token types for models that take them, the reply's type."""
        system = [{"role": "system", "content": self._persona}] if self._persona else []
        empty = render_messages(
            system, self.tokenizer, tokens=self.tokens, add_generation_prompt=True
        )
        return {
            "unconditional_ids": empty["input_ids"],
            "unconditional_token_type_ids": empty["token_type_ids"]
            if self.use_token_type_ids
            else None,
            "reply_token_type": self.tokens.sp2_token_id,
        }

    def _reference_prompts(self) -> list[tuple[list[int], list[int] | None]]:
        """The reference side of reranking, ``(ids, token types or None)`` per prompt: the
        no-conversation prompt, or one generic one-message conversation per ``mmi_contexts``."""
        texts = self.mmi_contexts or [None]
        system = [{"role": "system", "content": self._persona}] if self._persona else []
        prompts = []
        for text in texts:  # None: the conversation left out, as context guidance does
            user = [{"role": "user", "content": text}] if text is not None else []
            rendered = render_messages(
                [*system, *user], self.tokenizer, tokens=self.tokens, add_generation_prompt=True
            )
            types = rendered["token_type_ids"] if self.use_token_type_ids else None
            prompts.append((rendered["input_ids"], types))
        return prompts

    def _rerank(self, turn: _Turn, sequences: torch.Tensor, logits: Sequence[torch.Tensor]) -> int:
        """Score each sampled row (see ``num_candidates``); record them; return the best row."""
        candidates = score_candidates(
            self.model,
            sequences,
            logits,
            prompt_length=len(turn.input_ids),
            unconditional_prompts=self._reference_prompts(),
            reply_token_type=self.tokens.sp2_token_id,
            stop_ids=self._stop_ids,
            pad_token_id=self.tokens.pad_token_id,
            mmi_weight=self.mmi_weight,
            decode=self._decode_reply,
        )
        self.last_candidates = candidates
        best = best_candidate(candidates)
        logger.debug(
            "candidates (best %d): %s", best, [(round(c.score, 2), c.text) for c in candidates]
        )
        return best

    def _guidance(self, turn: _Turn) -> ContextGuidanceLogitsProcessor:
        """The context-guidance processor of a turn: its unconditional prompt is the renderer's
        ``<bos> [persona] <sp2>`` (the conversation left out)."""
        config = self.generation_config
        return ContextGuidanceLogitsProcessor(
            self.model,
            self.guidance_scale,
            prompt_length=len(turn.input_ids),
            **self._unconditional_prompt(),
            temperature=(config.temperature or 1.0) if config.do_sample else 1.0,
            cache_kwarg=self._cache_kwarg,
        )

    def _decode_reply(self, generated: Sequence[int]) -> str:
        ids = list(generated)
        if ids and ids[-1] in self._stop_ids:
            ids = ids[:-1]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _record(self, turn: _Turn, reply: str) -> None:
        self._history.append(turn.user_message)
        self._history.append({"role": "assistant", "content": reply})

    # ------------------------------------------------------------------ public turns
    def send(self, text: str) -> str:
        """Add the user's message, generate the reply, add it to the history and return it.

        Raises:
            ValueError: ``text`` is empty or whitespace only.
        """
        self._check_idle()
        turn = self._prepare(text)
        self._busy = True
        try:
            reply = self._decode_reply(self._generate(turn))
        finally:
            self._busy = False
        self._record(turn, reply)
        return reply

    def stream(self, text: str) -> Iterator[str]:
        """Like :meth:`send`, but yield the reply in pieces as it is generated.

        ``"".join(pieces)`` is the reply, recorded in the history once the iteration ends. If the
        iteration is abandoned (``break``, Ctrl-C), generation stops and the turn is not recorded.
        The message is checked (and refused with ``ValueError``) when ``stream`` is called,
        before any generation. With beam search or ``num_candidates > 1`` the reply comes as one
        piece.
        """
        self._check_idle()
        turn = self._prepare(text)
        return self._stream(turn)

    def _check_idle(self) -> None:
        if self._busy:
            raise RuntimeError(
                "A reply is still being streamed: finish iterating over stream() (or close it) "
                "before sending the next message."
            )

    def _beam_search(self) -> bool:
        return (self.generation_config.num_beams or 1) > 1

    def _stream(self, turn: _Turn) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        self._check_idle()
        self._busy = True
        try:
            if self._beam_search() or self.num_candidates > 1:  # one piece, once decided
                reply = self._decode_reply(self._generate(turn))
                if reply:
                    yield reply
                self._record(turn, reply)
                return
            streamer = TextIteratorStreamer(
                self.tokenizer, skip_prompt=True, skip_special_tokens=True
            )
            stop = _StopFlag()
            result: dict[str, Any] = {}

            def work() -> None:
                try:
                    result["generated"] = self._generate(turn, streamer=streamer, stop=stop)
                except BaseException as err:  # re-raised in the consumer's thread
                    result["error"] = err
                    streamer.end()

            thread = threading.Thread(target=work, name="gpt2chat-generate", daemon=True)
            thread.start()
            sent = ""
            try:
                for piece in _tidy_pieces(iter(streamer)):
                    sent += piece
                    yield piece
            finally:
                stop.event.set()
                thread.join()
            if "error" in result:
                raise result["error"]
            reply = self._decode_reply(result["generated"])
            if reply != sent:  # the streamer's text can only lag the final decode
                if reply.startswith(sent):
                    yield reply[len(sent) :]
                else:
                    logger.debug("streamed %r but decoded %r", sent, reply)
            self._record(turn, reply)
        finally:
            self._busy = False


# --------------------------------------------------------------------------- loading
