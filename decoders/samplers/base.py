"""``none``: ancestral sampling from pi_ref (temperature, top-k, top-p, seed), plus shared helpers.

Per sample: log_weight = log pi_ref(y) + R/beta - log q(y) (R = 0 without a reward) and
kl_to_base = sum over steps of the exact per-step KL(q || pi_ref) (0 at temperature 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from decoders import blocks as blk
from decoders.protocols import Block, Context, LanguageModel, OnTokens, Reward, SamplingParams
from decoders.results import Sample

if TYPE_CHECKING:  # annotations only: decoders.spec reads the method registry
    from decoders.spec import GuidanceSpec


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded by ``seed`` (fresh entropy when None)."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def params_of(spec: GuidanceSpec) -> SamplingParams:
    return SamplingParams(
        spec.temperature, spec.top_k, spec.top_p, min_p=spec.min_p,
        repetition_penalty=spec.repetition_penalty, presence_penalty=spec.presence_penalty,
        frequency_penalty=spec.frequency_penalty, logit_bias=spec.logit_bias,
        min_tokens=spec.min_tokens, ignore_eos=spec.ignore_eos, stop=tuple(spec.stop),
        stop_token_ids=tuple(spec.stop_token_ids))


async def score(reward: Reward | None, prompt: Context, completions: Sequence[Sequence[int]]) -> list[float] | None:
    """R(x, y) for each completion as floats (None without a reward)."""
    if reward is None:
        return None
    if len(completions) == 0:
        return []
    values = await reward.score(list(prompt), [list(c) for c in completions])
    return [float(v) for v in torch.as_tensor(values, dtype=torch.float64)]


def block_logprobs(b: Block) -> tuple[float, float]:
    """(log pi_ref(y), log q(y)) of a block, EOS step included when finished."""
    base = math.fsum(b.base_logprobs) + ((b.eos_base_logprob or 0.0) if b.finished else 0.0)
    prop = math.fsum(b.proposal_logprobs) + ((b.eos_proposal_logprob or 0.0) if b.finished else 0.0)
    return base, prop


def log_weight(base_lp: float, prop_lp: float, r: float | None, beta: float) -> float:
    """log pi_ref(y) + R/beta - log q(y), with R = -inf giving -inf (never NaN)."""
    tilt = 0.0 if r is None else r / beta
    if math.isinf(tilt) and tilt < 0:
        return -math.inf
    return base_lp + tilt - prop_lp


def samples_from_blocks(blocks: Sequence[Block], rewards: list[float] | None, beta: float) -> list[Sample]:
    """Samples with reward, log_weight, kl_to_base (exact per-step KL when the block has it)."""
    out = []
    for i, b in enumerate(blocks):
        base_lp, prop_lp = block_logprobs(b)
        r = None if rewards is None else rewards[i]
        kl = b.extra.get("kl")
        if kl is None:  # single-path estimate log q(y) - log pi_ref(y)
            kl = prop_lp - base_lp
        out.append(Sample(tokens=list(b.tokens), finished=b.finished, reward=r,
                          log_weight=log_weight(base_lp, prop_lp, r, beta), kl_to_base=float(kl),
                          base_logprob=base_lp, token_logprobs=list(b.proposal_logprobs)))
    return out


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, reward: Reward | None = None,
                 on_tokens: OnTokens | None = None) -> list[Sample]:
    """n ancestral samples from pi_ref shaped by temperature / top-k / top-p."""
    g = make_generator(spec.seed)
    blocks = await blk.sample_blocks(lm, [list(prompt)] * spec.n, spec.max_tokens, g,
                                     params_of(spec), on_tokens=on_tokens)
    rewards = await score(reward, prompt, [b.tokens for b in blocks])
    return samples_from_blocks(blocks, rewards, spec.beta)
