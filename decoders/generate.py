"""One entry point: ``await generate(lm, prompt_ids, spec, value=..., reward=...)``.

Dispatches ``spec.method`` to ``decoders.samplers.<module>`` and checks that the method has
what it needs (token: a value model; smc / importance / best_of_n: a reward; blockwise: both).
A value model with ``bind(prompt_ids, max_tokens, reward=...)`` (e.g. ``ExactValue``) is bound
first. When a reward is given every Sample carries R(x, y).
"""

from __future__ import annotations

from collections.abc import Sequence

from decoders.protocols import LanguageModel, OnTokens, Reward, ValueModel
from decoders.results import Sample
from decoders.samplers import base, best_of_n, blockwise, importance, smc, token
from decoders.spec import GuidanceSpec

NEEDS: dict[str, tuple[bool, bool]] = {  # method -> (needs value, needs reward)
    "none": (False, False),
    "token": (True, False),
    "smc": (False, True),
    "importance": (False, True),
    "best_of_n": (False, True),
    "blockwise": (True, True),
}


def check(spec: GuidanceSpec, value: ValueModel | None, reward: Reward | None) -> None:
    """ValueError naming what ``spec.method`` lacks."""
    needs_value, needs_reward = NEEDS[spec.method]
    if needs_value and value is None:
        raise ValueError(f"method {spec.method!r} needs a value model")
    if needs_reward and reward is None:
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
                   on_tokens: OnTokens | None = None) -> list[Sample]:
    """``spec.n`` samples by ``spec.method`` (streaming via ``on_tokens`` for none / token)."""
    check(spec, value, reward)
    if on_tokens is not None and spec.method not in ("none", "token"):
        raise ValueError(f"streaming (on_tokens) is supported for none and token, not {spec.method!r}")
    prompt = [int(t) for t in prompt_ids]
    m = spec.method
    if m == "none":
        return await base.sample(lm, prompt, spec, reward=reward, on_tokens=on_tokens)
    if m == "best_of_n":
        return await best_of_n.sample(lm, prompt, spec, reward=reward)
    if m == "importance":
        return await importance.sample(lm, prompt, spec, reward=reward)
    value = bind_value(value, prompt, spec, reward)
    if m == "token":
        return await token.sample(lm, prompt, spec, value=value, reward=reward, on_tokens=on_tokens)
    if m == "smc":
        return await smc.sample(lm, prompt, spec, reward=reward, value=value)
    return await blockwise.sample(lm, prompt, spec, value=value, reward=reward)
