"""VADER sentiment (the ``vaderSentiment`` package): the demo task's positivity reward.

    R(x, y) = compound(y)  in [-1, 1]

VADER's compound score of the completion text alone (the prompt is not scored). ``vader:pos``,
``vader:neg`` and ``vader:neu`` select VADER's other scores instead (proportions in [0, 1]).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rewards.base import TextReward

FIELDS = ("compound", "pos", "neg", "neu")


class VaderReward(TextReward):
    def __init__(self, field: str = "compound", codec: Any = None):
        super().__init__(codec)
        if field not in FIELDS:
            raise ValueError(f"unknown VADER score {field!r}; choose one of {', '.join(FIELDS)}")
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.field = field
        self.name = "vader" if field == "compound" else f"vader:{field}"
        self._analyzer = SentimentIntensityAnalyzer()

    def score_one(self, text: str) -> float:
        return float(self._analyzer.polarity_scores(text)[self.field])

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        # ~0.1 ms per sentence, but a batch of particles adds up: off the event loop.
        return await asyncio.to_thread(lambda: [self.score_one(y) for y in completions])
