"""How the server runs generations: one :class:`~gpt2chat.ChatSession` per request, under one
:class:`Scheduler` (the server's only concurrency limit).

:class:`Scheduler` hands out ``max_concurrency`` slots, first come first served; a request holds
one for its whole generation and waits in the queue until then (``max_queue`` long: the routes
answer ``429`` beyond). :class:`Jobs` builds each request's session around the one loaded model
and runs its reply: the session's engine generates in its own thread (with a ``torch.Generator``
per request: a ``seed`` gives the reply ``ChatSession(..., seed=seed)`` gives, whatever runs
beside it, with no lock), and the pieces are handed over through worker threads. Closing a
job's iterator early (the client left) stops its generation before its slot is given back.
The HTTP routes are ``app.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..chat.session import ChatSession
from .protocol import ChatRequest, ServeSettings, _bad

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["Job", "Jobs", "Scheduler"]


class Scheduler:
    """Generation slots, first come first served, handed out from the event loop's thread.

    At most ``max_concurrency`` generations hold a slot; the others wait in order. A waiter that
    is cancelled (its client left) leaves the queue and holds nothing.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.max_concurrency = max_concurrency
        self.active = 0
        self._queue: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _release(self) -> None:
        self.active -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        while self._queue and self.active < self.max_concurrency:
            future = self._queue.popleft()
            if not future.done():
                self.active += 1
                future.set_result(None)

    async def _acquire(self) -> None:
        if not self._queue and self.active < self.max_concurrency:
            self.active += 1
            return
        future = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # granted just as the waiter was cancelled
            else:
                future.cancel()
                if future in self._queue:
                    self._queue.remove(future)
            raise

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a slot, hold it for the ``async with`` block."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()


_END = object()


@dataclass
class Job:
    """One request's session and its (not yet started) reply iterator."""

    session: ChatSession
    pieces: Iterator[str]
    max_new_tokens: int
    outcome: str = "pending"


@dataclass
class Counters:
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    rejected: int = 0


class Jobs:
    """The loaded model and tokenizer, the :class:`Scheduler`, and a session per request."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: ServeSettings,
        *,
        model_name: str,
        context_size: int,
        use_token_type_ids: bool | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.model_name = model_name
        self.context_size = context_size
        self.use_token_type_ids = use_token_type_ids
        self.scheduler = Scheduler(settings.max_concurrency)
        self.counters = Counters()
        self.created = int(time.time())

    def prepare(self, request: ChatRequest) -> Job:
        """Build the request's session and check its prompt (blocking: tokenises).

        Raises:
            APIError: the request does not fit the model (``400``).
        """
        seed = None if request.seed is None else request.seed % 2**32
        try:
            session = ChatSession(
                self.model,
                self.tokenizer,
                max_turns=self.settings.max_turns,
                persona=request.persona,
                max_len=self.settings.max_len,
                prefix_cache=False,
                use_token_type_ids=self.use_token_type_ids,
                seed=seed,
                **request.options,
            )
            session.history = request.history
            pieces = session.stream(request.text)  # renders and checks now, generates later
        except ValueError as err:
            raise _bad(str(err), code="invalid_value") from None
        return Job(session, pieces, request.max_new_tokens)

    async def run(self, job: Job) -> AsyncIterator[str]:
        """Wait for a slot, then yield the reply's pieces as they are generated.

        Closing this iterator early (the client left) stops the generation before the slot is
        given back.
        """
        async with self.scheduler.slot():
            try:
                while True:
                    piece = await anyio.to_thread.run_sync(_next_piece, job.pieces)
                    if piece is _END:
                        break
                    yield piece
                job.outcome = "completed"
                self.counters.completed += 1
            except Exception:
                job.outcome = "failed"
                self.counters.failed += 1
                raise
            finally:
                if job.outcome == "pending":
                    job.outcome = "cancelled"
                    self.counters.cancelled += 1
                    logger.info("Client gone: generation stopped, slot freed.")
                with anyio.CancelScope(shield=True):
                    # ChatSession.stream stops its engine (and joins its thread) when closed.
                    await anyio.to_thread.run_sync(_close, job.pieces)

    def finish_reason(self, job: Job) -> str:
        turn = job.session.last_turn
        return (
            "length" if turn is not None and turn.generated_tokens >= job.max_new_tokens else "stop"
        )

    def usage(self, job: Job) -> dict[str, int]:
        turn = job.session.last_turn
        prompt = turn.prompt_tokens if turn else 0
        completion = turn.generated_tokens if turn else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def reply(self, job: Job, streamed: str) -> str:
        """The recorded reply (what ``ChatSession.send`` returns) once the stream ended."""
        history = job.session.history
        if history and history[-1]["role"] == "assistant":
            return history[-1]["content"]
        return streamed


def _next_piece(pieces: Iterator[str]) -> Any:
    return next(pieces, _END)


def _close(pieces: Iterator[str]) -> None:
    close: Callable[[], None] | None = getattr(pieces, "close", None)
    if close is not None:
        close()
