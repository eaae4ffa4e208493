"""The one registry of guidance methods: what each samples, what it needs, how it runs.

Everything else reads this table: ``GuidanceSpec`` validates ``method`` against it,
``decoders.generate`` dispatches through it, the server resolves value models and rewards and
decides what streams from it, and ``tilt eval`` builds its grid from it.

    method       samples                                          value      reward   streams
    none         pi_ref (temperature / top-k / top-p shaping)     -          optional yes
    token        softmax(l_ref + Q/beta)  (= pi* when Q = Q*)     needed     optional yes
    smc          pi*, consistent in particles (Q as twist)        optional   needed   no
    importance   pi*, consistent in particles (SIR)               -          needed   no
    best_of_n    argmax_R of N base draws (baseline)              -          needed   no
    blockwise    Controlled-Decoding blocks, argmax / exp(V/beta) needed     needed   no

"none" is the base model's own sampling; it is called "none" everywhere (API, eval, metrics).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from decoders.samplers import base, best_of_n, blockwise, importance, smc, token

Method = Literal["none", "token", "smc", "importance", "best_of_n", "blockwise"]


@dataclass(frozen=True)
class MethodInfo:
    """What one method needs and offers.

    needs_value     it cannot run without a value model
    uses_value      it takes a value model when one is there (smc uses it as its twist)
    needs_reward    it cannot run without a reward
    streams_tokens  its tokens are final once sampled (no resampling or block selection), so
                    they can be streamed as they arrive; the others stream each finished choice
    particles       it draws ``spec.particles`` candidates per returned sample
    """

    name: str
    sample: Callable[..., Awaitable[Any]]
    needs_value: bool
    uses_value: bool
    needs_reward: bool
    streams_tokens: bool
    particles: bool
    summary: str


METHODS_INFO: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("none", base.sample, needs_value=False, uses_value=False, needs_reward=False,
               streams_tokens=True, particles=False,
               summary="ancestral sampling from the base model"),
    MethodInfo("token", token.sample, needs_value=True, uses_value=True, needs_reward=False,
               streams_tokens=True, particles=False,
               summary="base logits plus Q/beta at every step"),
    MethodInfo("smc", smc.sample, needs_value=False, uses_value=True, needs_reward=True,
               streams_tokens=False, particles=True,
               summary="(twisted) sequential Monte Carlo with resampling"),
    MethodInfo("importance", importance.sample, needs_value=False, uses_value=False,
               needs_reward=True, streams_tokens=False, particles=True,
               summary="sampling-importance-resampling from base draws"),
    MethodInfo("best_of_n", best_of_n.sample, needs_value=False, uses_value=False,
               needs_reward=True, streams_tokens=False, particles=True,
               summary="the highest-reward of N base draws"),
    MethodInfo("blockwise", blockwise.sample, needs_value=True, uses_value=True,
               needs_reward=True, streams_tokens=False, particles=False,
               summary="blocks of M tokens, K candidates, selected by value"),
)}

METHODS: tuple[str, ...] = tuple(METHODS_INFO)


def method_info(name: str) -> MethodInfo:
    """The registry entry of ``name``; ValueError listing the methods when unknown."""
    try:
        return METHODS_INFO[name]
    except KeyError:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}") from None
