"""The exact tilted frontier of a task, estimated by self-normalised importance sampling.

For each prompt x, N completions y_i ~ pi_ref(. | x) are drawn and scored; for every beta the
tilted target pi*_beta ∝ pi_ref·exp(R/beta) then has

    E_{pi*}[R]            ≈ sum_i w_i R_i,           w_i = softmax_i(R_i / beta)
    KL(pi* || pi_ref)     = E_{pi*}[R] / beta - log Z,   log Z ≈ log mean_i exp(R_i / beta)

(averaged over prompts, like ``tilt eval``'s KL). This is the best mean reward any policy can
reach at that KL, so it says how much room token guidance has above best-of-N. The expected
best-of-8 reward from the same samples (order statistics) is reported alongside.

    tilt bench optimum --n 4096 --seed 123 --out docs/eval/demo_optimum/optimum.json
    (the demo task: bundled demo base, VADER, docs/eval/prompts.txt; about 4 min on 2 cores)
"""

from __future__ import annotations

import math
from typing import Any

import torch

BETAS = (0.1, 0.12, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.2, 0.25, 0.3, 0.5)
ENGINE_OPTIONS = {"max_num_seqs": 256, "max_model_len": 256, "max_num_batched_tokens": 16384}


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


async def sample_rewards(model: str, reward_spec: str, prompts: list[str], n: int, seed: int,
                         max_tokens: int = 20,
                         engine_options: dict[str, Any] | None = None) -> torch.Tensor:
    """Rewards [prompts, n] of n base completions per prompt, sampled through vLLM."""
    from engines.loader import open_engine
    from rewards.loader import load_reward
    from training.rollouts import collect_rollouts

    handle = await open_engine(model, engine="vllm",
                               **(ENGINE_OPTIONS if engine_options is None else engine_options))
    try:
        reward = load_reward(reward_spec, codec=handle.codec)
        ids = [list(handle.codec.encode(p)) for p in prompts]
        rollouts = await collect_rollouts(handle.lm, reward, ids, rollouts=n, max_tokens=max_tokens,
                                          seed=seed, progress=True)
    finally:
        await handle.aclose()
    out = torch.zeros(len(ids), n, dtype=torch.float64)
    filled = [0] * len(ids)
    for r in rollouts:
        out[r.prompt, filled[r.prompt]] = r.reward
        filled[r.prompt] += 1
    return out


def optimum_report(rewards: torch.Tensor, seed: int, max_tokens: int,
                   betas: tuple[float, ...] = BETAS) -> dict[str, Any]:
    """The optimum.json record: base mean, expected best-of-8 and its KL bound, the frontier."""
    return {"samples_per_prompt": rewards.shape[1], "seed": seed, "max_tokens": max_tokens,
            "base_mean_reward": float(rewards.mean()), "best_of_8_expected": best_of_n(rewards, 8),
            "best_of_8_kl_bound": math.log(8) - 7 / 8,
            "frontier": [frontier(rewards, b) for b in betas]}
