"""Do the samplers sample pi*? Chi-square goodness of fit against exact enumeration.

Space: ToyLM(vocab=5, len=3, seed=0), prompt [0], ToyReward(seed=0), beta = 1: 85 sequences.
Each sampler gives n = 1000 draws (fixed seeds). A sampler PASSES when the first-token and
length chi-square p-values are > 1e-3 and the mean of R is within 4 standard errors of
E_{pi*}[R] (SE = Std_{pi*}[R] / sqrt(n)); it FAILS when any of the three does not hold.

Power: at n = 1000 the draws of `none` (pi_ref) give non-centralities lambda = n sum
(p_ref - p*)^2 / p* that make both chi-square tests reject at 1e-3 with power > 0.999
(asserted below with scipy's ncx2) and E_{pi_ref}[R] is 18 SE below E_{pi*}[R].
Finite-N bias of the consistent particle methods (computed offline by exact simulation of
the SIR draw law): N = 64 base proposals shift mean R by about -0.47 SE and give
lambda < 0.1 on both marginals, far inside the acceptance region.
"""

from __future__ import annotations

import hashlib

import pytest
import pytest_asyncio
import torch

from decoders.exact import ExactValue, exact_solution
from decoders.generate import generate
from decoders.spec import GuidanceSpec
from decoders.toy import ToyLM, ToyReward
from tests.decoders.stats import cat_probs, fit, power

N_DRAWS = 1000
PROMPT = [0]
T = 3


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def space():
    lm, rw = ToyLM(5, T, seed=0), ToyReward(0)
    sol = await exact_solution(lm, rw, PROMPT, T, beta=1.0)
    return lm, rw, sol


class PerturbedValue:
    """Q* + eps * (deterministic noise per (context, token)): an approximate twist."""

    def __init__(self, inner, eps: float):
        self.inner, self.eps = inner, eps

    async def q_values(self, contexts, beta):
        q = await self.inner.q_values(contexts, beta)
        noise = torch.stack([self._noise(c, q.shape[1]) for c in contexts])
        return torch.where(torch.isneginf(q), q, q + self.eps * noise)

    @staticmethod
    def _noise(context, V):
        seed = int.from_bytes(hashlib.blake2b(repr(tuple(context)).encode(), digest_size=8).digest(), "little")
        return torch.randn(V, generator=torch.Generator().manual_seed(seed % 2**63), dtype=torch.float64)


class RunAheadStreams:
    """A ``StreamSampler`` over the toy whose streams draw their whole remaining completion
    (token loop, guided by ``value``, the stream's own seed) before the first block is read:
    the most an engine can sample ahead of a particle method's block ends."""

    def __init__(self, lm, value=None):
        self.lm, self.value = lm, value
        self.vocab_size, self.eos_token_id = lm.vocab_size, lm.eos_token_id
        self.opened, self.closed_unread = 0, 0

    async def logprobs(self, contexts):
        return await self.lm.logprobs(contexts)

    def open_stream(self, context, max_tokens, seed, guidance=None):
        self.opened += 1
        return _RunAhead(self, list(context), max_tokens, seed, guidance)


class _RunAhead:
    def __init__(self, owner, context, max_tokens, seed, guidance):
        self.owner, self.context, self.max_tokens = owner, context, max_tokens
        self.g = torch.Generator().manual_seed(seed)
        self.beta = 1.0 if guidance is None else guidance.beta
        self.full, self.pos, self.generated = None, 0, 0

    async def next_block(self, k):
        from decoders.blocks import token_loop
        from decoders.protocols import Block

        if self.full is None:
            value = None if self.owner.value is None else self.owner.value
            [self.full] = await token_loop(self.owner.lm, [self.context], self.max_tokens, self.g,
                                           value=value, beta=self.beta)
            self.generated = len(self.full.tokens) + int(self.full.finished)
        f, a = self.full, self.pos
        b = min(a + k, len(f.tokens))
        self.pos = b
        last = b == len(f.tokens) and f.finished
        return Block(f.tokens[a:b], f.proposal_logprobs[a:b], f.base_logprobs[a:b], last,
                     {"q_over_beta": f.extra["q_over_beta"][a:b]},
                     f.eos_proposal_logprob if last else None, f.eos_base_logprob if last else None)

    def close(self):
        if self.full is not None and self.pos < len(self.full.tokens) + int(self.full.finished):
            self.owner.closed_unread += 1


class NativeValue:
    """A value model the stream engine runs (``native_name``): streams are used."""

    native_name = "toy"

    def __init__(self, inner):
        self.inner = inner

    async def q_values(self, contexts, beta):
        return await self.inner.q_values(contexts, beta)


@pytest.mark.parametrize("case", ["plain_N64_always", "twisted_noisy_value_N16"])
async def test_block_smc_on_streams_that_run_ahead_samples_pi_star(space, case):
    """Block SMC (2 tokens per block) on streams that keep running across block ends, having
    sampled the whole completion before the first block end: the survivors' read-ahead tokens
    are kept, copies start new streams, the others are aborted. Same chi-square and reward
    test as every consistent sampler, and Z-hat stays unbiased (mean within 3 SE of Z)."""
    lm, rw, sol = space
    value, kw = None, dict(particles=64, ess_threshold=1.0, seed=21)
    if case.startswith("twisted"):
        value = NativeValue(PerturbedValue(ExactValue(lm).bind(PROMPT, T, reward=rw), eps=1.0))
        kw = dict(particles=16, ess_threshold=0.8, seed=22)
    engine = RunAheadStreams(lm, value)
    samples = await draws(engine, rw, "smc", value=value, resample_every=2, **kw)
    f = fit(sol, [s.tokens for s in samples], [s.reward for s in samples])
    assert f.passes(), f
    assert sum(s.particle.resamples for s in samples) > 0
    # streams were kept across block ends and copies started new ones
    assert N_DRAWS * kw["particles"] < engine.opened < 2 * N_DRAWS * kw["particles"]
    assert engine.closed_unread > 0  # particles not drawn lost tokens sampled ahead
    z_hat = torch.tensor([s.particle.log_z_hat for s in samples], dtype=torch.float64).exp()
    se = float(z_hat.std()) / len(samples) ** 0.5
    assert abs(float(z_hat.mean()) - float(torch.tensor(sol.log_z).exp())) < 3 * se


async def draws(lm, rw, method, value=None, **kw):
    spec = GuidanceSpec(method=method, n=N_DRAWS, max_tokens=T, beta=1.0, seed=kw.pop("seed", 7), **kw)
    return await generate(lm, PROMPT, spec, value=value, reward=rw)


EXACT_CASES = {
    "token_exact": dict(method="token", value="exact"),
    "importance_N64": dict(method="importance", particles=64),
    "smc_plain_N64_systematic_always": dict(method="smc", particles=64, ess_threshold=1.0),
    "smc_plain_N64_multinomial_always": dict(method="smc", particles=64, resampling="multinomial",
                                             ess_threshold=1.0),
    # twist = Q* + N(0, 1) noise per (context, token); ESS < 0.8 N triggers resampling
    "smc_twisted_noisy_value_N16": dict(method="smc", particles=16, value="noisy", ess_threshold=0.8),
    "smc_twisted_noisy_value_N16_multinomial": dict(method="smc", particles=16, value="noisy",
                                                    ess_threshold=0.8, resampling="multinomial", seed=8),
    # block SMC: particles advance 2 tokens per step, twist and resampling at block ends only
    "smc_plain_N64_blocks2_always": dict(method="smc", particles=64, ess_threshold=1.0,
                                         resample_every=2),
    "smc_twisted_noisy_value_N16_blocks2": dict(method="smc", particles=16, value="noisy",
                                                ess_threshold=0.8, resample_every=2, seed=9),
}


@pytest.mark.parametrize("case", list(EXACT_CASES))
async def test_consistent_samplers_pass(space, case):
    lm, rw, sol = space
    kw = dict(EXACT_CASES[case])
    v = kw.pop("value", None)
    value = None
    if v is not None:
        value = ExactValue(lm).bind(PROMPT, T, reward=rw)
        if v == "noisy":
            value = PerturbedValue(value, eps=1.0)
    samples = await draws(lm, rw, value=value, **kw)
    f = fit(sol, [s.tokens for s in samples], [s.reward for s in samples])
    assert f.passes(), f
    assert all(s.reward is not None for s in samples)
    if kw["method"] == "smc":
        assert all(s.particle is not None and len(s.particle.ess_trace) >= 1 for s in samples)
        if "ess_threshold" in kw:  # these cases are meant to exercise resampling
            assert sum(s.particle.resamples for s in samples) > 0


@pytest.mark.parametrize("method,kw", [("none", {}), ("best_of_n", dict(particles=8))])
async def test_biased_samplers_fail(space, method, kw):
    lm, rw, sol = space
    samples = await draws(lm, rw, method, **kw)
    f = fit(sol, [s.tokens for s in samples], [s.reward for s in samples])
    assert f.fails(), f
    # All three statistics reject decisively, not just barely.
    assert f.p_first < 1e-6 and f.p_len < 1e-6 and abs(f.z_reward) > 8, f


def test_power_against_base(space):
    """The chi-square tests at n = 1000 detect pi_ref vs pi* with power > 0.999."""
    _, _, sol = space
    tree = sol.tree
    for key in (tree.first_tokens(), tree.lengths()):
        cats = sorted(set(key.tolist()))
        p_star, p_ref = cat_probs(sol.log_p_star, key, cats), cat_probs(sol.log_p_ref, key, cats)
        assert power(p_star, p_ref, N_DRAWS) > 0.999


async def test_smc_log_z_hat_unbiased(space):
    """Z-hat is unbiased: mean(Z-hat) within 3 SE of Z; with N = 128 the Jensen bias of log Z-hat
    (about -chi2(pi*||pi_ref) / 2N = -0.002, under 1 SE here) is small, so mean(log Z-hat) is
    within 3 SE of log Z as well. ESS threshold 1.0 makes every run resample."""
    lm, rw, sol = space
    spec = GuidanceSpec(method="smc", n=500, max_tokens=T, beta=1.0, particles=128,
                        ess_threshold=1.0, seed=11)
    samples = await generate(lm, PROMPT, spec, reward=rw)
    log_z = torch.tensor([s.particle.log_z_hat for s in samples], dtype=torch.float64)
    assert sum(s.particle.resamples for s in samples) > 0
    z_hat = log_z.exp()
    z = torch.tensor(sol.log_z).exp()
    se = z_hat.std() / len(samples) ** 0.5
    assert abs(float(z_hat.mean() - z)) < 3 * float(se)
    se_log = log_z.std() / len(samples) ** 0.5
    assert abs(float(log_z.mean()) - sol.log_z) < 3 * float(se_log)
    # KL(pi* || pi_ref) estimate from the weighted particles is close to the exact value.
    kl_exact = float((sol.log_p_star.exp() * (sol.log_p_star - sol.log_p_ref)).sum())
    kl_mean = sum(s.kl_to_base for s in samples) / len(samples)
    assert abs(kl_mean - kl_exact) < 0.02


async def test_twisted_smc_z_hat_unbiased(space):
    """The twisted weights (noisy Q* as twist, resampling at ESS < 0.8 N) keep Z-hat unbiased."""
    lm, rw, sol = space
    value = PerturbedValue(ExactValue(lm).bind(PROMPT, T, reward=rw), eps=1.0)
    spec = GuidanceSpec(method="smc", n=500, max_tokens=T, beta=1.0, particles=16,
                        ess_threshold=0.8, seed=12)
    samples = await generate(lm, PROMPT, spec, value=value, reward=rw)
    assert sum(s.particle.resamples for s in samples) > 0
    z_hat = torch.tensor([s.particle.log_z_hat for s in samples], dtype=torch.float64).exp()
    se = float(z_hat.std()) / len(samples) ** 0.5
    assert abs(float(z_hat.mean()) - float(torch.tensor(sol.log_z).exp())) < 3 * se


async def test_block_smc_z_hat_unbiased(space):
    """Block SMC (2 tokens per step, noisy Q* twist at block ends, resampling at ESS < 0.8 N)
    keeps Z-hat unbiased: mean(Z-hat) within 3 SE of Z."""
    lm, rw, sol = space
    value = PerturbedValue(ExactValue(lm).bind(PROMPT, T, reward=rw), eps=1.0)
    spec = GuidanceSpec(method="smc", n=500, max_tokens=T, beta=1.0, particles=16,
                        ess_threshold=0.8, seed=13, resample_every=2)
    samples = await generate(lm, PROMPT, spec, value=value, reward=rw)
    assert sum(s.particle.resamples for s in samples) > 0
    assert max(len(s.particle.ess_trace) for s in samples) <= 3  # boundaries 0, 2 and the end
    z_hat = torch.tensor([s.particle.log_z_hat for s in samples], dtype=torch.float64).exp()
    se = float(z_hat.std()) / len(samples) ** 0.5
    assert abs(float(z_hat.mean()) - float(torch.tensor(sol.log_z).exp())) < 3 * se


async def test_block_smc_twist_reported_by_blocks_saves_the_value_call(space, monkeypatch):
    """Blocks that report Q(s_i, y_i)/beta (``extra["q_over_beta"]``) give block SMC its twist
    at block ends: the same draws, weights and Z-hat as asking the value model, one call less
    per block end."""
    from decoders import blocks as blk

    lm, rw, _ = space
    value = PerturbedValue(ExactValue(lm).bind(PROMPT, T, reward=rw), eps=1.0)
    calls = []

    class Counted:
        async def q_values(self, contexts, beta):
            calls.append(len(contexts))
            return await value.q_values(contexts, beta)

    spec = GuidanceSpec(method="smc", n=50, max_tokens=T, beta=1.0, particles=8,
                        ess_threshold=0.8, seed=5, resample_every=2)
    reported = await generate(lm, PROMPT, spec, value=Counted(), reward=rw)
    with_report = len(calls)
    loop = blk.token_loop

    async def silent(*a, **kw):  # blocks without the report: the value model is asked
        out = await loop(*a, **kw)
        for b in out:
            b.extra.pop("q_over_beta")
        return out

    monkeypatch.setattr(blk, "token_loop", silent)
    calls.clear()
    asked = await generate(lm, PROMPT, spec, value=Counted(), reward=rw)
    assert len(calls) > with_report
    assert [s.tokens for s in reported] == [s.tokens for s in asked]
    for a, b in zip(reported, asked, strict=True):
        assert a.log_weight == pytest.approx(b.log_weight, abs=1e-9)
        assert a.particle.log_z_hat == pytest.approx(b.particle.log_z_hat, abs=1e-9)
