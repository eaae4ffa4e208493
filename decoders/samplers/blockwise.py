"""``blockwise``: Controlled-Decoding style block selection with a value model.

Per run, repeat until the completion ends: draw K = ``candidates`` blocks of up to
M = ``block_size`` tokens from the (shaped) base, score each candidate state s' by

    V(s') = beta * logsumexp(l_ref(s', .) + Q(s', .) / beta)   (a complete candidate: R(x, y))

and keep one: the argmax (``block_select="argmax"``) or a draw with probability
proportional to exp(V / beta) (``"sample"``). Approximate: not a sampler of pi*.
Diagnostics: log_weight None; kl_to_base is the upper bound blocks * (log K - (K-1)/K)
(argmax) or blocks * log K (sample): a selection among K i.i.d. draws is within it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from decoders import blocks as blk
from decoders import resampling
from decoders.protocols import Context, LanguageModel, Reward, StopAt, ValueModel
from decoders.results import Sample
from decoders.samplers.base import block_logprobs, make_generator, params_of, score

if TYPE_CHECKING:  # annotations only: decoders.spec reads the method registry
    from decoders.spec import GuidanceSpec

NEG_INF = float("-inf")


async def candidate_values(lm: LanguageModel, value: ValueModel, reward: Reward, prompt: list[int],
                           states: list[list[int]], complete: list[bool], beta: float) -> torch.Tensor:
    """R for complete candidates, soft value V(s') for the others (one batched call each)."""
    out = torch.empty(len(states), dtype=torch.float64)
    done = [i for i, c in enumerate(complete) if c]
    open_ = [i for i, c in enumerate(complete) if not c]
    if done:
        out[done] = torch.tensor(await score(reward, prompt, [states[i] for i in done]), dtype=torch.float64)
    if open_:
        ctxs = [prompt + states[i] for i in open_]
        base = (await lm.logprobs(ctxs)).to(torch.float64)
        q = (await value.q_values(ctxs, beta)).to(torch.float64)
        out[open_] = beta * torch.logsumexp(blk.guided_logits(base, q, beta), dim=-1)
    return out


def select(values: torch.Tensor, how: str, beta: float, generator: torch.Generator) -> int:
    """argmax, or a draw proportional to exp(V / beta) (first candidate if all are -inf)."""
    if how == "argmax":
        return int(torch.argmax(values))
    w = resampling.normalise(values / beta)
    if not bool(w.sum() > 0):
        return 0
    return int(torch.multinomial(w, 1, generator=generator))


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, value: ValueModel,
                 reward: Reward, stop_at: StopAt | None = None) -> list[Sample]:
    """``spec.n`` blockwise runs, vectorised over runs and candidates; a candidate that
    reaches a stop is cut there and is complete (scored by R)."""
    g = make_generator(spec.seed)
    prompt = [int(t) for t in prompt]
    n, K, M, T, beta = spec.n, spec.candidates, spec.block_size, spec.max_tokens, spec.beta
    tokens = [[] for _ in range(n)]
    lps: list[list[float]] = [[] for _ in range(n)]
    base_lp, finished, rewards, nblocks = [0.0] * n, [False] * n, [0.0] * n, [0] * n
    active = list(range(n))
    while active:
        ctxs = [prompt + tokens[r] for r in active for _ in range(K)]
        caps = [min(M, T - len(tokens[r])) for r in active for _ in range(K)]
        cands = await blk.sample_blocks(lm, ctxs, caps, g, params_of(spec))
        cands, stopped = blk.stop_blocks(cands, stop_at, [c[len(prompt):] for c in ctxs])
        states = [c[len(prompt):] + b.tokens for c, b in zip(ctxs, cands, strict=True)]
        complete = [b.finished or st or len(s) >= T
                    for b, s, st in zip(cands, states, stopped, strict=True)]
        vals = await candidate_values(lm, value, reward, prompt, states, complete, beta)
        still = []
        for j, r in enumerate(active):
            k = j * K + select(vals[j * K:(j + 1) * K], spec.block_select, beta, g)
            b = cands[k]
            tokens[r] = states[k]
            lps[r] += b.proposal_logprobs
            base_lp[r] += block_logprobs(b)[0]
            nblocks[r] += 1
            if complete[k]:
                finished[r], rewards[r] = b.finished, float(vals[k])
            else:
                still.append(r)
        active = still
    per_block = math.log(K) - (K - 1) / K if spec.block_select == "argmax" else math.log(K)
    return [Sample(tokens=tokens[r], finished=finished[r], reward=rewards[r], log_weight=None,
                   kl_to_base=nblocks[r] * per_block, base_logprob=base_lp[r], token_logprobs=lps[r])
            for r in range(n)]
