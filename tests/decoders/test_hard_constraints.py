"""Hard constraints as -inf energies: SMC samples the constrained posterior; naive token
masking (renormalising the allowed tokens at each step) is biased.

The case built for it: tokens A=0, B=1, X=2 (forbidden), EOS=3, T = 2. A and B are equally
likely first, but A is followed by X 90% of the time and B only 10%. The constraint posterior
pi*(y) = pi_ref(y | no X) prefers B ~ 9:1 among first tokens; masking X step by step keeps
A:B at 1:1 (the locally renormalised distribution), TV = 0.35 from pi*.
"""

from __future__ import annotations

import math

import pytest
import pytest_asyncio
import torch

from decoders import blocks, exact
from decoders.exact import ExactValue
from decoders.generate import generate
from decoders.spec import GuidanceSpec
from tests.decoders.stats import cat_probs, chisq_pvalue, fit, power

NEG_INF = float("-inf")
A, B, X, EOS = 0, 1, 2, 3


class TabularLM:
    """A hand-written 4-token ARM (rows by the last generated token)."""

    vocab_size, eos_token_id = 4, EOS
    ROWS = {None: [0.45, 0.45, 0.05, 0.05], A: [0.025, 0.025, 0.9, 0.05], B: [0.1, 0.1, 0.1, 0.7]}

    async def logprobs(self, contexts):
        rows = [self.ROWS.get(c[-1] if len(c) > 1 else None, [0.25] * 4) for c in contexts]
        return torch.tensor(rows, dtype=torch.float64).log()


class NoX:
    """R = 0, or -inf when X appears (a hard constraint)."""

    async def score(self, prompt, completions):
        return torch.tensor([NEG_INF if X in c else 0.0 for c in completions], dtype=torch.float64)


class MaskX:
    """Naive token masking as a 'value model': Q = -inf on X, 0 elsewhere."""

    async def q_values(self, contexts, beta):
        q = torch.zeros(len(contexts), 4, dtype=torch.float64)
        q[:, X] = NEG_INF
        return q


PROMPT, T, N_DRAWS = [A + 9], 2, 1000  # prompt token 9: only its last position matters (none)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def constrained():
    lm = TabularLM()
    sol = await exact.exact_solution(lm, NoX(), PROMPT, T, beta=1.0)

    async def masked(ctxs):
        return blocks.step_policy(await lm.logprobs(ctxs), await MaskX().q_values(ctxs, 1.0), 1.0)

    masked_law = await exact.policy_sequence_logprobs(sol.tree, masked)
    return lm, sol, masked_law


def first_token_pvalue(sol, completions):
    tree = sol.tree
    key = tree.first_tokens()
    cats = sorted(set(key.tolist()))
    counts = torch.zeros(len(cats))
    for y in completions:
        counts[cats.index(int(key[tree.index(y)]))] += 1
    return chisq_pvalue(counts, cat_probs(sol.log_p_star, key, cats))[1]


async def test_masking_is_biased_exactly(constrained):
    """Exact laws: masking puts 1:1 on A:B first while pi* has about 1:9, TV > 0.3."""
    lm, sol, masked_law = constrained
    first = exact.marginal(sol.log_p_star, sol.tree.first_tokens())
    first_masked = exact.marginal(masked_law, sol.tree.first_tokens())
    assert first[A] < 0.15 and abs(first_masked[A] - first_masked[B]) < 1e-12
    assert exact.tv(masked_law, sol.log_p_star) > 0.3
    assert math.isinf(exact.kl(masked_law, sol.log_p_star)) is False  # same support (X never drawn)
    key = sol.tree.first_tokens()
    cats = [A, B, EOS]
    assert power(cat_probs(sol.log_p_star, key, cats), cat_probs(masked_law, key, cats), N_DRAWS) > 0.999999


async def test_masking_samples_fail_smc_samples_pass(constrained):
    lm, sol, _ = constrained
    reward = NoX()
    spec = dict(n=N_DRAWS, max_tokens=T, beta=1.0)
    masked = await generate(lm, PROMPT, GuidanceSpec(method="token", seed=1, **spec), value=MaskX(), reward=reward)
    assert first_token_pvalue(sol, [s.tokens for s in masked]) < 1e-12
    # Masking never produces X, but its log-weights reveal the bias: they are not constant.
    assert all(X not in s.tokens for s in masked)
    log_w = [s.log_weight for s in masked]
    assert max(log_w) - min(log_w) > 1.0
    for value in (MaskX(), None):  # the mask as twist, and plain SMC without a value model
        smc = await generate(lm, PROMPT, GuidanceSpec(method="smc", particles=32, seed=2, **spec),
                             value=value, reward=reward)
        assert all(X not in s.tokens and s.reward == 0.0 for s in smc)
        f = fit(sol, [s.tokens for s in smc], [s.reward for s in smc])
        assert f.p_first > 1e-3 and f.p_len > 1e-3, f
        assert not any(s.particle.all_dead for s in smc)
        log_z = torch.tensor([s.particle.log_z_hat for s in smc])
        assert abs(float(log_z.exp().mean()) - math.exp(sol.log_z)) < 4 * float(log_z.exp().std()) / N_DRAWS**0.5


async def test_token_with_exact_q_handles_minus_inf(constrained):
    lm, sol, _ = constrained
    bound = ExactValue(lm).bind(PROMPT, T, reward=NoX())

    async def guided(ctxs):
        return blocks.step_policy(await lm.logprobs(ctxs), await bound.q_values(ctxs, 1.0), 1.0)

    law = await exact.policy_sequence_logprobs(sol.tree, guided)
    assert not bool(torch.isnan(law).any())
    assert exact.kl(law, sol.log_p_star) < 1e-9
    samples = await generate(lm, PROMPT, GuidanceSpec(method="token", n=200, max_tokens=T, seed=3),
                             value=ExactValue(lm), reward=NoX())
    assert all(X not in s.tokens and s.reward == 0.0 and math.isfinite(s.log_weight) for s in samples)


class Impossible:
    async def score(self, prompt, completions):
        return torch.full((len(completions),), NEG_INF, dtype=torch.float64)


@pytest.mark.parametrize("method", ["none", "smc", "importance", "best_of_n", "blockwise"])
async def test_all_minus_inf_reports_clearly_without_nans(method):
    lm = TabularLM()
    spec = GuidanceSpec(method=method, n=4, max_tokens=T, particles=8, seed=0)
    samples = await generate(lm, PROMPT, spec, value=ExactValue(lm), reward=Impossible())
    assert len(samples) == 4
    for s in samples:
        assert s.reward == NEG_INF
        for x in (s.log_weight, s.kl_to_base, s.base_logprob, *s.token_logprobs):
            assert x is None or not math.isnan(x)
        if method in ("smc", "importance"):
            assert s.particle.all_dead and s.particle.log_z_hat == NEG_INF and s.kl_to_base is None
            assert s.particle.survivors == 0


class Zero:
    async def score(self, prompt, completions):
        return torch.zeros(len(completions), dtype=torch.float64)


@pytest.mark.parametrize("method", ["smc", "importance"])
async def test_survivors_count_the_particles_a_hard_constraint_spared(constrained, method):
    """With base proposals and no twist, a particle survives NoX with probability
    P_ref(no X) = Z (= 0.5 here; smc never resamples: the weights stay equal until the end),
    so survivors / N averages Z; all_dead exactly when survivors == 0. Without a constraint
    every particle survives."""
    lm, sol, _ = constrained
    n, N = 400, 8
    spec = GuidanceSpec(method=method, n=n, max_tokens=T, particles=N, beta=1.0, seed=5)
    runs = await generate(lm, PROMPT, spec, value=None, reward=NoX())
    surv = torch.tensor([s.particle.survivors for s in runs], dtype=torch.float64)
    assert all(0 <= s.particle.survivors <= N for s in runs)
    assert all(s.particle.all_dead == (s.particle.survivors == 0) for s in runs)
    assert all((s.particle.log_z_hat == NEG_INF) == s.particle.all_dead for s in runs)
    assert float(surv.min()) < float(surv.max())  # runs lose different numbers
    z = math.exp(sol.log_z)
    assert abs(z - 0.5) < 1e-12
    assert abs(float(surv.mean()) / N - z) < 5 * math.sqrt(z * (1 - z) / (n * N))
    # A dead run's weight-0 particles all carry X; the returned draw of a live run does not.
    assert all(X not in s.tokens for s in runs if not s.particle.all_dead)
    free = await generate(lm, PROMPT, spec, value=None, reward=Zero())
    assert all(s.particle.survivors == N and not s.particle.all_dead for s in free)


async def test_token_on_empty_target_raises():
    lm = TabularLM()
    with pytest.raises(ValueError, match="empty"):
        await generate(lm, PROMPT, GuidanceSpec(method="token", n=2, max_tokens=T, seed=0),
                       value=ExactValue(lm), reward=Impossible())
