"""Merge the rollouts of two ``tilt train`` runs over consecutive prompt files into one
``train/rollouts.pt``, so a value model can be trained on more prompts without sampling the
first part again (``tilt train --resume`` then reuses the merged file).

Run A sampled prompts 0..P_A-1 of the full prompt file, run B the prompts after them (its
prompt file is the rest of the full one). B's prompt indices move up by P_A. Group ids keep the
convention of ``training.rollouts.collect_rollouts``: a prompt's trajectories are group
``prompt``; branch groups are numbered from the total number of prompts on, A's first.

    python bench/merge_rollouts.py runs/A/train/rollouts.pt 8000 runs/B/train/rollouts.pt 8218 \\
        runs/C/train/rollouts.pt
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="rollouts.pt of the run over the first prompts")
    ap.add_argument("prompts_a", type=int, help="number of prompts in run a's prompt file")
    ap.add_argument("b", type=Path, help="rollouts.pt of the run over the prompts after them")
    ap.add_argument("prompts_b", type=int, help="number of prompts in run b's prompt file")
    ap.add_argument("out", type=Path, help="merged rollouts.pt (e.g. runs/NEW/train/rollouts.pt)")
    args = ap.parse_args()
    a = torch.load(args.a, weights_only=False)
    b = torch.load(args.b, weights_only=False)
    for name, run, n in (("a", a, args.prompts_a), ("b", b, args.prompts_b)):
        top = max(r["prompt"] for r in run["rollouts"])
        if top >= n:
            ap.error(f"{name}: a rollout has prompt index {top}, not below {n}")  # exit code 2
    total = args.prompts_a + args.prompts_b
    branches_a = renumber(a["rollouts"], args.prompts_a, 0, total)
    renumber(b["rollouts"], args.prompts_b, args.prompts_a, total + branches_a)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    merged = {"rollouts": a["rollouts"] + b["rollouts"], "config": a["config"],
              "merged_from": [str(args.a), str(args.b)]}
    torch.save(merged, args.out)
    print(f"wrote {len(merged['rollouts'])} rollouts over {total} prompts to {args.out}")


if __name__ == "__main__":
    main()
