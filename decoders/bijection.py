"""The ARM <-> EBM bijection on an enumerable prefix tree (docs/math.md, with beta).

Dense level-by-level representation of the prefix tree of a sequence space with K = |A|
actions, of which the LAST column (K - 1) is EOS and m = K - 1 are ordinary tokens:

    levels[t]  tensor [m**t, K]   one row per prefix of length t, t = 0..T
    child of node i at level t via token a (0 <= a < m)  is node  i * m + a  at level t + 1

At level T (the length cap) only EOS is allowed: ordinary columns there are -inf.

With beta and an optional reference model (``ref`` = dense log pi_ref rows, forced EOS at T),
the ARM with logits q has step policy  softmax(ref + q / beta)  (ref = 0 when absent) and

    V_q(s)    = beta * logsumexp(ref(s, .) + q(s, .) / beta)
    ARM->EBM  r(s, a) = q(s, a) - V_q(s + a)   (a != EOS),   r(s, EOS) = q(s, EOS)
    EBM->ARM  q(s, a) = r(s, a) + V_q(s + a)   (a != EOS),   q(s, EOS) = r(s, EOS)

The EBM puts mass  pi_ref(y) * exp(sum_t r(s_t, y_t) / beta)  on y (EOS step included) and
V_q(root) = beta * log Z. Without ``ref`` this is the paper's pure ARM/EBM (beta = 1 there).
"""

from __future__ import annotations

import torch

Levels = list[torch.Tensor]
NEG_INF = float("-inf")


def _m(levels: Levels) -> int:
    return levels[0].shape[-1] - 1


def soft_values(q: Levels, beta: float = 1.0, ref: Levels | None = None) -> Levels:
    """V_q(s) = beta * logsumexp(ref(s, .) + q(s, .) / beta) for every node, per level."""
    out = []
    for t, qt in enumerate(q):
        logits = qt / beta if ref is None else ref[t] + qt / beta
        out.append(beta * torch.logsumexp(logits, dim=-1))
    return out


def _child_values(v_next: torch.Tensor, m: int) -> torch.Tensor:
    """V(s + a) of the m ordinary children of each node: [m**t, m]."""
    return v_next.reshape(-1, m)


def _safe_sub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a - b with -inf - (-inf) := -inf (a forbidden action stays forbidden, never NaN)."""
    return torch.where(torch.isneginf(a), a, a - b)


def token_rewards(q: Levels, beta: float = 1.0, ref: Levels | None = None) -> Levels:
    """ARM -> EBM: r(s, a) = q(s, a) - V_q(s + a) for a != EOS, r(s, EOS) = q(s, EOS).

    Parallel over the whole tree (no recursion): one logsumexp per node, O(|A| * nodes).
    """
    m = _m(q)
    v = soft_values(q, beta, ref)
    r = []
    for t, qt in enumerate(q):
        rt = qt.clone()
        if t + 1 < len(q):
            rt[:, :m] = _safe_sub(qt[:, :m], _child_values(v[t + 1], m))
        r.append(rt)
    return r


def soft_bellman(r: Levels, beta: float = 1.0, ref: Levels | None = None) -> tuple[Levels, Levels]:
    """EBM -> ARM by backward recursion: q(s, a) = r(s, a) + V_q(s + a), q(s, EOS) = r(s, EOS).

    Returns (q, V) per level. V_q(root) = beta * log Z, Z = sum_y pi_ref(y) exp(sum r / beta).
    """
    m = _m(r)
    T = len(r) - 1
    q: Levels = [None] * (T + 1)  # type: ignore[list-item]
    v: Levels = [None] * (T + 1)  # type: ignore[list-item]
    for t in range(T, -1, -1):
        qt = r[t].clone()
        if t < T:
            qt[:, :m] = r[t][:, :m] + _child_values(v[t + 1], m)
        q[t] = qt
        v[t] = soft_values([qt], beta, None if ref is None else [ref[t]])[0]
    return q, v


def step_logprobs(q: Levels, beta: float = 1.0, ref: Levels | None = None) -> Levels:
    """The ARM's step policy log softmax(ref + q / beta) per node (all -inf rows stay -inf)."""
    out = []
    for t, qt in enumerate(q):
        logits = qt / beta if ref is None else ref[t] + qt / beta
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        out.append(torch.where(torch.isneginf(lse), torch.full_like(logits, NEG_INF), logits - lse))
    return out


def path_sums(x: Levels) -> torch.Tensor:
    """Sum of x along each complete sequence (ordinary tokens then EOS), flattened by level.

    Sequence order: all sequences ending at level 0 (empty), then level 1, ... level T; within
    a level, by node index. Entry = sum_{t < len} x[t][node_t, y_t] + x[len][node, EOS].
    """
    m = _m(x)
    prefix = torch.zeros(1, dtype=x[0].dtype)
    out = []
    for t, xt in enumerate(x):
        out.append(prefix + xt[:, m])
        if t + 1 < len(x):
            step = xt[:, :m]
            prefix = (prefix[:, None] + step).reshape(-1)
    return torch.cat(out)


def sequence_logprobs(q: Levels, beta: float = 1.0, ref: Levels | None = None) -> torch.Tensor:
    """log p_q(y) of the ARM (step policy softmax(ref + q/beta)) for every sequence, flat."""
    return path_sums(step_logprobs(q, beta, ref))


def ebm_logprobs(r: Levels, beta: float = 1.0, ref: Levels | None = None) -> torch.Tensor:
    """log of the EBM  pi_ref(y) exp(sum r / beta) / Z  for every sequence, flat."""
    energy = path_sums(r) / beta
    logits = energy if ref is None else path_sums(ref) + energy
    return logits - torch.logsumexp(logits, dim=0)


def forced_eos_row(vocab: int, eos: int, dtype=torch.float64) -> torch.Tensor:
    """The log-prob row at the length cap: EOS with probability 1."""
    row = torch.full((vocab,), NEG_INF, dtype=dtype)
    row[eos] = 0.0
    return row


def token_rewards_from_logprobs(rows: torch.Tensor, tokens, eos_token_id: int,
                                beta: float = 1.0) -> torch.Tensor:
    """ARM -> EBM along ONE sequence: exact token rewards of a causal LM used as a reward.

    ``rows`` [L + 1, V]: the LM's logits or log-probs q(s_t, .) at s_t = x + y_<t, t = 0..L
    (row L is the state after the last token, where EOS is taken); ``tokens`` = y_0..y_{L-1}.
    Returns [L + 1]:  r_t = q(s_t, y_t) - V_q(s_{t+1})  for t < L,  r_L = q(s_L, EOS),
    with V_q(s) = beta * logsumexp(q(s, .) / beta). The sum telescopes to
    beta * log p_q(y, EOS) + V_q(s_0); with log-normalised rows and beta = 1 it is log p_q(y, EOS).
    """
    rows = torch.as_tensor(rows, dtype=torch.float64)
    tokens = torch.as_tensor(list(tokens), dtype=torch.long)
    L = tokens.numel()
    if rows.ndim != 2 or rows.shape[0] != L + 1:
        raise ValueError(f"rows must have shape [len(tokens) + 1, V], got {tuple(rows.shape)} "
                         f"for {L} tokens")
    v = beta * torch.logsumexp(rows / beta, dim=-1)
    chosen = rows[torch.arange(L), tokens]
    r = torch.empty(L + 1, dtype=torch.float64)
    r[:L] = _safe_sub(chosen, v[1:])
    r[L] = rows[L, eos_token_id]
    return r
