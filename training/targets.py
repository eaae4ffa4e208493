"""Training sets for the two objectives, built from scored rollouts.

Both are sparse lists of *entries* (path, j, action, target, weight): ``path`` indexes a
unique token sequence prompt + completion, ``j`` is the length of the state s = path[:j]
(the value model reads Q(s, .) at position j of its input), ``action`` the next token a.

soft_q  One entry per distinct (state s, action a) seen in any rollout:
            target = beta · log( (1/n) sum_{i through s+a} exp(R_i / beta) )
            weight = n   (the number of rollouts through s+a)
        which is the Monte-Carlo estimate of Q(s, a) = beta log E_{pi_ref}[exp(R/beta) | s, a]
        (for a = EOS it is R(s) itself, exactly).
iw_fkl  One entry per sampled step (s_t, y_t) of every rollout, from where its group was
        sampled (t >= start), EOS included unless forced at the cap:
            weight = w_i = exp(R_i / beta) / sum_{k in group} exp(R_k / beta),  target unused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from training.rollouts import Rollout


@dataclass
class TrainSet:
    paths: list[list[int]]      # unique prompt + completion id sequences
    entries: torch.Tensor       # [E, 3] long: path, j, action
    targets: torch.Tensor       # [E] float64 (soft_q; zeros for iw_fkl)
    weights: torch.Tensor       # [E] float64
    groups: int = 0             # number of normalisation groups (iw_fkl)

    def split(self, val_fraction: float, seed: int) -> tuple[TrainSet, TrainSet]:
        """Split by path (entries follow their path) into train / validation."""
        gen = torch.Generator().manual_seed(seed)
        n_val = int(len(self.paths) * val_fraction)
        perm = torch.randperm(len(self.paths), generator=gen)
        is_val = torch.zeros(len(self.paths), dtype=torch.bool)
        is_val[perm[:n_val]] = True
        return self._subset(~is_val), self._subset(is_val)

    def _subset(self, keep: torch.Tensor) -> TrainSet:
        new_index = torch.full((len(self.paths),), -1, dtype=torch.long)
        kept = keep.nonzero().squeeze(1)
        new_index[kept] = torch.arange(len(kept))
        mask = keep[self.entries[:, 0]]
        ent = self.entries[mask].clone()
        ent[:, 0] = new_index[ent[:, 0]]
        return TrainSet([self.paths[i] for i in kept.tolist()], ent, self.targets[mask],
                        self.weights[mask], self.groups)


def _logaddexp(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def _path_index(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout]
                ) -> tuple[list[list[int]], list[int]]:
    seen: dict[tuple[int, ...], int] = {}
    paths: list[list[int]] = []
    idx = []
    for r in rollouts:
        key = tuple(prompt_ids[r.prompt]) + tuple(r.tokens)
        if key not in seen:
            seen[key] = len(paths)
            paths.append(list(key))
        idx.append(seen[key])
    return paths, idx


def _steps(r: Rollout, eos: int):
    """(t, a) for every decision of a rollout: its tokens then EOS (Q(s_T, EOS) = R(s_T))."""
    yield from enumerate(r.tokens)
    yield len(r.tokens), eos


def soft_q_set(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout], beta: float,
               eos: int) -> TrainSet:
    """Monte-Carlo soft-Q targets beta·log-mean-exp(R/beta) over rollouts sharing s + a."""
    paths, pidx = _path_index(prompt_ids, rollouts)
    stats: dict[tuple[int, tuple[int, ...], int], list[float]] = {}   # -> [n, logsumexp R/beta]
    home: dict[tuple[int, tuple[int, ...]], int] = {}                 # state -> a path holding it
    for r, pi in zip(rollouts, pidx, strict=True):
        if not math.isfinite(r.reward) and r.reward > 0:
            raise ValueError("rewards must be finite or -inf")
        for t, a in _steps(r, eos):
            state = (r.prompt, tuple(r.tokens[:t]))
            home.setdefault(state, pi)
            key = (*state, a)
            s = stats.get(key)
            x = r.reward / beta
            if s is None:
                stats[key] = [1.0, x]
            else:
                s[0] += 1.0
                s[1] = _logaddexp(s[1], x)
    rows, targets, weights = [], [], []
    for (p, prefix, a), (n, lse) in stats.items():
        rows.append((home[(p, prefix)], len(prompt_ids[p]) + len(prefix), a))
        targets.append(beta * (lse - math.log(n)))
        weights.append(n)
    tgt = torch.tensor(targets, dtype=torch.float64)
    finite = torch.isfinite(tgt)  # a -inf target (hard constraint everywhere) cannot be regressed
    return TrainSet(paths, torch.tensor(rows, dtype=torch.long)[finite], tgt[finite],
                    torch.tensor(weights, dtype=torch.float64)[finite])


def iw_fkl_set(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout], beta: float,
               eos: int, max_tokens: int) -> TrainSet:
    """Self-normalised importance weights exp(R/beta) per group, one entry per sampled step."""
    paths, pidx = _path_index(prompt_ids, rollouts)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rollouts):
        groups.setdefault(r.group, []).append(i)
    w = torch.zeros(len(rollouts), dtype=torch.float64)
    for members in groups.values():
        logw = torch.tensor([rollouts[i].reward / beta for i in members], dtype=torch.float64)
        if torch.isfinite(logw).any():
            w[members] = torch.softmax(logw, dim=0)
    rows, weights = [], []
    for i, (r, pi) in enumerate(zip(rollouts, pidx, strict=True)):
        if w[i] <= 0:
            continue
        plen = len(prompt_ids[r.prompt])
        for t, a in _steps(r, eos):
            if t < r.start or (t >= max_tokens and a == eos):   # before the branch / forced EOS
                continue
            rows.append((pi, plen + t, a))
            weights.append(float(w[i]))
    ent = torch.tensor(rows, dtype=torch.long).reshape(-1, 3)
    return TrainSet(paths, ent, torch.zeros(len(rows), dtype=torch.float64),
                    torch.tensor(weights, dtype=torch.float64), groups=len(groups))
