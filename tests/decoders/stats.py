"""Goodness-of-fit helpers: sampled draws against an exact sequence distribution."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy import stats

from decoders.exact import ExactSolution, PrefixTree


def chisq_pvalue(observed: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> tuple[float, float]:
    """Pearson chi-square (stat, p-value) of counts vs probabilities; cells with expected
    count < min_expected are pooled into one cell (zero-probability cells must be empty)."""
    n = float(observed.sum())
    expected = probs * n
    if bool((observed[probs == 0] > 0).any()):
        return math.inf, 0.0
    small = expected < min_expected
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    obs, exp = obs[keep].double(), exp[keep].double()
    stat = float(((obs - exp) ** 2 / exp).sum())
    return stat, float(stats.chi2.sf(stat, obs.numel() - 1))


def categories(tree: PrefixTree, key: torch.Tensor, completions: list[list[int]]) -> tuple[torch.Tensor, list[int]]:
    """Counts of a per-sequence statistic (tree.lengths() / tree.first_tokens()) over draws."""
    cats = sorted(set(key.tolist()))
    pos = {c: i for i, c in enumerate(cats)}
    counts = torch.zeros(len(cats))
    for y in completions:
        counts[pos[int(key[tree.index(y)])]] += 1
    return counts, cats


def cat_probs(logp: torch.Tensor, key: torch.Tensor, cats: list[int]) -> torch.Tensor:
    p = logp.exp()
    return torch.stack([p[key == c].sum() for c in cats])


@dataclass
class Fit:
    p_first: float
    p_len: float
    z_reward: float

    def passes(self, alpha: float = 1e-3) -> bool:
        return self.p_first > alpha and self.p_len > alpha and abs(self.z_reward) < 4

    def fails(self, alpha: float = 1e-3) -> bool:
        return self.p_first < alpha or self.p_len < alpha or abs(self.z_reward) >= 4


def fit(sol: ExactSolution, completions: list[list[int]], rewards: list[float]) -> Fit:
    """First-token and length chi-square p-values against pi*, and the z-score of mean R."""
    tree = sol.tree
    ps = []
    for key in (tree.first_tokens(), tree.lengths()):
        counts, cats = categories(tree, key, completions)
        ps.append(chisq_pvalue(counts, cat_probs(sol.log_p_star, key, cats))[1])
    mean, std = sol.mean_reward()
    diff = sum(rewards) / len(rewards) - mean
    if std == 0:
        z = 0.0 if diff == 0 else math.inf
    else:
        z = diff / (std / math.sqrt(len(rewards)))
    return Fit(ps[0], ps[1], z)


def power(p_true: torch.Tensor, p_wrong: torch.Tensor, n: int, alpha: float = 1e-3) -> float:
    """Power of the chi-square test at level alpha against draws from p_wrong:
    non-centrality lambda = n * sum (p_wrong - p_true)^2 / p_true (all cells kept)."""
    lam = float(n * ((p_wrong - p_true) ** 2 / p_true).sum())
    df = p_true.numel() - 1
    return float(stats.ncx2.sf(stats.chi2.isf(alpha, df), df, lam))
