"""ARM <-> EBM bijection (docs/math.md): round trips, V_q(root) = beta log Z, residual form."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import bijection as bj

NEG_INF = float("-inf")


def random_levels(K: int, T: int, gen: torch.Generator, scale: float = 2.0) -> list[torch.Tensor]:
    """Random dense logits/rewards on the prefix tree; at level T only EOS is finite."""
    m = K - 1
    out = []
    for t in range(T + 1):
        x = scale * torch.randn(m**t, K, generator=gen, dtype=torch.float64)
        if t == T:
            x[:, :m] = NEG_INF
        out.append(x)
    return out


def random_ref(K: int, T: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Random log pi_ref rows (log-normalised), EOS forced at T."""
    rows = random_levels(K, T, gen)
    return [torch.log_softmax(x, dim=-1) for x in rows]


def max_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Max |a - b| over finite entries; the -inf patterns must agree exactly."""
    err = 0.0
    for x, y in zip(a, b, strict=True):
        assert torch.equal(torch.isneginf(x), torch.isneginf(y))
        fin = torch.isfinite(x)
        if bool(fin.any()):
            err = max(err, float((x[fin] - y[fin]).abs().max()))
    return err


@pytest.mark.parametrize("K,T", [(8, 4), (4, 8)])  # the paper's sizes: 4,096 / 65,536 leaves
@pytest.mark.parametrize("beta", [1.0, 0.25, 3.0])
@pytest.mark.parametrize("with_ref", [False, True])
def test_round_trips_and_log_z(K, T, beta, with_ref):
    gen = torch.Generator().manual_seed(1000 * K + T)
    ref = random_ref(K, T, gen) if with_ref else None
    for _ in range(3):
        q = random_levels(K, T, gen)
        r = bj.token_rewards(q, beta, ref)  # ARM -> EBM
        q2, v = bj.soft_bellman(r, beta, ref)  # EBM -> ARM
        assert max_err(q, q2) < 1e-9
        r0 = random_levels(K, T, gen)
        q0, _ = bj.soft_bellman(r0, beta, ref)
        assert max_err(r0, bj.token_rewards(q0, beta, ref)) < 1e-9  # r -> q -> r
        # V_q(root) = beta * log Z with Z = sum_y pi_ref(y) exp(sum_t r_t / beta), by enumeration.
        energy = bj.path_sums(r) / beta
        if ref is not None:
            energy = energy + bj.path_sums(ref)
        log_z = float(torch.logsumexp(energy, 0))
        assert abs(float(v[0][0]) / beta - log_z) < 1e-9
        # The ARM and the EBM are the same sequence distribution.
        diff = bj.sequence_logprobs(q, beta, ref) - bj.ebm_logprobs(r, beta, ref)
        assert float(diff.abs().max()) < 1e-9
        assert abs(float(torch.logsumexp(bj.sequence_logprobs(q, beta, ref), 0))) < 1e-12


def test_eos_is_terminal_and_length_cap_forced():
    gen = torch.Generator().manual_seed(0)
    K, T = 4, 3
    q = random_levels(K, T, gen)
    logp = bj.step_logprobs(q)
    assert torch.all(logp[T][:, K - 1] == 0) and torch.isneginf(logp[T][:, : K - 1]).all()
    # number of sequences = sum_t m^t (each prefix ends with EOS exactly once)
    assert bj.path_sums(q).numel() == sum((K - 1) ** t for t in range(T + 1))


def test_minus_inf_rewards_stay_finite_or_minus_inf():
    """Hard constraints: -inf token rewards never produce NaN in either direction."""
    gen = torch.Generator().manual_seed(3)
    K, T = 4, 4
    r = random_levels(K, T, gen)
    r[2][:5, :] = NEG_INF  # whole subtrees forbidden
    r[1][0, 1] = NEG_INF
    q, v = bj.soft_bellman(r, 0.5)
    assert not any(bool(torch.isnan(x).any()) for x in q + v)
    r2 = bj.token_rewards(q, 0.5)
    assert not any(bool(torch.isnan(x).any()) for x in r2)
    # r of an edge into a dead subtree is not identifiable (it comes back -inf), but the
    # EBM is the same distribution and q -> r -> q is exact.
    assert float((bj.ebm_logprobs(r, 0.5) - bj.ebm_logprobs(r2, 0.5)).nan_to_num(0.0, 0.0, 0.0).abs().max()) < 1e-9
    assert torch.equal(torch.isneginf(bj.ebm_logprobs(r, 0.5)), torch.isneginf(bj.ebm_logprobs(r2, 0.5)))
    assert max_err(q, bj.soft_bellman(r2, 0.5)[0]) < 1e-9


def test_token_rewards_from_logprobs_telescopes():
    """ARM reward adapter helper: sum r_t = beta log p_q(y, EOS) + V_q(s_0)."""
    gen = torch.Generator().manual_seed(5)
    V, L, eos, beta = 6, 5, 5, 0.7
    rows = torch.randn(L + 1, V, generator=gen, dtype=torch.float64) * 2  # raw logits
    tokens = torch.randint(0, V - 1, (L,), generator=gen).tolist()
    r = bj.token_rewards_from_logprobs(rows, tokens, eos, beta)
    logp = torch.log_softmax(rows / beta, dim=-1)
    seq = float(logp[torch.arange(L), torch.tensor(tokens)].sum() + logp[L, eos])
    v0 = beta * float(torch.logsumexp(rows[0] / beta, 0))
    assert r.shape == (L + 1,)
    assert abs(float(r.sum()) - (beta * seq + v0)) < 1e-12
    # Log-normalised rows at beta = 1: the token rewards are the log-probs themselves.
    lp = torch.log_softmax(rows, dim=-1)
    r1 = bj.token_rewards_from_logprobs(lp, tokens, eos)
    assert torch.allclose(r1[:L], lp[torch.arange(L), torch.tensor(tokens)], atol=1e-12)
    with pytest.raises(ValueError):
        bj.token_rewards_from_logprobs(rows[:L], tokens, eos)


@settings(max_examples=40, deadline=None)
@given(K=st.integers(2, 5), T=st.integers(1, 5), beta=st.floats(0.05, 20.0),
       seed=st.integers(0, 2**31 - 1), ref=st.booleans())
def test_round_trip_property(K, T, beta, seed, ref):
    gen = torch.Generator().manual_seed(seed)
    refl = random_ref(K, T, gen) if ref else None
    q = random_levels(K, T, gen)
    q2, v = bj.soft_bellman(bj.token_rewards(q, beta, refl), beta, refl)
    assert max_err(q, q2) < 1e-8 * max(1.0, beta)
    assert math.isfinite(float(v[0][0]))
