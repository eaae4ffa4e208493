"""``smc``: twisted sequential Monte Carlo with the value model as twist (docs/math.md).

N particles per run, n runs, all vectorised together (one ``lm.logprobs`` and one
``value.q_values`` call per step for every live particle of every run).

    twist          psi(s) = V(s) / beta,  V(s) = beta * logsumexp(l_ref(s, .) + Q(s, .) / beta)
                   (psi = 0 without a value model: plain SMC / importance sampling)
    proposal       q(a | s) = softmax(l_ref + Q / beta)  (temperature 1, no truncation)
    weight         log w_0 = psi(root);  a step s -> s + a multiplies w by
                   pi_ref(a | s) exp(psi(s + a) - psi(s)) / q(a | s),
                   with psi(s + a) replaced by R(x, y) / beta when y is complete (EOS or length T)
    resampling     when ESS < ess_threshold * N (systematic or multinomial); log Z-hat adds
                   log mean w at every resampling and at the end, so exp(log Z-hat) is unbiased
    output         one particle per run drawn by its final normalised weight
    blocks         with ``block`` = k > 1 a step advances every particle by up to k tokens drawn
                   from q (natively by the engine when it samples blocks and the value model
                   runs inside it); the weight gains pi_ref(a_1..k | s) / q(a_1..k | s) from the
                   block's log-probs and exp(psi_b(s') - psi_b(s)) at its end s' = s + a_1..k,
                   with the twist read off the value model alone:
                       psi_b(s') = Q(s' minus its last token, that token) / beta
                   (= V*(s') / beta when Q = Q*, as psi is; any twist keeps the target and an
                   unbiased Z-hat). No full-vocabulary base row is needed: the engine samples.
                   An engine that reports Q(s_i, y_i)/beta of its blocks' tokens
                   (``Block.extra["q_over_beta"]``) saves the value-model call.
                   Twist and resampling happen at block ends only. On an engine that opens
                   streams (``decoders.streams``) each particle's request keeps running
                   across block ends; resampling aborts the ones not drawn and starts
                   requests only for extra copies.

A particle whose twist is -inf (no allowed continuation) or whose reward is -inf has weight 0.
A run whose particles all have weight 0 reports log_z_hat = -inf and ``all_dead = True``;
``survivors`` counts the particles of a run whose final weight is non-zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from decoders import blocks as blk
from decoders import resampling
from decoders import streams as st
from decoders.protocols import Context, LanguageModel, Reward, StopAt, ValueModel
from decoders.results import ParticleDiagnostics, Sample
from decoders.samplers.base import block_logprobs, make_generator, score

if TYPE_CHECKING:  # annotations only: decoders.spec reads the method registry
    from decoders.spec import GuidanceSpec

NEG_INF = float("-inf")


def add_log(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b where either being -inf gives -inf (no inf - inf NaNs)."""
    bad = torch.isneginf(a) | torch.isneginf(b)
    return torch.where(bad, torch.full_like(a, NEG_INF), a + b)


@dataclass
class RunSummary:
    """Final per-run quantities of n weighted particle sets (lists of length n)."""

    choice: list[int]  # particle drawn by normalised final weight (0 when all are dead)
    log_z_hat: list[float]  # log Z-hat (-inf when all dead)
    ess: list[float]
    all_dead: list[bool]
    survivors: list[int]  # particles with non-zero final weight (log w > -inf); 0 when all dead
    kl: list[float | None]  # max(0, sum_i w_i R_i / beta - log Z-hat)  (None when all dead)


def summarise_runs(log_w: torch.Tensor, rewards: torch.Tensor, beta: float, log_z_prev: torch.Tensor,
                   generator: torch.Generator) -> RunSummary:
    """Vectorised over runs: log Z-hat = log_z_prev + logsumexp(log w) - log N, the ESS, one
    draw per run ~ w / sum w, and the KL(pi* || pi_ref) estimate from the weighted rewards
    (KL = E_{pi*}[R] / beta - log Z; clipped at 0, as few particles can make it negative)."""
    n, N = log_w.shape
    lse = torch.logsumexp(log_w, dim=1)
    log_z_hat = torch.where(torch.isneginf(lse), lse, log_z_prev + lse - math.log(N))
    w_bar = resampling.normalise(log_w)
    alive = w_bar.sum(dim=1) > 0
    choice = torch.zeros(n, dtype=torch.long)
    if bool(alive.any()):
        choice[alive] = torch.multinomial(w_bar[alive], 1, generator=generator).squeeze(1)
    weighted_r = torch.where(w_bar > 0, w_bar * rewards, torch.zeros_like(w_bar)).sum(dim=1) / beta
    kl = [None if not a else max(0.0, float(wr - lz))
          for a, wr, lz in zip(alive.tolist(), weighted_r, log_z_hat, strict=True)]
    survivors = (~torch.isneginf(log_w)).sum(dim=1)
    return RunSummary(choice.tolist(), log_z_hat.tolist(), resampling.ess(log_w).tolist(),
                      (~alive).tolist(), survivors.tolist(), kl)


def log_weight(base_lp: float, reward: float, prop_lp: float, beta: float) -> float:
    """log pi_ref(y) + R / beta - log q(y)  (-inf when R = -inf)."""
    return NEG_INF if math.isinf(reward) and reward < 0 else base_lp + reward / beta - prop_lp


class _Particles:
    """Per-particle state of n runs x N particles (flat index = run * N + particle)."""

    def __init__(self, n: int, N: int):
        B = n * N
        self.n, self.N = n, N
        f64 = dict(dtype=torch.float64)
        self.tokens: list[list[int]] = [[] for _ in range(B)]
        self.tok_lps: list[list[float]] = [[] for _ in range(B)]
        self.done = torch.zeros(B, dtype=torch.bool)
        self.finished = torch.zeros(B, dtype=torch.bool)
        self.log_w = torch.zeros(B, **f64)
        self.twist = torch.zeros(B, **f64)
        self.base_lp = torch.zeros(B, **f64)
        self.prop_lp = torch.zeros(B, **f64)
        self.reward = torch.full((B,), float("nan"), **f64)
        self.end_q = torch.full((B,), float("nan"), **f64)  # engine's Q/beta of the last token
        self.row = torch.full((B,), -1, dtype=torch.long)  # row of this step's model outputs

    def take(self, perm: torch.Tensor) -> None:
        """Replace every particle by its ancestor perm[i] (after resampling)."""
        for name in ("done", "finished", "log_w", "twist", "base_lp", "prop_lp", "reward", "row",
                     "end_q"):
            setattr(self, name, getattr(self, name)[perm])
        p = perm.tolist()
        self.tokens = [list(self.tokens[a]) for a in p]
        self.tok_lps = [list(self.tok_lps[a]) for a in p]


async def run_smc(lm: LanguageModel, prompt: Context, reward: Reward, *, n: int, particles: int,
                  max_tokens: int, beta: float, generator: torch.Generator,
                  value: ValueModel | None = None, ess_threshold: float = 0.5,
                  scheme: str = "systematic", stop_at: StopAt | None = None,
                  block: int = 1) -> list[Sample]:
    """n independent SMC runs of ``particles`` particles each; one weighted draw per run.
    A particle that reaches a stop (``stop_at``) is complete there, as at EOS: its last
    step's twist is replaced by R(truncated y) / beta. ``block``: tokens per step (above)."""
    prompt = [int(t) for t in prompt]
    N, eos = particles, int(lm.eos_token_id)
    P = _Particles(n, N)
    diags = [ParticleDiagnostics(particles=N) for _ in range(n)]
    log_z = torch.zeros(n, dtype=torch.float64)
    log_N = math.log(N)
    if block > 1:  # block SMC: the engine samples, the value model twists
        streams = (st.ParticleStreams(lm, n * N, value, beta, generator)
                   if st.can_stream(lm, value) else None)
        try:
            while live := (~P.done).nonzero().squeeze(1).tolist():
                ended = await _advance_blocks(P, live, lm, prompt, block, max_tokens, generator,
                                              value, beta, stop_at, streams)
                await _end(P, ended, reward, prompt, beta)
                await _twist_at_block_end(P, [i for i in live if not P.done[i]], value, prompt,
                                          beta)
                perm = _resample(P, diags, log_z, ess_threshold, scheme, generator, log_N)
                if streams is not None:
                    streams.follow(perm, P.done.tolist())
        finally:  # also on cancellation: no request outlives the call
            if streams is not None:
                streams.close()
        return _finish(P, diags, log_z, beta, generator)
    while True:
        active = (~P.done).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        states = [prompt + P.tokens[i] for i in active.tolist()]
        base = (await lm.logprobs(states)).to(torch.float64)
        q = None if value is None else (await value.q_values(states, beta)).to(torch.float64)
        psi = torch.logsumexp(blk.guided_logits(base, q, beta), dim=-1)
        # Twist update psi(s_t) - psi(s_{t-1}); psi = -inf kills the particle.
        P.log_w[active] = add_log(P.log_w[active], psi - P.twist[active])
        P.twist[active] = psi
        dead = active[torch.isneginf(psi)]
        P.done[dead] = True
        P.reward[dead] = NEG_INF
        P.row.fill_(-1)
        P.row[active] = torch.arange(active.numel())
        _resample(P, diags, log_z, ess_threshold, scheme, generator, log_N)
        # Propagate every live particle one token.
        live = (~P.done).nonzero().squeeze(1)
        if live.numel() == 0:
            break
        rows = P.row[live]
        log_q = blk.step_policy(base[rows], None if q is None else q[rows], beta)
        tok = blk.draw(log_q, generator)
        lp_ref = base[rows, tok]
        lp_q = log_q[torch.arange(live.numel()), tok]
        P.log_w[live] += lp_ref - lp_q
        P.base_lp[live] += lp_ref
        P.prop_lp[live] += lp_q
        ended = []
        for i, a, lq in zip(live.tolist(), tok.tolist(), lp_q.tolist(), strict=True):
            if a == eos:
                ended.append(i)
                continue
            P.tokens[i].append(a)
            P.tok_lps[i].append(lq)
            if len(P.tokens[i]) >= max_tokens or (
                    stop_at is not None and stop_at(P.tokens[i]) is not None):
                ended.append(i)
        P.finished[live[tok == eos]] = True
        await _end(P, ended, reward, prompt, beta)
    return _finish(P, diags, log_z, beta, generator)


async def _end(P: _Particles, ended: list[int], reward: Reward, prompt: list[int],
               beta: float) -> None:
    """Complete particles ``ended``: score them and replace their twist psi(s) by R / beta."""
    if not ended:
        return
    idx = torch.tensor(ended)
    P.done[idx] = True
    r = torch.tensor(await score(reward, prompt, [P.tokens[i] for i in ended]), dtype=torch.float64)
    P.reward[idx] = r
    P.log_w[idx] = add_log(P.log_w[idx], add_log(r / beta, -P.twist[idx]))


async def _twist_at_block_end(P: _Particles, idx: list[int], value: ValueModel | None,
                              prompt: list[int], beta: float) -> None:
    """log w += psi_b(s') - psi_b(s) for the particles ``idx`` (psi_b = 0 without a value
    model); psi_b = -inf kills the particle."""
    if value is None or not idx:
        return
    at = torch.tensor(idx)
    psi = P.end_q[at].clone()  # reported by the engine, else from the value model
    ask = torch.isnan(psi).nonzero().squeeze(1).tolist()
    if ask:
        q = (await value.q_values([prompt + P.tokens[idx[j]][:-1] for j in ask], beta))
        last = torch.tensor([P.tokens[idx[j]][-1] for j in ask])
        psi[ask] = q.to(torch.float64)[torch.arange(len(ask)), last] / beta
    P.log_w[at] = add_log(P.log_w[at], psi - P.twist[at])
    P.twist[at] = psi
    dead = at[torch.isneginf(psi)]
    P.done[dead] = True
    P.reward[dead] = NEG_INF


async def _advance_blocks(P: _Particles, live: list[int], lm: LanguageModel, prompt: list[int],
                          block: int, max_tokens: int, generator: torch.Generator,
                          value: ValueModel | None, beta: float, stop_at: StopAt | None,
                          streams: st.ParticleStreams | None = None) -> list[int]:
    """Every live particle gains a block of up to ``block`` tokens from q (cut at its first
    stop), from its stream when there are streams; log w += log pi_ref(block) - log q(block).
    The particles that ended (EOS, a stop or max_tokens)."""
    before = [P.tokens[i] for i in live]
    caps = [min(block, max_tokens - len(t)) for t in before]
    contexts = [prompt + t for t in before]
    if streams is not None:
        blocks = await streams.next_blocks(live, contexts, caps,
                                           [max_tokens - len(t) for t in before])
    else:
        blocks = await blk.sample_blocks(lm, contexts, caps, generator, value=value, beta=beta)
    blocks, stopped = blk.stop_blocks(blocks, stop_at, before)
    ended = []
    for i, b, cut in zip(live, blocks, stopped, strict=True):
        base_lp, prop_lp = block_logprobs(b)
        P.log_w[i] += base_lp - prop_lp
        P.base_lp[i] += base_lp
        P.prop_lp[i] += prop_lp
        P.tokens[i] = P.tokens[i] + list(b.tokens)
        P.tok_lps[i] = P.tok_lps[i] + list(b.proposal_logprobs)
        P.finished[i] = bool(b.finished)
        q = b.extra.get("q_over_beta")
        P.end_q[i] = q[-1] if b.tokens and q is not None and len(q) == len(b.tokens) else math.nan
        if b.finished or cut or len(P.tokens[i]) >= max_tokens:
            ended.append(i)
    return ended


def _resample(P: _Particles, diags, log_z, threshold, scheme, generator,
              log_N) -> list[int] | None:
    """ESS per run (recorded); resample runs with live particles and ESS < threshold * N.
    The ancestors (particle i <- perm[i]), or None when no run resampled."""
    lw = P.log_w.view(P.n, P.N)
    ess = resampling.ess(lw)
    running = (~P.done).view(P.n, P.N).any(dim=1)
    perm = None
    for r in running.nonzero().squeeze(1).tolist():
        diags[r].ess_trace.append(float(ess[r]))
        if not (ess[r] < threshold * P.N) or float(ess[r]) == 0.0:
            continue
        anc = resampling.resample(lw[r], P.N, generator, scheme)
        log_z[r] += torch.logsumexp(lw[r], 0) - log_N
        diags[r].resamples += 1
        if perm is None:
            perm = torch.arange(P.n * P.N)
        perm[r * P.N:(r + 1) * P.N] = r * P.N + anc
        P.log_w[r * P.N:(r + 1) * P.N] = 0.0  # equal weights after resampling
    if perm is not None:
        log_w = P.log_w.clone()
        P.take(perm)
        P.log_w = log_w  # the reset weights belong to the new particles
    return None if perm is None else perm.tolist()


def _finish(P: _Particles, diags, log_z, beta, generator) -> list[Sample]:
    """Final log Z-hat, one weighted draw per run, and the per-sample diagnostics."""
    summary = summarise_runs(P.log_w.view(P.n, P.N), P.reward.view(P.n, P.N), beta, log_z, generator)
    out = []
    for r, k in enumerate(summary.choice):
        d = diags[r]
        d.ess_trace.append(summary.ess[r])
        d.log_z_hat, d.all_dead = summary.log_z_hat[r], summary.all_dead[r]
        d.survivors = summary.survivors[r]
        i = r * P.N + k
        reward, base_lp, prop_lp = float(P.reward[i]), float(P.base_lp[i]), float(P.prop_lp[i])
        out.append(Sample(tokens=list(P.tokens[i]), finished=bool(P.finished[i]), reward=reward,
                          log_weight=log_weight(base_lp, reward, prop_lp, beta),
                          kl_to_base=summary.kl[r], base_logprob=base_lp,
                          token_logprobs=list(P.tok_lps[i]), particle=d))
    return out


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, reward: Reward,
                 value: ValueModel | None = None, stop_at: StopAt | None = None) -> list[Sample]:
    """``spec.n`` SMC runs of ``spec.particles`` particles (twisted when ``value`` is given)."""
    return await run_smc(lm, prompt, reward, n=spec.n, particles=spec.particles,
                         max_tokens=spec.max_tokens, beta=spec.beta,
                         generator=make_generator(spec.seed), value=value,
                         ess_threshold=spec.ess_threshold, scheme=spec.resampling,
                         stop_at=stop_at, block=spec.resample_every)
