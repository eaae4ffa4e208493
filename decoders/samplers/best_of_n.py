"""``best_of_n``: the common baseline: draw N from the (shaped) base, return the argmax of R.

Not consistent for pi*: its KL to pi_ref is at most log N - (N-1)/N, reported as kl_to_base.
log_weight is undefined (None).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from decoders import blocks as blk
from decoders.protocols import Context, LanguageModel, Reward, StopAt
from decoders.results import Sample
from decoders.samplers.base import block_logprobs, make_generator, params_of, score

if TYPE_CHECKING:  # annotations only: decoders.spec reads the method registry
    from decoders.spec import GuidanceSpec


def kl_bound(N: int) -> float:
    """KL(best-of-N || pi_ref) <= log N - (N - 1) / N."""
    return math.log(N) - (N - 1) / N


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, reward: Reward,
                 stop_at: StopAt | None = None) -> list[Sample]:
    """``spec.n`` independent best-of-``spec.particles`` draws (first index wins ties), each
    draw cut at its first stop before it is scored."""
    g = make_generator(spec.seed)
    n, N = spec.n, spec.particles
    blocks = await blk.sample_blocks(lm, [list(prompt)] * (n * N), spec.max_tokens, g, params_of(spec))
    blocks, _ = blk.stop_blocks(blocks, stop_at)
    rewards = torch.tensor(await score(reward, prompt, [b.tokens for b in blocks]), dtype=torch.float64)
    out = []
    for r in range(n):
        k = r * N + int(torch.argmax(rewards[r * N:(r + 1) * N]))
        b = blocks[k]
        base_lp, _ = block_logprobs(b)
        out.append(Sample(tokens=list(b.tokens), finished=b.finished, reward=float(rewards[k]),
                          log_weight=None, kl_to_base=kl_bound(N), base_logprob=base_lp,
                          token_logprobs=list(b.proposal_logprobs)))
    return out
