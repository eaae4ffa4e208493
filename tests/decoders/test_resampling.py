"""ESS and resampling: properties (hypothesis) and exact frequencies."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from decoders import resampling

log_weights = st.lists(st.one_of(st.floats(-30, 30), st.just(float("-inf"))), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(lw=log_weights, n=st.integers(1, 50), seed=st.integers(0, 2**31 - 1))
def test_ess_and_systematic_properties(lw, n, seed):
    log_w = torch.tensor(lw, dtype=torch.float64)
    e = float(resampling.ess(log_w))
    alive = int((~torch.isneginf(log_w)).sum())
    if alive == 0:
        assert e == 0.0
        with pytest.raises(ValueError, match="dead"):
            resampling.systematic(log_w, n, torch.Generator().manual_seed(seed))
        return
    assert 1.0 - 1e-9 <= e <= alive + 1e-9
    g = torch.Generator().manual_seed(seed)
    idx = resampling.systematic(log_w, n, g)
    assert idx.shape == (n,) and int(idx.min()) >= 0 and int(idx.max()) < len(lw)
    w = resampling.normalise(log_w)
    counts = torch.bincount(idx, minlength=len(lw))
    assert bool((counts[w == 0] == 0).all())  # dead particles are never copied
    # systematic: every count is floor(n w) or ceil(n w) (tolerate float rounding at edges)
    lo, hi = torch.floor(n * w - 1e-9), torch.ceil(n * w + 1e-9)
    assert bool(((counts >= lo) & (counts <= hi)).all())
    m = resampling.multinomial(log_w, n, torch.Generator().manual_seed(seed))
    assert bool((torch.bincount(m, minlength=len(lw))[w == 0] == 0).all())


def test_multinomial_frequencies():
    log_w = torch.tensor([0.0, math.log(3.0), float("-inf"), math.log(6.0)], dtype=torch.float64)
    idx = resampling.resample(log_w, 100_000, torch.Generator().manual_seed(0), "multinomial")
    freq = torch.bincount(idx, minlength=4).double() / 100_000
    assert torch.allclose(freq, torch.tensor([0.1, 0.3, 0.0, 0.6], dtype=torch.float64), atol=0.006)
    with pytest.raises(ValueError, match="systematic or multinomial"):
        resampling.resample(log_w, 3, torch.Generator(), "stratified-ish")


def test_ess_batched():
    lw = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, float("-inf"), float("-inf"), float("-inf")],
                       [float("-inf")] * 4], dtype=torch.float64)
    assert resampling.ess(lw).tolist() == pytest.approx([4.0, 1.0, 0.0])
