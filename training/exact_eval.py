"""Exact evaluation of a value model on toys small enough to enumerate (``decoders.exact``).

With one prompt and at most ``EXACT_MAX_SEQUENCES`` completions, every evaluation of
``tilt train`` reports the exact KL(pi_theta || pi*) of the guided policy
softmax(l_ref + Q_theta/beta), the sup error of Q_theta and the paper's 2T bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import torch

from training import value_net
from training.config import TrainConfig

EXACT_MAX_SEQUENCES = 200_000  # toy evaluation enumerates when the space is at most this big


def model_q_fn(model):
    """contexts -> Q_theta(context, .) at the last position (float64 [B, V], on the CPU)."""
    def q_fn(contexts: list[list[int]]) -> torch.Tensor:
        js = torch.tensor([len(c) for c in contexts])
        with torch.no_grad():
            return value_net.q_at(model, contexts, torch.arange(len(contexts)), js).double().cpu()
    return q_fn


async def exact_report(lm: Any, reward: Any, prompt: list[int], max_tokens: int, beta: float,
                       q_fn) -> dict[str, float]:
    """Exact (by enumeration) KL(pi_theta || pi*), KL(pi* || pi_theta), the sup error
    max |q* - q_theta| (q = Q/beta, over every state before the cap and every token) and the
    paper's bound 2T·max|q* - q_theta| on KL(pi_theta || pi*)."""
    from decoders.exact import exact_solution, kl, policy_sequence_logprobs

    sol = await exact_solution(lm, reward, prompt, max_tokens, beta)
    tree = sol.tree

    async def policy(contexts):
        base = await lm.logprobs(contexts)
        return torch.log_softmax(base + q_fn(contexts) / beta, dim=-1)

    logq = await policy_sequence_logprobs(tree, policy)
    err = 0.0
    err_shift = 0.0  # softmax is shift invariant: max over states of min_c max_a |d - c|
    for t in range(max_tokens):
        q_theta = tree.to_dense(q_fn(tree.contexts(t)))
        d = (sol.q[t] - q_theta) / beta
        err = max(err, float(d.abs().max()))
        err_shift = max(err_shift, float(((d.max(1).values - d.min(1).values) / 2).max()))
    p_star = sol.log_p_star
    return {
        "kl_theta_star": kl(logq, p_star), "kl_star_theta": kl(p_star, logq),
        "kl_star_ref": kl(p_star, sol.log_p_ref), "kl_theta_ref": kl(logq, sol.log_p_ref),
        "max_q_err": err, "bound": 2 * max_tokens * err,
        "max_q_err_shift": err_shift, "bound_shift": 2 * max_tokens * err_shift,
        "mean_reward_theta": float((logq.exp() * sol.rewards).sum()),
        "mean_reward_star": sol.mean_reward()[0],
        "mean_reward_ref": float((sol.log_p_ref.exp() * sol.rewards).sum()),
        "log_z": sol.log_z,
    }


def toy_enumerable(cfg: TrainConfig, handle: Any) -> bool:
    if not cfg.model.startswith("toy:"):
        return False
    m = handle.lm.vocab_size - 1
    return sum(m ** t for t in range(cfg.max_tokens + 1)) <= EXACT_MAX_SEQUENCES


def exact_evaluator(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]]
                    ) -> Callable[[torch.nn.Module], Awaitable[dict[str, float]]] | None:
    """model -> ``exact_report`` of its guided policy, for an enumerable toy with one prompt;
    None otherwise."""
    if not (toy_enumerable(cfg, handle) and len(prompt_ids) == 1):
        return None

    async def evaluate(model: torch.nn.Module) -> dict[str, float]:
        return await exact_report(handle.lm, reward, prompt_ids[0], cfg.max_tokens, cfg.beta,
                                  model_q_fn(model))
    return evaluate
