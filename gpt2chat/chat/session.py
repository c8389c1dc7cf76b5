"""``ChatSession``: a conversation (history, persona, rendering, transcripts) on the engine.

The session keeps what was said and turns it into the prompt of the next turn with
:func:`gpt2chat.render.render_messages` (the function that also builds the training examples),
so chat and training cannot disagree on the format::

    <bos> [persona] <sp1> user <sp2> bot <sp1> user <sp2>   -> engine -> reply <eos>|<sp1>

Decoding — the KV and prefix cache, guidance, reranking, stopping, streaming, the random
generator of each turn — is the :class:`~gpt2chat.chat.engine.Engine`'s (``engine.py``); the
terminal chat, the server and the demo are front ends of this session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
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
from ..render import encode_texts
from .engine import Engine, Reply, TurnStats
from .options import DEFAULT_GENERATION_OPTIONS, describe_decoding
from .prompts import Turn, check_text, fit_user_text, reference_prompts, render_turn
from .rerank import Candidate, valid_mmi_contexts
from .settings import ChatSettings
from .stream import text_pieces
from .transcripts import read_transcript, validate_messages, write_transcript

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_GENERATION_OPTIONS", "Candidate", "ChatSession", "TurnStats", "resolve_dtype"]


def _engine_attribute(name: str) -> property:
    """A read-only view of the engine's ``name`` (the session's decoding settings)."""
    return property(lambda self: getattr(self.engine, name), doc=f"The engine's ``{name}``.")


# --------------------------------------------------------------------------- the session
class ChatSession:
    """A multi-turn conversation with a causal LM fine-tuned in the gpt2chat format.

    The user speaks as ``<sp1>``, the model answers as ``<sp2>``. Each turn renders the history
    window with :func:`gpt2chat.render_messages` (exactly as training renders examples) and
    hands the ids to its :class:`~gpt2chat.chat.engine.Engine` (:attr:`engine`), which reuses
    the KV cache of the previous turn when the window has not slid.

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
        mmi_contexts: with ``num_candidates`` > 1, the reference side of the reranking score:
            ``None`` (default) is the empty conversation, ``log p(reply | no conversation)``; a
            list of generic messages (e.g. ``["Hi.", "What's up?", "Okay."]``) makes it the
            reply's mean probability after each of them as the only message: a reply that fits
            any message ("Yeah!") scores low, one that fits this message scores high.
        seed: seed of the session's own ``torch.Generator`` for sampling: set at creation and
            again by :meth:`reset`; two sessions with the same seed give the same replies,
            whatever runs beside them. ``None``: each turn's generator is seeded from torch's
            global generator (``torch.manual_seed`` then fixes the replies).
        **options: the decoding options of :class:`~gpt2chat.chat.engine.Engine`: ``max_len``
            (the context prompt + reply must fit; older whole utterances are dropped until the
            prompt does, an over-long user message is cut), ``prefix_cache``,
            ``cache_implementation``, ``compile``, ``fast_lm_head`` (default: on for a model
            :meth:`from_pretrained` loaded, off for one passed in), ``use_token_type_ids``,
            ``guidance_scale``, ``num_candidates`` (the reply then comes as one piece when
            streamed; the candidates are in :attr:`last_candidates`), ``mmi_weight``,
            ``distinct_first_tokens``, ``generation_config`` and any ``GenerationConfig`` field
            (``do_sample`` (default ``True``), ``top_p`` (``0.8``), ``top_k`` (``0``: off),
            ``temperature`` (``1.0``), ``max_new_tokens`` (``64``), ``repetition_penalty``,
            ``num_beams``...).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_turns: int = 5,
        persona: str | None = None,
        mmi_contexts: Sequence[str] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 2:
            raise ValueError(
                f"`max_turns` must be an integer >= 2 (the user's message and the reply), got "
                f"{max_turns!r}."
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer (or None), got {seed!r}.")
        if mmi_contexts is not None and not valid_mmi_contexts(mmi_contexts):
            raise ValueError(
                "`mmi_contexts` must be a list of 1 to 16 non-empty messages (or None: the empty "
                f"conversation), got {mmi_contexts!r}."
            )
        self.engine = Engine(model, tokenizer, **options)
        self.max_turns = max_turns
        self.seed = seed
        self.mmi_contexts = list(mmi_contexts) if mmi_contexts else None
        self.last_candidates: list[Candidate] = []
        self.last_turn: TurnStats | None = None
        self._persona: str | None = None
        self._persona_length = 0
        self.persona = persona
        self._history: list[dict[str, str]] = []
        self._generator: torch.Generator | None = None
        self._busy = False

    model = _engine_attribute("model")
    tokenizer = _engine_attribute("tokenizer")
    tokens = _engine_attribute("tokens")
    generation_config = _engine_attribute("generation_config")
    max_len = _engine_attribute("max_len")
    max_new_tokens = _engine_attribute("max_new_tokens")
    use_token_type_ids = _engine_attribute("use_token_type_ids")
    prefix_cache = _engine_attribute("prefix_cache")
    cache_implementation = _engine_attribute("cache_implementation")
    compile = _engine_attribute("compile")
    guidance_scale = _engine_attribute("guidance_scale")
    num_candidates = _engine_attribute("num_candidates")
    mmi_weight = _engine_attribute("mmi_weight")
    distinct_first_tokens = _engine_attribute("distinct_first_tokens")
    device = _engine_attribute("device")

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

    # ------------------------------------------------------------------ state
    @property
    def history(self) -> list[dict[str, str]]:
        """The conversation so far: ``{"role": "user"|"assistant", "content": str}`` dicts (a copy)."""
        return [dict(m) for m in self._history]

    @history.setter
    def history(self, messages: Sequence[Mapping[str, str]]) -> None:
        self._history = validate_messages(messages, "history")

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

    def describe_decoding(self) -> str:
        """One line on how replies are decoded, e.g. ``"sampling (temperature 0.7, top-p 0.9),
        repetition penalty 1.2, context guidance 1.3, best of 6 candidates (MMI 0.5); up to 48
        tokens; window of 3 utterances"``."""
        line = describe_decoding(
            self.generation_config,
            guidance_scale=self.guidance_scale,
            num_candidates=self.num_candidates,
            mmi_weight=self.mmi_weight,
            mmi_contexts=len(self.mmi_contexts or ()),
        )
        return f"{line}; window of {self.max_turns} utterances"

    def reset(self) -> None:
        """Forget the conversation (and the prefix cache); re-seed when a ``seed`` was given."""
        self._history = []
        self.engine.forget()
        self.last_turn = None
        self._generator = None  # the next turn starts the seed's sequence again

    # ------------------------------------------------------------------ transcripts
    def save_transcript(self, path: str | Path) -> Path:
        """Write the conversation (persona and messages) to a JSON file and return its path."""
        return write_transcript(path, self.persona, self.max_turns, self.history)

    def load_transcript(self, path: str | Path) -> None:
        """Continue a conversation saved by :meth:`save_transcript`.

        Also accepts a plain JSON list of messages (an optional first ``system`` message is the
        persona). Replaces the history and the persona.
        """
        persona, history = read_transcript(path)
        self.persona = persona
        self._history = history
        self.engine.forget()

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

    def _prepare(self, text: str) -> Turn:
        budget = self.max_len - self.max_new_tokens - 3 - self._persona_length
        text, truncated = fit_user_text(self.tokenizer, check_text(text), budget, self.max_len)
        return render_turn(
            self.tokenizer,
            self.tokens,
            self.messages_for(text),
            truncated=truncated,
            max_turns=self.max_turns - 1,
            max_len=self.max_len,
            reserve=self.max_new_tokens,
        )

    def _engine_call(self, turn: Turn) -> tuple[tuple, dict[str, Any]]:
        """The engine's arguments for a turn: the prompt, this turn's generator, the persona's
        no-conversation prompt (guidance) and the reference prompts (reranking)."""
        options: dict[str, Any] = {}
        if self.engine.samples and self.seed is not None:
            if self._generator is None:  # the seed's sequence, continued turn after turn
                self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
            options["generator"] = self._generator
        if self.guidance_scale != 1.0 or self.num_candidates > 1:
            options["unconditional"] = self.engine.no_conversation_prompt(self._persona)
        if self.num_candidates > 1 and self.mmi_contexts:  # else: the no-conversation one
            options["references"] = reference_prompts(
                self.tokenizer, self.tokens, self._persona, self.mmi_contexts
            )
        return (turn.input_ids, turn.token_type_ids), options

    def _finish(self, turn: Turn, result: Reply | None) -> str:
        """Take in an engine reply: the turn's statistics and candidates; the reply's text."""
        if result is None:
            return ""
        self.last_turn = replace(result.stats, truncated_input=turn.truncated)
        self.last_candidates = result.candidates
        return self.engine.decode(result.token_ids)

    def _record(self, turn: Turn, reply: str) -> None:
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
            self.last_candidates = []
            args, options = self._engine_call(turn)
            reply = self._finish(turn, self.engine.generate(*args, **options))
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

    def _stream(self, turn: Turn) -> Iterator[str]:
        self._check_idle()
        self._busy = True
        try:
            self.last_candidates = []
            args, options = self._engine_call(turn)
            tokens = self.engine.stream(*args, **options)
            sent = ""
            try:
                if tokens.incremental:
                    for piece in text_pieces(self.tokenizer, tokens):
                        sent += piece
                        yield piece
                else:  # one piece, once decided
                    for _ in tokens:
                        pass
            finally:
                tokens.close()
            reply = self._finish(turn, tokens.reply)
            if reply != sent:  # the streamed text can only lag the final decode
                if reply.startswith(sent):
                    yield reply[len(sent) :]
                else:
                    logger.debug("streamed %r but decoded %r", sent, reply)
            self._record(turn, reply)
        finally:
            self._busy = False
