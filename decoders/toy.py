"""Enumerable toy models: the ground truth every sampler is tested against.

``toy:vocab=V,len=T,seed=S`` is a random tabular autoregressive model over ids 0..V-1 with
EOS = V-1. Its next-token logits are a deterministic function of (seed, full context):
    l(s, .) = scale · z(seed, s),   z ~ N(0, I) drawn from a generator seeded by hash(seed, s)
and at most T tokens are generated (the sampler forces EOS at position T; ``max_len`` = T).

``toy:seed=S`` (reward) is R(x, y) = z(seed, x, y), a deterministic N(0, 1) draw per
(prompt, completion) pair.

Token id i renders as the text ``<i>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import torch

from decoders.protocols import Context


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def parse_spec(spec: str, prefix: str = "toy:") -> dict[str, int]:
    """``toy:vocab=8,len=4,seed=0`` -> {"vocab": 8, "len": 4, "seed": 0}."""
    if not spec.startswith(prefix):
        raise ValueError(f"not a toy spec: {spec!r} (expected {prefix}key=value,...)")
    body = spec[len(prefix):]
    out: dict[str, int] = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"bad toy spec item {item!r} in {spec!r}")
        out[key.strip()] = int(value)
    return out


class ToyLM:
    """Random tabular ARM; implements ``LanguageModel`` (float64 log-probs)."""

    def __init__(self, vocab: int = 8, max_len: int = 4, seed: int = 0, scale: float = 1.5):
        if vocab < 2:
            raise ValueError("toy vocab must be >= 2 (one token plus EOS)")
        if max_len < 1:
            raise ValueError("toy len must be >= 1")
        self.vocab_size = vocab
        self.eos_token_id = vocab - 1
        self.max_len = max_len
        self.seed = seed
        self.scale = scale
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    @classmethod
    def from_spec(cls, spec: str) -> ToyLM:
        kw = parse_spec(spec)
        unknown = set(kw) - {"vocab", "len", "seed"}
        if unknown:
            raise ValueError(f"unknown toy model keys {sorted(unknown)} in {spec!r}")
        return cls(vocab=kw.get("vocab", 8), max_len=kw.get("len", 4), seed=kw.get("seed", 0))

    @property
    def name(self) -> str:
        return f"toy:vocab={self.vocab_size},len={self.max_len},seed={self.seed}"

    def logprobs_row(self, context: Context) -> torch.Tensor:
        key = tuple(int(t) for t in context)
        row = self._cache.get(key)
        if row is None:
            logits = self.scale * _rng("lm", self.seed, key).standard_normal(self.vocab_size)
            row = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1)
            self._cache[key] = row
        return row

    async def logprobs(self, contexts: Sequence[Context]) -> torch.Tensor:
        if len(contexts) == 0:
            return torch.empty(0, self.vocab_size, dtype=torch.float64)
        return torch.stack([self.logprobs_row(c) for c in contexts])

    # Text rendering: id i <-> "<i>".
    def decode(self, ids: Sequence[int]) -> str:
        return "".join(f"<{int(i)}>" for i in ids)

    def encode(self, text: str) -> list[int]:
        ids = [int(m) for m in re.findall(r"<(\d+)>", text)]
        if "".join(f"<{i}>" for i in ids) != text.strip():
            raise ValueError(f"toy text must be a run of <id> tokens, got {text!r}")
        bad = [i for i in ids if i >= self.vocab_size - 1]
        if bad:
            raise ValueError(f"toy token ids must be < {self.vocab_size - 1} (EOS excluded), got {bad}")
        return ids


class ToyReward:
    """R(x, y) ~ N(0, 1), deterministic in (seed, prompt, completion); implements ``Reward``."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}

    @classmethod
    def from_spec(cls, spec: str) -> ToyReward:
        kw = parse_spec(spec)
        unknown = set(kw) - {"seed"}
        if unknown:
            raise ValueError(f"unknown toy reward keys {sorted(unknown)} in {spec!r}")
        return cls(seed=kw.get("seed", 0))

    @property
    def name(self) -> str:
        return f"toy:seed={self.seed}"

    def value(self, prompt: Context, completion: Context) -> float:
        key = (tuple(int(t) for t in prompt), tuple(int(t) for t in completion))
        r = self._cache.get(key)
        if r is None:
            r = float(_rng("reward", self.seed, key).standard_normal())
            self._cache[key] = r
        return r

    async def score(self, prompt: Context, completions: Sequence[Context]) -> torch.Tensor:
        return torch.tensor([self.value(prompt, y) for y in completions], dtype=torch.float64)
