"""Weighted sums of rewards, built per request.

    R(x, y) = sum_i w_i · R_i(x, y),   except  R = -inf  if any R_i(x, y) = -inf.

A hard constraint stays hard whatever its weight (weight 0 included: 0 · -inf is taken as
-inf, not NaN); a finite score with weight 0 contributes 0. Weights must be finite (negative
weights are allowed, e.g. a length penalty). Components are scored concurrently.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from decoders.protocols import Context
from rewards.base import TextReward


def weighted_sum(columns: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_i w_i · r_i over float64 score vectors, -inf wherever any r_i is -inf."""
    total = torch.zeros_like(columns[0], dtype=torch.float64)
    forbidden = torch.zeros_like(total, dtype=torch.bool)
    for col, w in zip(columns, weights, strict=True):
        col = col.to(torch.float64)
        forbidden |= torch.isneginf(col)
        if w != 0.0:
            total = total + w * torch.where(torch.isneginf(col), torch.zeros_like(col), col)
    return torch.where(forbidden, torch.full_like(total, -math.inf), total)


def _check_items(items: Iterable[tuple[Any, float]]) -> list[tuple[Any, float]]:
    out = []
    for item in items:
        try:
            reward, weight = item
        except (TypeError, ValueError):
            raise ValueError(f"combine() takes (reward, weight) pairs, got {item!r}") from None
        weight = float(weight)
        if not math.isfinite(weight):
            raise ValueError(f"reward weight must be finite, got {weight!r}")
        if not hasattr(reward, "score"):
            raise ValueError(f"{reward!r} is not a reward (no score method)")
        out.append((reward, weight))
    if not out:
        raise ValueError("combine() needs at least one (reward, weight) pair")
    return out


class CombinedReward:
    """Token-level weighted sum (implements ``decoders.protocols.Reward``)."""

    def __init__(self, items: Iterable[tuple[Any, float]]):
        self.items = _check_items(items)
        self.name = " + ".join(f"{w:g}*{getattr(r, 'name', type(r).__name__)}" for r, w in self.items)

    async def score(self, prompt: Context, completions: Sequence[Context]) -> torch.Tensor:
        if len(completions) == 0:
            return torch.empty(0, dtype=torch.float64)
        cols = await asyncio.gather(*(r.score(prompt, completions) for r, _ in self.items))
        return weighted_sum(cols, [w for _, w in self.items])

    async def aclose(self) -> None:
        for r, _ in self.items:
            close = getattr(r, "aclose", None)
            if close is not None:
                await close()


class CombinedTextReward(CombinedReward, TextReward):
    """Weighted sum of text rewards: also has ``score_text``."""

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        if not completions:
            return []
        cols = await asyncio.gather(*(r.score_text(prompt, list(completions)) for r, _ in self.items))
        tensors = [torch.tensor([float(v) for v in c], dtype=torch.float64) for c in cols]
        return weighted_sum(tensors, [w for _, w in self.items]).tolist()


def combine(items: Iterable[tuple[Any, float]]) -> CombinedReward:
    """``combine([(reward, weight), ...])`` -> one reward (text-capable if all parts are)."""
    checked = _check_items(items)
    if all(hasattr(r, "score_text") for r, _ in checked):
        return CombinedTextReward(checked)
    return CombinedReward(checked)
