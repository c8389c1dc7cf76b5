"""Trainer callbacks."""

from __future__ import annotations

import logging
import time

from transformers import ProgressCallback, TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["LossOnProgressBar", "TimeBudgetCallback"]


class TimeBudgetCallback(TrainerCallback):
    """Stop training before the step that would end after ``seconds`` of training.

    The training length is then ``min(max_steps, what fits in the budget)``; the budget counts
    from the start of the first step (model loading and evaluation come on top).

    Args:
        seconds: the budget; ``0`` or ``None`` means no limit.
    """

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError(f"`seconds` must be >= 0 (0: no limit), got {seconds}.")
        self.seconds = seconds or 0.0
        self.start: float | None = None
        self.first_step = 0
        #: The step training was stopped at by the budget (``None``: it was not).
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        self.first_step = state.global_step  # a resumed run starts past 0

    def on_step_end(self, args, state, control, **kwargs):
        if not self.seconds or self.start is None:
            return
        done = state.global_step - self.first_step
        if done <= 0 or state.global_step >= state.max_steps:
            return
        elapsed = time.perf_counter() - self.start
        if elapsed + elapsed / done > self.seconds:
            control.should_training_stop = True
            control.should_save = True
            self.stopped_at = state.global_step
            logger.warning(
                "Time budget of %.0f s reached after %d of %d steps: stopping training.",
                self.seconds,
                state.global_step,
                state.max_steps,
            )


class LossOnProgressBar(ProgressCallback):
    """transformers' progress bar with the latest training loss on it, instead of a printed dict
    per log line (the bar keeps its ETA). Replace the default with
    ``trainer.pop_callback(ProgressCallback)`` then ``trainer.add_callback(LossOnProgressBar())``
    (``gpt2chat demo`` does)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        bar = self.training_bar
        if state.is_world_process_zero and bar is not None and logs and "loss" in logs:
            bar.set_postfix(loss=f"{float(logs['loss']):.3f}", refresh=False)
