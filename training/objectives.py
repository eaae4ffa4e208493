"""The distillation objectives, on plain tensors (one row per training entry).

Notation: entry e = (state s_e, action a_e); ``q`` holds the value model's Q_theta(s_e, .)
rows (reward units), ``base_logp`` log pi_ref(. | s_e), ``beta`` the tilt temperature.
"""

from __future__ import annotations

import torch

from decoders.blocks import step_kl


def soft_q_loss(q_sa: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted soft-Q regression  sum_e w_e (Q_theta(s_e, a_e) - Qhat_e)^2 / sum_e w_e,
    with Qhat_e = beta·log-mean-exp(R/beta) over the n_e rollouts through s_e + a_e, w_e = n_e."""
    w = weight.to(q_sa.dtype)
    return (w * (q_sa - target.to(q_sa.dtype)) ** 2).sum() / w.sum().clamp_min(1e-12)


def soft_q_exp_loss(q_sa: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                    beta: float, u_max: float = 4.0) -> torch.Tensor:
    """Soft-Q regression pooled in exp space (a Bregman divergence of exp):

        sum_e w_e [exp(u_e) - u_e - 1] / sum_e w_e,   u_e = (Qhat_e - Q_theta(s_e, a_e)) / beta.

    For one (s, a) with samples R_1..R_n it is minimised at Q = beta log mean exp(R_i / beta),
    the same target as ``soft_q_loss``; but when the model pools several states it averages
    exp(R/beta) (the soft value) rather than log-mean-exps (which drift towards the mean
    reward). ``exp`` is continued linearly beyond u_max to keep gradients bounded."""
    u = (target.to(q_sa.dtype) - q_sa) / beta
    e_max = torch.exp(torch.tensor(u_max, dtype=u.dtype))
    ex = torch.where(u > u_max, e_max * (1 + u - u_max), torch.exp(torch.clamp(u, max=u_max)))
    w = weight.to(q_sa.dtype)
    return (w * (ex - u - 1)).sum() / w.sum().clamp_min(1e-12)


def guided_logprobs(base_logp: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """log pi_theta(. | s) = log_softmax(l_ref(s, .) + Q_theta(s, .) / beta)."""
    return torch.log_softmax(base_logp.to(q.dtype) + q / beta, dim=-1)


def iw_fkl_loss(base_logp: torch.Tensor, q: torch.Tensor, actions: torch.Tensor,
                weight: torch.Tensor, beta: float) -> torch.Tensor:
    """Importance-weighted forward KL  -sum_e w_e log pi_theta(a_e | s_e) / sum_e w_e, where
    w_e = exp(R_i/beta) / sum_k exp(R_k/beta) is the self-normalised weight of the rollout i the
    step belongs to: a consistent estimate of KL(pi* || pi_theta) up to a constant."""
    logp = guided_logprobs(base_logp, q, beta).gather(1, actions.view(-1, 1)).squeeze(1)
    w = weight.to(q.dtype)
    return -(w * logp).sum() / w.sum().clamp_min(1e-12)


def reverse_kl_loss(base_logp: torch.Tensor, q: torch.Tensor, actions: torch.Tensor,
                    advantage: torch.Tensor, beta: float, n_sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Surrogate of the reverse KL  KL(pi_theta || pi*) = E_{y~pi_theta}[sum_t KL_t - R/beta] + log Z
    (the paper's objective for distilling an EBM into an ARM), on on-policy steps e = (s_e, a_e):

        loss = (1/B) sum_e [ KL(pi_theta(.|s_e) || pi_ref(.|s_e)) - A_e log pi_theta(a_e | s_e) ]

    whose gradient is the reverse KL's: each visited state's KL is differentiated exactly, and
    the path's dependence on theta by the score function with A_e = G_e - b_e (detached),
    G_e = R/beta - sum_{t' > t} KL_t' the reward-to-go of the step and b_e a baseline that does
    not depend on the row's own actions. Returns (loss, per-step KL detached [E])."""
    logp = guided_logprobs(base_logp, q, beta)
    kl_t = step_kl(logp, base_logp.to(logp.dtype))
    logp_a = logp.gather(1, actions.view(-1, 1)).squeeze(1)
    loss = (kl_t - advantage.to(logp.dtype) * logp_a).sum() / n_sequences
    return loss, kl_t.detach()
