"""The exact tilted frontier of the demo task, estimated by self-normalised importance sampling.

For each eval prompt x, N completions y_i ~ pi_ref(. | x) are drawn through vLLM and scored;
for every beta the tilted target pi*_beta ∝ pi_ref·exp(R/beta) then has

    E_{pi*}[R]            ≈ sum_i w_i R_i,           w_i = softmax_i(R_i / beta)
    KL(pi* || pi_ref)     = E_{pi*}[R] / beta - log Z,   log Z ≈ log mean_i exp(R_i / beta)

(averaged over prompts, like ``tilt eval``'s KL). This is the best mean reward any policy can
reach at that KL, so it says how much room token guidance has above best-of-N. The expected
best-of-8 reward from the same samples (order statistics) is printed alongside.

    python bench/demo_optimum.py [--n 4096] [--seed 123]   (about 4 min on a 2-core CPU)
    -> docs/eval/demo_optimum/optimum.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "eval" / "demo_optimum" / "optimum.json"
BETAS = (0.1, 0.12, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.2, 0.25, 0.3, 0.5)


def frontier(rewards: torch.Tensor, beta: float) -> dict[str, float]:
    """Self-normalised estimates for one beta from rewards [prompts, N] of base samples."""
    w = torch.softmax(rewards / beta, dim=1)
    mean_r = (w * rewards).sum(1)
    log_z = torch.logsumexp(rewards / beta, dim=1) - math.log(rewards.shape[1])
    ess = 1.0 / (w ** 2).sum(1)
    return {"beta": beta, "mean_reward": float(mean_r.mean()), "kl_to_base": float((mean_r / beta - log_z).mean()),
            "min_ess": float(ess.min())}


def best_of_n(rewards: torch.Tensor, n: int) -> float:
    """E[max of n base samples] from the empirical order statistics, averaged over prompts."""
    s, _ = rewards.sort(dim=1)
    m = rewards.shape[1]
    i = torch.arange(1, m + 1, dtype=torch.float64)
    p = (i / m) ** n - ((i - 1) / m) ** n
    return float((s * p).sum(1).mean())


async def sample_rewards(n: int, seed: int) -> torch.Tensor:
    from engines.loader import open_engine
    from rewards.loader import load_reward
    from training.rollouts import collect_rollouts

    handle = await open_engine(str(ROOT / "tilt/assets/demo-base"), engine="vllm", max_num_seqs=256,
                               max_model_len=256, max_num_batched_tokens=16384)
    try:
        reward = load_reward("vader", codec=handle.codec)
        prompts = [p for p in (ROOT / "docs/eval/prompts.txt").read_text().splitlines() if p.strip()]
        ids = [list(handle.codec.encode(p)) for p in prompts]
        rollouts = await collect_rollouts(handle.lm, reward, ids, rollouts=n, max_tokens=20, seed=seed,
                                          progress=True)
    finally:
        await handle.aclose()
    out = torch.zeros(len(ids), n, dtype=torch.float64)
    filled = [0] * len(ids)
    for r in rollouts:
        out[r.prompt, filled[r.prompt]] = r.reward
        filled[r.prompt] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="base samples per eval prompt")
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()
    if args.n < 8:
        ap.error("--n must be >= 8")  # exit code 2
    rewards = asyncio.run(sample_rewards(args.n, args.seed))
    result = {"samples_per_prompt": args.n, "seed": args.seed, "max_tokens": 20,
              "base_mean_reward": float(rewards.mean()), "best_of_8_expected": best_of_n(rewards, 8),
              "best_of_8_kl_bound": math.log(8) - 7 / 8,
              "frontier": [frontier(rewards, b) for b in BETAS]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"base {result['base_mean_reward']:.3f}  best-of-8 {result['best_of_8_expected']:.3f}")
    for f in result["frontier"]:
        print(f"beta {f['beta']:<5g} reward {f['mean_reward']:.3f}  KL {f['kl_to_base']:.3f}  min ESS {f['min_ess']:.0f}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
