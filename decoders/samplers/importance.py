"""``importance``: sampling-importance-resampling from N base proposals (consistent in N).

Per run: y_1..y_N ~ pi_ref (temperature 1), log w_i = R(x, y_i) / beta (the proposal is the
base, so pi_ref / q = 1), log Z-hat = logsumexp(log w) - log N, and one y_i is returned with
probability w_i / sum w. As N grows the returned draw's law tends to pi*.
"""

from __future__ import annotations

import math

import torch

from decoders import blocks as blk
from decoders import resampling
from decoders.protocols import Context, LanguageModel, Reward
from decoders.results import ParticleDiagnostics, Sample
from decoders.samplers.base import block_logprobs, make_generator, score
from decoders.samplers.smc import kl_estimate, pick
from decoders.spec import GuidanceSpec

NEG_INF = float("-inf")


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, reward: Reward) -> list[Sample]:
    """``spec.n`` independent SIR runs of ``spec.particles`` base proposals each."""
    g = make_generator(spec.seed)
    n, N, beta = spec.n, spec.particles, spec.beta
    blocks = await blk.sample_blocks(lm, [list(prompt)] * (n * N), spec.max_tokens, g)
    rewards = torch.tensor(await score(reward, prompt, [b.tokens for b in blocks]), dtype=torch.float64)
    out = []
    for r in range(n):
        sl = slice(r * N, (r + 1) * N)
        log_w = torch.where(torch.isneginf(rewards[sl]), torch.full((N,), NEG_INF, dtype=torch.float64),
                            rewards[sl] / beta)
        lse = float(torch.logsumexp(log_w, 0))
        diag = ParticleDiagnostics(particles=N, ess_trace=[float(resampling.ess(log_w))],
                                   log_z_hat=lse - math.log(N) if not math.isinf(lse) else NEG_INF)
        k, diag.all_dead = pick(log_w, g)
        b = blocks[r * N + k]
        base_lp, prop_lp = block_logprobs(b)
        rew = float(rewards[r * N + k])
        out.append(Sample(tokens=list(b.tokens), finished=b.finished, reward=rew,
                          log_weight=NEG_INF if math.isinf(rew) and rew < 0 else base_lp + rew / beta - prop_lp,
                          kl_to_base=kl_estimate(resampling.normalise(log_w), rewards[sl], beta, diag.log_z_hat),
                          base_logprob=base_lp, token_logprobs=list(b.proposal_logprobs), particle=diag))
    return out
