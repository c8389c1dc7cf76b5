"""Streaming and what an engine call returns: :class:`TokenStream`, :class:`Reply`, :class:`TurnStats`.

:class:`TokenStream` runs an :class:`~gpt2chat.chat.engine.Engine` call in a worker thread and
hands its token ids to the consumer as ``generate`` produces them; closing it stops ``generate``
(a stopping criterion) and joins the thread. :func:`text_pieces` turns those ids into the text
pieces ``ChatSession.stream`` yields. The decoding itself is ``engine.py``'s.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch

from .rerank import Candidate

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "Call",
    "Prompt",
    "Reply",
    "StopFlag",
    "Tee",
    "TokenStream",
    "TurnStats",
    "text_pieces",
]

#: A prompt of the reference side (guidance, reranking): ``(ids, token types or None)``.
Prompt = tuple[Sequence[int], Sequence[int] | None]


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
class Reply:
    """One engine call's result: the generated ids (with the stop token when the reply ended
    by itself), what it cost, and the scored candidates (``num_candidates > 1``)."""

    token_ids: list[int]
    stats: TurnStats
    candidates: list[Candidate] = field(default_factory=list)


@dataclass
class Call:
    """One checked engine call: the prompt, its token types (``None``: not fed), the generator,
    the reference prompts."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    generator: torch.Generator | None
    unconditional: Prompt | None
    references: list[Prompt] | None


class StopFlag:
    """A ``StoppingCriteria`` that ends ``generate`` when the consumer of a stream goes away."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class Tee:
    """A streamer: records when the first generated token came, hands each one to ``on_token``."""

    def __init__(self, on_token=None) -> None:
        self.on_token = on_token
        self.prompt_seen = False
        self.first_token_time: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate's first call is the prompt
            self.prompt_seen = True
            return
        if self.first_token_time is None:
            self.first_token_time = time.perf_counter()
        if self.on_token is not None:
            for token in value.reshape(-1).tolist():
                self.on_token(token)

    def end(self) -> None:
        pass


_END = object()


class TokenStream:
    """The ids of one reply as they are generated (by a worker thread started at the first
    ``next``): one at a time, or all at the end when :attr:`incremental` is false (beam search,
    reranking). :attr:`reply` is the :class:`Reply` once the iteration ended. :meth:`close` (or
    leaving the iteration) stops the generation and waits for the thread."""

    def __init__(self, engine: Engine, call: Call) -> None:
        self.incremental = engine.streams_tokens
        self.reply: Reply | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = StopFlag()
        self._error: BaseException | None = None
        self._done = False
        self._thread = threading.Thread(
            target=self._work, args=(engine, call), name="gpt2chat-generate", daemon=True
        )

    def _work(self, engine: Engine, call: Call) -> None:
        try:
            on_token = self._queue.put if self.incremental else None
            self.reply = engine._run(call, on_token=on_token, stop=self._stop)
            if not self.incremental:
                for token in self.reply.token_ids:
                    self._queue.put(token)
        except BaseException as err:  # re-raised in the consumer's thread
            self._error = err
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self._done:
            raise StopIteration
        if self._thread.ident is None:
            self._thread.start()
        item = self._queue.get()
        if item is _END:
            self._done = True
            self._thread.join()
            if self._error is not None:
                raise self._error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the generation (if running) and wait for it to end."""
        self._stop.event.set()
        self._done = True
        if self._thread.ident is not None:
            self._thread.join()


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


def _decoded_pieces(tokenizer, token_ids: Iterator[int]) -> Iterator[str]:
    """The text of streamed token ids, in pieces as transformers' ``TextStreamer`` cuts them
    (whole words; nothing that could still change with the next token)."""
    from transformers import TextStreamer

    pieces: list[str] = []

    class Collect(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                pieces.append(text)

    streamer = Collect(tokenizer, skip_special_tokens=True)
    for token in token_ids:
        streamer.put(torch.tensor([token]))
        yield from pieces
        pieces.clear()
    streamer.end()
    yield from pieces


def text_pieces(tokenizer, token_ids: Iterator[int]) -> Iterator[str]:
    """A streamed reply's text in pieces, stripped like the recorded reply."""
    return _tidy_pieces(_decoded_pieces(tokenizer, token_ids))
