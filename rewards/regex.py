"""Regex hard constraint: an energy of 0 where the completion matches, -inf where not.

    R(x, y) = 0 if match(pattern, y) else -inf

``mode="fullmatch"`` (spec ``regex:PATTERN``) requires the whole completion to match;
``mode="search"`` (spec ``regex_search:PATTERN``) requires a match anywhere. Flags go inline
in the pattern, e.g. ``(?s)`` for dot-matches-newline, ``(?i)`` for case-insensitive.
"""

from __future__ import annotations

import math
import re
from typing import Any

from rewards.base import TextReward

MODES = ("fullmatch", "search")


class RegexConstraint(TextReward):
    def __init__(self, pattern: str, mode: str = "fullmatch", codec: Any = None):
        super().__init__(codec)
        if mode not in MODES:
            raise ValueError(f"unknown regex mode {mode!r}; choose one of {', '.join(MODES)}")
        try:
            self.regex = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"bad regex {pattern!r}: {e}") from None
        self.mode = mode
        self.name = f"regex:{pattern}" if mode == "fullmatch" else f"regex_search:{pattern}"

    def allowed(self, text: str) -> bool:
        match = self.regex.fullmatch if self.mode == "fullmatch" else self.regex.search
        return match(text) is not None

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        return [0.0 if self.allowed(y) else -math.inf for y in completions]
