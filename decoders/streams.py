"""Particles that keep their engine request across block ends (block SMC on a ``StreamSampler``).

Block SMC (``decoders.samplers.smc``) advances its particles a block at a time and resamples
at block ends. Starting a new request per particle per block makes the engine prefill the
context again each time; with streams every particle's request keeps running, and at a block
end

    first copy of a drawn ancestor      keeps the ancestor's running request
    further copies of that ancestor     open a new request from the block-end prefix
    particles not drawn, or complete    their requests are aborted

so a block end without resampling costs the engine nothing.

Why this stays exact: a stream's tokens past a block end are draws from q(. | prefix) made
with the stream's own randomness (its seed), while the weights, the twist and the resampling
at that block end depend only on the prefixes and the sampler's generator. Given the
resampled prefix, the first copy's continuation is therefore a fresh draw from q, exactly as
a new request's would be; further copies get fresh seeds, so copies are independent. The
tests check it with streams that run ahead to the end of the completion before anything is
read (tests/decoders/test_sampler_stats.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import torch

from decoders.blocks import seeds_from
from decoders.protocols import Block, Context, Guidance, LanguageModel, ParticleStream, ValueModel


def can_stream(lm: LanguageModel, value: ValueModel | None) -> bool:
    """Streams when the engine opens them and the guidance (if any) runs inside it."""
    return hasattr(lm, "open_stream") and (value is None or hasattr(value, "native_name"))


class ParticleStreams:
    """One optional running stream per particle (flat index), following resampling."""

    def __init__(self, lm: LanguageModel, size: int, value: ValueModel | None, beta: float,
                 generator: torch.Generator):
        self.lm, self.generator = lm, generator
        self.guidance = None if value is None else Guidance(value.native_name, beta)  # type: ignore[attr-defined]
        self.streams: list[ParticleStream | None] = [None] * size
        self.opened = 0  # requests started (particles + copies made by resampling)

    async def next_blocks(self, idx: Sequence[int], contexts: Sequence[Context],
                          caps: Sequence[int], remaining: Sequence[int]) -> list[Block]:
        """The next block of up to caps[j] tokens of particle idx[j]; a particle without a
        stream opens one after contexts[j] for its remaining[j] tokens."""
        new = [j for j, i in enumerate(idx) if self.streams[i] is None]
        for j, seed in zip(new, seeds_from(self.generator, len(new)), strict=True):
            self.streams[idx[j]] = self.lm.open_stream(  # type: ignore[attr-defined]
                list(contexts[j]), int(remaining[j]), seed, self.guidance)
        self.opened += len(new)
        return list(await asyncio.gather(
            *(self.streams[i].next_block(int(k)) for i, k in zip(idx, caps, strict=True))))

    def follow(self, perm: Sequence[int] | None, done: Sequence[bool]) -> None:
        """After resampling (particle j <- ancestor perm[j]; None: none happened): each drawn
        ancestor's stream goes to its first copy, the others are aborted; so are the streams of
        complete particles (``done``)."""
        if perm is not None:
            moved: list[ParticleStream | None] = [None] * len(self.streams)
            kept: set[int] = set()
            for j, a in enumerate(perm):
                if a not in kept:
                    moved[j] = self.streams[a]
                    kept.add(a)
            for a, s in enumerate(self.streams):
                if a not in kept and s is not None:
                    s.close()
            self.streams = moved
        for j, d in enumerate(done):
            if d and self.streams[j] is not None:
                self.streams[j].close()
                self.streams[j] = None

    def close(self) -> None:
        """Abort every stream still open."""
        for s in self.streams:
            if s is not None:
                s.close()
        self.streams = [None] * len(self.streams)

