"""Exact enumeration: pi*, log Z, Q*, ExactValue, exactness of `token` with Q*, the 2T bound."""

from __future__ import annotations

import pytest
import torch

from decoders import bijection as bj
from decoders import blocks, exact
from decoders.toy import ToyLM, ToyReward

NEG_INF = float("-inf")


async def test_solution_matches_brute_force():
    lm, rw, beta = ToyLM(5, 3, seed=1), ToyReward(2), 0.7
    sol = await exact.exact_solution(lm, rw, [2], 3, beta)
    seqs = sol.tree.sequences()
    assert len(seqs) == sol.tree.num_sequences == 85
    # Brute force pi_ref(y) by the chain rule through lm.logprobs, and R through the reward.
    for y in (seqs[0], seqs[7], seqs[-1]):
        lp = 0.0
        for t in range(len(y)):
            lp += float((await lm.logprobs([[2] + list(y[:t])]))[0, y[t]])
        if len(y) < 3:
            lp += float((await lm.logprobs([[2] + list(y)]))[0, lm.eos_token_id])
        i = sol.tree.index(y)
        assert abs(lp - float(sol.log_p_ref[i])) < 1e-12
        assert float(sol.rewards[i]) == rw.value([2], y)
    log_z = float(torch.logsumexp(sol.log_p_ref + sol.rewards / beta, 0))
    assert abs(sol.log_z - log_z) < 1e-12
    assert abs(float(torch.logsumexp(sol.log_p_star, 0))) < 1e-12
    assert abs(float(sol.v[0][0]) - beta * sol.log_z) < 1e-12
    # Q*(s, EOS) = R(s) and soft Bellman V(s) = beta log sum_a pi_ref(a|s) exp(Q(s,a)/beta).
    assert abs(float(sol.q[1][0, -1]) - float(sol.rewards[sol.tree.index(seqs[1])])) < 1e-12
    assert exact.kl(sol.log_p_star, sol.log_p_star) == 0.0
    assert exact.tv(sol.log_p_star, sol.log_p_ref) > 0.01


async def guided_law(lm, bound, tree, beta):
    """The exact sequence law of the token sampler's own step policy (blocks.step_policy)."""

    async def policy(ctxs):
        return blocks.step_policy(await lm.logprobs(ctxs), await bound.q_values(ctxs, beta), beta)

    return await exact.policy_sequence_logprobs(tree, policy)


@pytest.mark.parametrize("vocab,T", [(8, 4), (4, 8)])
@pytest.mark.parametrize("beta", [0.3, 1.0, 4.0])
async def test_token_with_exact_q_is_exact(vocab, T, beta):
    """KL(guided ARM || pi*) < 1e-9, the guided law computed exactly over every sequence."""
    lm, rw = ToyLM(vocab, T, seed=7), ToyReward(11)
    bound = exact.ExactValue(lm).bind([1], T, reward=rw)
    sol = await bound.solution(beta)
    law = await guided_law(lm, bound, sol.tree, beta)
    assert exact.kl(law, sol.log_p_star) < 1e-9
    assert exact.kl(sol.log_p_star, law) < 1e-9
    assert exact.tv(law, sol.log_p_star) < 1e-9
    # and the base model is far from it (so the check is not vacuous)
    assert exact.kl(sol.log_p_ref, sol.log_p_star) > 1e-3


async def test_exact_value_api():
    lm, rw = ToyLM(5, 3, seed=0), ToyReward(0)
    value = exact.ExactValue(lm)
    with pytest.raises(ValueError, match="needs a reward"):
        value.bind([0], 3)
    with pytest.raises(ValueError, match="bound"):
        await value.q_values([[0]], 1.0)
    bound = exact.ExactValue(lm, reward=rw).bind([0], 3)
    q = await bound.q_values([[0], [0, 1, 2, 3]], 1.0)
    assert q.shape == (2, 5)
    assert torch.isneginf(q[1, :4]).all() and float(q[1, 4]) == rw.value([0], [1, 2, 3])
    with pytest.raises(ValueError, match="extend"):
        await bound.q_values([[3, 1]], 1.0)
    assert (await bound.solution(1.0)) is (await bound.solution(1.0))  # cached per beta
    with pytest.raises(ValueError, match="limit"):
        await exact.enumerate_tree(ToyLM(50, 8), [], 8)


def test_bound_2T_on_200_perturbations():
    """KL(p_q || p_EBM) and KL(p_EBM || p_q) <= 2 T max|q* - q| (logit units, beta = 1;
    with beta the logits are q / beta). 200 random EBMs and perturbations of many scales."""
    gen = torch.Generator().manual_seed(2026)
    sizes = [(8, 4), (4, 8), (3, 5), (6, 3)]
    tightest = 0.0
    for i in range(200):
        K, T = sizes[i % len(sizes)]
        beta = [1.0, 0.5, 2.0][i % 3]
        m = K - 1
        r = [2 * torch.randn(m**t, K, generator=gen, dtype=torch.float64) for t in range(T + 1)]
        r[T][:, :m] = NEG_INF
        q_star, _ = bj.soft_bellman(r, beta)
        eps = 10 ** (-3 + 3.5 * float(torch.rand((), generator=gen)))
        q = []
        for x in q_star:
            kind = i % 3
            noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            if kind == 1:
                noise = torch.sign(noise)
            elif kind == 2:
                noise = 2 * torch.rand(x.shape, generator=gen, dtype=torch.float64) - 1
            q.append(torch.where(torch.isneginf(x), x, x + eps * noise))
        sup = max(float((a - b)[torch.isfinite(b)].abs().max()) for a, b in zip(q, q_star, strict=True))
        p_q, p_ebm = bj.sequence_logprobs(q, beta), bj.ebm_logprobs(r, beta)
        bound = 2 * T * sup / beta
        forward, reverse = exact.kl(p_q, p_ebm), exact.kl(p_ebm, p_q)
        assert 0 <= forward <= bound and 0 <= reverse <= bound, (i, forward, reverse, bound)
        tightest = max(tightest, forward / bound, reverse / bound)
    assert tightest < 1.0


def test_exact_value_reuses_bound_sources():
    lm, rw = ToyLM(5, 3, seed=0), ToyReward(0)
    value = exact.ExactValue(lm, cache_size=2)
    a = value.bind([0], 3, reward=rw)
    assert value.bind([0], 3, reward=rw) is a
    assert value.bind([0], 2, reward=rw) is not a
    assert value.bind([1], 3, reward=ToyReward(1)) is not a
    assert value.bind([0], 3, reward=rw) is not a  # evicted (cache_size 2)
