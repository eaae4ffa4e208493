"""Merge the rollouts of two ``tilt train`` runs over consecutive prompt files into one
``train/rollouts.pt``, so a value model can be trained on more prompts without sampling the
first part again (``tilt train --resume`` then reuses the merged file).

Run A sampled prompts 0..P_A-1 of the full prompt file, run B the prompts after them (its
prompt file is the rest of the full one). B's prompt indices move up by P_A. Group ids keep the
convention of ``training.rollouts.collect_rollouts``: a prompt's trajectories are group
``prompt``; branch groups are numbered from the total number of prompts on, A's first.

    tilt rollouts merge runs/A/train/rollouts.pt 8000 runs/B/train/rollouts.pt 8218 \\
        runs/C/train/rollouts.pt
"""

from __future__ import annotations

from pathlib import Path

import torch


def renumber(rollouts: list[dict], n_prompts: int, prompt_offset: int, branch_offset: int) -> int:
    """Shift prompts by ``prompt_offset`` and branch groups (ids >= n_prompts) to start at
    ``branch_offset``, in place; returns the number of branch groups."""
    branch_groups = 0
    for r in rollouts:
        if r["group"] >= n_prompts:
            branch_groups = max(branch_groups, r["group"] - n_prompts + 1)
            r["group"] = r["group"] - n_prompts + branch_offset
        else:
            r["group"] = r["group"] + prompt_offset
        r["prompt"] += prompt_offset
    return branch_groups


def merge_rollouts(a: Path, prompts_a: int, b: Path, prompts_b: int, out: Path) -> dict:
    """Write the merged rollouts of runs ``a`` (over ``prompts_a`` prompts) and ``b`` to
    ``out``; returns what was written. Raises ValueError, writing nothing, when a run has a
    prompt index not below its prompt count."""
    runs = {"a": torch.load(a, weights_only=False), "b": torch.load(b, weights_only=False)}
    for (name, run), n in zip(runs.items(), (prompts_a, prompts_b), strict=True):
        top = max(r["prompt"] for r in run["rollouts"])
        if top >= n:
            raise ValueError(f"{name}: a rollout has prompt index {top}, not below {n}")
    total = prompts_a + prompts_b
    branches_a = renumber(runs["a"]["rollouts"], prompts_a, 0, total)
    renumber(runs["b"]["rollouts"], prompts_b, prompts_a, total + branches_a)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    merged = {"rollouts": runs["a"]["rollouts"] + runs["b"]["rollouts"], "config": runs["a"]["config"],
              "merged_from": [str(a), str(b)]}
    torch.save(merged, out)
    return merged
