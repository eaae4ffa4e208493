"""Effective sample size and resampling of log-weights (seeded ``torch.Generator``).

Weights may be -inf (a dead particle); a set whose weights are ALL -inf has ESS 0 and
cannot be resampled (``resample`` raises ``ValueError``; callers report the run as dead).
"""

from __future__ import annotations

import torch


def normalise(log_w: torch.Tensor) -> torch.Tensor:
    """w_i / sum_j w_j from log-weights, along the last axis; all -inf rows give zeros."""
    lse = torch.logsumexp(log_w, dim=-1, keepdim=True)
    out = torch.exp(log_w - lse)
    return torch.where(torch.isneginf(lse), torch.zeros_like(out), out)


def ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size (sum w)^2 / sum w^2 along the last axis (0 when all w = 0)."""
    lse1 = torch.logsumexp(log_w, dim=-1)
    lse2 = torch.logsumexp(2 * log_w, dim=-1)
    out = torch.exp(2 * lse1 - lse2)
    return torch.where(torch.isneginf(lse1), torch.zeros_like(out), out)


def systematic(log_w: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Systematic resampling: one uniform u, points (u + i) / n, inverted through the CDF.

    Each index j is drawn floor(n w_j) or ceil(n w_j) times (lowest-variance scheme).
    """
    w = _check(log_w)
    cdf = torch.cumsum(w, 0)
    cdf[-1] = 1.0
    u = (torch.rand((), generator=generator, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.clamp_(max=w.numel() - 1)


def multinomial(log_w: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Multinomial resampling: n i.i.d. draws j ~ w_j."""
    w = _check(log_w)
    return torch.multinomial(w, n, replacement=True, generator=generator)


def resample(log_w: torch.Tensor, n: int, generator: torch.Generator,
             scheme: str = "systematic") -> torch.Tensor:
    """Ancestor indices [n] drawn from the normalised weights of 1-d ``log_w``."""
    if scheme == "systematic":
        return systematic(log_w, n, generator)
    if scheme == "multinomial":
        return multinomial(log_w, n, generator)
    raise ValueError(f"resampling must be systematic or multinomial, got {scheme!r}")


def _check(log_w: torch.Tensor) -> torch.Tensor:
    if log_w.ndim != 1:
        raise ValueError("resampling expects 1-d log-weights")
    w = normalise(log_w.to(torch.float64))
    if not bool(w.sum() > 0):
        raise ValueError("cannot resample: every weight is zero (all particles dead)")
    return w
