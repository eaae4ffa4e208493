"""``importance``: sampling-importance-resampling from N base proposals (consistent in N).

Per run: y_1..y_N ~ pi_ref (temperature 1), log w_i = R(x, y_i) / beta (the proposal is the
base, so pi_ref / q = 1), log Z-hat = logsumexp(log w) - log N, and one y_i is returned with
probability w_i / sum w. As N grows the returned draw's law tends to pi*.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from decoders import blocks as blk
from decoders.protocols import Context, LanguageModel, Reward, StopAt
from decoders.results import ParticleDiagnostics, Sample
from decoders.samplers.base import block_logprobs, make_generator, score
from decoders.samplers.smc import log_weight, summarise_runs

if TYPE_CHECKING:  # annotations only: decoders.spec reads the method registry
    from decoders.spec import GuidanceSpec

NEG_INF = float("-inf")


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, reward: Reward,
                 stop_at: StopAt | None = None) -> list[Sample]:
    """``spec.n`` independent SIR runs of ``spec.particles`` base proposals each (each cut at
    its first stop: the proposal and the target are over truncated sequences, ratio 1)."""
    g = make_generator(spec.seed)
    n, N, beta = spec.n, spec.particles, spec.beta
    params = blk.stop_params(blk.PLAIN, spec.stop, spec.stop_token_ids)
    blocks = await blk.sample_blocks(lm, [list(prompt)] * (n * N), spec.max_tokens, g, params)
    blocks, _ = blk.stop_blocks(blocks, stop_at)
    rewards = torch.tensor(await score(reward, prompt, [b.tokens for b in blocks]), dtype=torch.float64)
    log_w = torch.where(torch.isneginf(rewards), rewards, rewards / beta).view(n, N)
    summary = summarise_runs(log_w, rewards.view(n, N), beta, torch.zeros(n, dtype=torch.float64), g)
    out = []
    for r, k in enumerate(summary.choice):
        b = blocks[r * N + k]
        base_lp, prop_lp = block_logprobs(b)
        rew = float(rewards[r * N + k])
        diag = ParticleDiagnostics(particles=N, ess_trace=[summary.ess[r]], log_z_hat=summary.log_z_hat[r],
                                   all_dead=summary.all_dead[r], survivors=summary.survivors[r])
        out.append(Sample(tokens=list(b.tokens), finished=b.finished, reward=rew,
                          log_weight=log_weight(base_lp, rew, prop_lp, beta), kl_to_base=summary.kl[r],
                          base_logprob=base_lp, token_logprobs=list(b.proposal_logprobs), particle=diag))
    return out
