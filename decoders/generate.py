"""One entry point: ``await generate(lm, prompt_ids, spec, value=..., reward=...)``.

Dispatches ``spec.method`` through the registry (``decoders.methods``) and checks that the
method has what it needs (token: a value model; smc / importance / best_of_n: a reward;
blockwise: both). A value model with ``bind(prompt_ids, max_tokens, reward=...)`` (e.g.
``ExactValue``) is bound first. When a reward is given every Sample carries R(x, y).
"""

from __future__ import annotations

from collections.abc import Sequence

from decoders.methods import method_info
from decoders.protocols import LanguageModel, OnTokens, Reward, StopAt, ValueModel
from decoders.results import Sample
from decoders.spec import GuidanceSpec


def check(spec: GuidanceSpec, value: ValueModel | None, reward: Reward | None) -> None:
    """ValueError naming what ``spec.method`` lacks."""
    info = method_info(spec.method)
    if info.needs_value and value is None:
        raise ValueError(f"method {spec.method!r} needs a value model")
    if info.needs_reward and reward is None:
        raise ValueError(f"method {spec.method!r} needs a reward")


def bind_value(value, prompt_ids: Sequence[int], spec: GuidanceSpec, reward: Reward | None):
    """value.bind(prompt_ids, max_tokens, reward=reward) when the value model has ``bind``."""
    if value is None or not hasattr(value, "bind"):
        return value
    try:
        return value.bind(list(prompt_ids), spec.max_tokens, reward=reward)
    except TypeError:  # bind(prompt_ids, max_tokens) without a reward argument
        return value.bind(list(prompt_ids), spec.max_tokens)


async def generate(lm: LanguageModel, prompt_ids: Sequence[int], spec: GuidanceSpec, *,
                   value: ValueModel | None = None, reward: Reward | None = None,
                   on_tokens: OnTokens | None = None,
                   stop_at: StopAt | None = None) -> list[Sample]:
    """``spec.n`` samples by ``spec.method`` (streaming via ``on_tokens`` for none / token).

    ``stop_at`` (particle and selection methods): where a stop ends a completion early; those
    samplers truncate there, so the target is over the truncated sequences. ``none`` and
    ``token`` pass ``spec.stop`` / ``spec.stop_token_ids`` to the engine instead."""
    check(spec, value, reward)
    info = method_info(spec.method)
    if on_tokens is not None and not info.streams_tokens:
        raise ValueError(f"streaming (on_tokens) is supported for none and token, not {spec.method!r}")
    prompt = [int(t) for t in prompt_ids]
    kwargs: dict = {"reward": reward}
    if info.uses_value:
        kwargs["value"] = bind_value(value, prompt, spec, reward)
    if info.streams_tokens:
        kwargs["on_tokens"] = on_tokens
    elif stop_at is not None:
        kwargs["stop_at"] = stop_at
    return await info.sample(lm, prompt, spec, **kwargs)
