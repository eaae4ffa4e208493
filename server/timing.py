"""Clocks around a value model and a reward: the seconds one run spends in each.

    value = TimedValue(inner, clock)      # clock.seconds grows by the time in q_values
    reward = TimedReward(inner, clock)    # ... and in score
Everything else (``bind``, ``score_text``, metadata) is passed through to the wrapped object;
a prompt-bound value model (``bind``) is timed on the same clock.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import torch

from decoders.protocols import Reward, ValueModel

T = TypeVar("T")


class Clock:
    """Seconds accumulated by the calls it timed."""

    def __init__(self) -> None:
        self.seconds = 0.0

    async def time(self, call: Awaitable[T]) -> T:
        t = time.perf_counter()
        try:
            return await call
        finally:
            self.seconds += time.perf_counter() - t


class TimedValue:
    """A ``ValueModel`` whose ``q_values`` calls are timed on ``clock``."""

    def __init__(self, inner: ValueModel, clock: Clock):
        self._inner, self._clock = inner, clock

    async def q_values(self, contexts: Sequence[Sequence[int]], beta: float) -> torch.Tensor:
        return await self._clock.time(self._inner.q_values(contexts, beta))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "bind":  # a prompt-bound value model is timed too
            return lambda *a, **k: TimedValue(attr(*a, **k), self._clock)
        return attr


class TimedReward:
    """A ``Reward`` whose ``score`` calls are timed on ``clock``."""

    def __init__(self, inner: Reward, clock: Clock):
        self._inner, self._clock = inner, clock

    async def score(self, prompt: Sequence[int],
                    completions: Sequence[Sequence[int]]) -> torch.Tensor:
        return await self._clock.time(self._inner.score(prompt, completions))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
