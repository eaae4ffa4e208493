"""Training sets for the two objectives, built from scored rollouts.

Both are sparse lists of *entries* (path, j, action, target, weight): ``path`` indexes a
unique token sequence prompt + completion, ``j`` is the length of the state s = path[:j]
(the value model reads Q(s, .) at position j of its input), ``action`` the next token a.

soft_q  One entry per distinct (state s, action a) seen in any rollout:
            target = beta · log( (1/n) sum_{i through s+a} exp(R_i / beta) )
            weight = n   (the number of rollouts through s+a)
        which is the Monte-Carlo estimate of Q(s, a) = beta log E_{pi_ref}[exp(R/beta) | s, a]
        (for a = EOS it is R(s) itself, exactly). Branches cut from reward-selected
        parents (``Rollout.tilted``) count only from their branch point on.
soft_q on guided rollouts (``onpolicy_q_set``): the rollouts come from a guided policy pi
        (``Rollout.kl`` holds its KL to pi_ref at each decision), and
            target = mean over the rollouts through s+a of  R - beta sum_{t' > t} KL_t'
            weight = n
        the Monte-Carlo estimate of pi's soft value Q^pi(s, a) = E_pi[R - beta sum KL | s, a].
        softmax(l_ref + Q^pi/beta) improves on pi (soft policy improvement), and when pi = pi*
        it is Q* itself: a plain mean, with no log-mean-exp over a few samples.
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
                ) -> tuple[list[list[int]], list[int], list[int]]:
    """(unique paths, path index of each rollout, prompt index of each path).

    Paths are unique per prompt: prompt "A" + completion " B" may spell the same ids as prompt
    "A B" + an empty completion, but their states belong to different prompts."""
    seen: dict[tuple[int, tuple[int, ...]], int] = {}
    paths: list[list[int]] = []
    owner: list[int] = []
    idx = []
    for r in rollouts:
        key = (r.prompt, tuple(r.tokens))
        if key not in seen:
            seen[key] = len(paths)
            paths.append(list(prompt_ids[r.prompt]) + list(r.tokens))
            owner.append(r.prompt)
        idx.append(seen[key])
    return paths, idx, owner


def _steps(r: Rollout, eos: int):
    """(t, a) for every decision of a rollout: its tokens then EOS (Q(s_T, EOS) = R(s_T))."""
    yield from enumerate(r.tokens)
    yield len(r.tokens), eos


def _spread(prompt: Sequence[int], paths: list[list[int]], holders_of: list[int],
            table: dict[tuple[tuple[int, ...], int], tuple[float, float]]) -> tuple:
    """Entries of one prompt from its table {(prefix, a): (target, weight)}; ``holders_of``
    are the indices of that prompt's paths.

    A state lies on several unique paths; its entries are repeated on each of them with the
    weight split evenly, so every minibatch of paths sees the shallow states (the prompt) with
    their share of the weight, instead of all of it once in a while (high-variance steps)."""
    plen = len(prompt)
    on_paths: dict[tuple[int, ...], list[int]] = {}        # state -> paths holding it
    for pi in holders_of:
        path = paths[pi]
        for t in range(len(path) - plen + 1):
            on_paths.setdefault(tuple(path[plen:plen + t]), []).append(pi)
    rows, targets, weights = [], [], []
    for (prefix, a), (target, weight) in table.items():
        holders = on_paths[prefix]
        j = plen + len(prefix)
        for pi in holders:
            rows.append((pi, j, a))
            targets.append(target)
            weights.append(weight / len(holders))
    return (torch.tensor(rows, dtype=torch.long).reshape(-1, 3),
            torch.tensor(targets, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64))


def _per_prompt_entries(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout], table_of
                        ) -> tuple[list[list[int]], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(paths, entries, targets, weights) with ``table_of(indices of one prompt's rollouts)``
    building that prompt's table. One prompt at a time, so the Python dictionaries stay small
    (built all at once, the 1M-rollout demo set peaked at about 12 GB; per prompt, twice as
    many entries peak at 14 GB for the whole training run)."""
    paths, _, owner = _path_index(prompt_ids, rollouts)
    paths_of: dict[int, list[int]] = {}
    for pi, p in enumerate(owner):
        paths_of.setdefault(p, []).append(pi)
    rollouts_of: dict[int, list[int]] = {}
    for i, r in enumerate(rollouts):
        rollouts_of.setdefault(r.prompt, []).append(i)
    parts = [_spread(prompt_ids[p], paths, paths_of[p], table_of(idx))
             for p, idx in rollouts_of.items()]
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64)
        return paths, torch.zeros(0, 3, dtype=torch.long), empty, empty.clone()
    entries, targets, weights = (torch.cat(col) for col in zip(*parts, strict=True))
    return paths, entries, targets, weights


def soft_q_set(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout], beta: float,
               eos: int) -> TrainSet:
    """Monte-Carlo soft-Q targets beta·log-mean-exp(R/beta) over rollouts sharing s + a,
    weight n = the number of those rollouts."""
    for r in rollouts:
        if math.isnan(r.reward) or r.reward == math.inf:
            raise ValueError(f"rewards must be finite or -inf, got {r.reward}")

    def table_of(idx: list[int]) -> dict[tuple[tuple[int, ...], int], tuple[float, float]]:
        stats: dict[tuple[tuple[int, ...], int], list[float]] = {}   # -> [n, logsumexp R/beta]
        for i in idx:
            r = rollouts[i]
            x = r.reward / beta
            for t, a in _steps(r, eos):
                if r.tilted and t < r.start:   # a reward-selected prefix is not a pi_ref sample
                    continue
                key = (tuple(r.tokens[:t]), a)
                s = stats.get(key)
                if s is None:
                    stats[key] = [1.0, x]
                else:
                    s[0] += 1.0
                    s[1] = _logaddexp(s[1], x)
        # a -inf target (hard constraint everywhere) cannot be regressed
        return {k: (beta * (lse - math.log(n)), n) for k, (n, lse) in stats.items() if lse > -math.inf}

    return TrainSet(*_per_prompt_entries(prompt_ids, rollouts, table_of))


def onpolicy_q_set(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout], beta: float,
                   eos: int) -> TrainSet:
    """On-policy soft-Q targets: the mean of R - beta·sum_{t'>t} KL_t' over the guided rollouts
    through s + a (weight n); after a capped completion's last token, Q(s_T, EOS) = R."""
    for r in rollouts:
        if r.kl is None:
            raise ValueError("on-policy targets need guided rollouts (Rollout.kl)")
        if not math.isfinite(r.reward):
            raise ValueError(f"on-policy targets need finite rewards, got {r.reward}")

    def table_of(idx: list[int]) -> dict[tuple[tuple[int, ...], int], tuple[float, float]]:
        stats: dict[tuple[tuple[int, ...], int], list[float]] = {}   # -> [n, sum of targets]
        for i in idx:
            r = rollouts[i]
            after = 0.0                      # sum of KL_t' over t' > t, built backwards
            togo = []
            for k in reversed(r.kl):
                togo.append(r.reward - beta * after)
                after += k
            togo.reverse()
            for t, a in _steps(r, eos):
                key = (tuple(r.tokens[:t]), a)
                g = togo[t] if t < len(togo) else r.reward   # the forced EOS at the cap
                s = stats.get(key)
                if s is None:
                    stats[key] = [1.0, g]
                else:
                    s[0] += 1.0
                    s[1] += g
        return {k: (total / n, n) for k, (n, total) in stats.items()}

    return TrainSet(*_per_prompt_entries(prompt_ids, rollouts, table_of))


def iw_fkl_set(prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout], beta: float,
               eos: int, max_tokens: int) -> TrainSet:
    """Self-normalised importance weights w_i = exp(R_i/beta) / sum_group exp(R/beta); the
    weight of (s, a) is W(s, a) = sum of w_i over the rollouts that chose a at s (from where
    their group was sampled on; the forced EOS at the cap is not a choice)."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rollouts):
        groups.setdefault(r.group, []).append(i)
    w = torch.zeros(len(rollouts), dtype=torch.float64)
    for members in groups.values():
        logw = torch.tensor([rollouts[i].reward / beta for i in members], dtype=torch.float64)
        if torch.isfinite(logw).any():
            w[members] = torch.softmax(logw, dim=0)
    wl = w.tolist()

    def table_of(idx: list[int]) -> dict[tuple[tuple[int, ...], int], tuple[float, float]]:
        table: dict[tuple[tuple[int, ...], int], tuple[float, float]] = {}
        for i in idx:
            r, wi = rollouts[i], wl[i]
            if wi <= 0:
                continue
            for t, a in _steps(r, eos):
                if t < r.start or (t >= max_tokens and a == eos):   # before the branch / forced EOS
                    continue
                key = (tuple(r.tokens[:t]), a)
                table[key] = (0.0, table.get(key, (0.0, 0.0))[1] + wi)
        return table

    return TrainSet(*_per_prompt_entries(prompt_ids, rollouts, table_of), groups=len(groups))
