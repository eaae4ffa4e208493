"""soft_q on guided rollouts: the on-policy targets estimate the behaviour policy's soft value
Q^pi (checked against its exact value by enumeration), softmax(l_ref + Q^pi/beta) improves on
pi (soft policy improvement, exact), and `tilt train --rollout-policy guided` runs end to end."""

from __future__ import annotations

import asyncio
import math

import torch

from decoders.exact import exact_solution
from decoders.toy import ToyLM, ToyReward
from tests.training.train_helpers import toy_config
from training import onpolicy, value_net
from training.exact_eval import model_q_fn
from training.rollouts import Rollout
from training.targets import onpolicy_q_set
from training.trainer import train


def policy_soft_q(tree, rewards, log_pi, beta):
    """Exact Q^pi(s, .) per level (dense, reward units) and V^pi(root) = E_pi[R] - beta KL(pi||pi_ref)
    of the step policy ``log_pi`` (dense rows per level), by backward recursion over the tree."""
    m, T = tree.m, tree.max_tokens
    offs = [sum(m ** k for k in range(t)) for t in range(T + 1)]
    v = rewards[offs[T]:offs[T] + m ** T]                 # at the cap EOS is forced: V = R
    qs = [None] * T
    for t in reversed(range(T)):
        n = m ** t
        q = torch.empty(n, m + 1, dtype=torch.float64)
        q[:, :m] = v.view(n, m)                           # child of node i by column c: i*m + c
        q[:, m] = rewards[offs[t]:offs[t] + n]            # EOS: the completion ends here
        p = log_pi[t].exp()
        v = (p * q).sum(1) - beta * (p * (log_pi[t] - tree.ref[t])).sum(1)
        qs[t] = q
    return qs, float(v[0])


def _toy(beta=0.8, seed=1):
    lm, reward = ToyLM(vocab=4, max_len=3, seed=0), ToyReward(seed=0)
    sol = asyncio.run(exact_solution(lm, reward, [0], 3, beta))
    g = torch.Generator().manual_seed(seed)
    rand_q = [torch.randn(r.shape, generator=g, dtype=torch.float64) for r in sol.tree.ref[:-1]]
    log_pi = [torch.log_softmax(r + q / beta, 1) for r, q in zip(sol.tree.ref, rand_q, strict=False)]
    return lm, reward, sol, log_pi


def test_soft_policy_improvement_is_exact_on_the_toy():
    """J(softmax(l_ref + Q^pi/beta)) >= J(pi), and iterating reaches J* = beta log Z."""
    beta = 0.8
    _, _, sol, log_pi = _toy(beta)
    js = []
    for _ in range(6):
        q, j = policy_soft_q(sol.tree, sol.rewards, log_pi, beta)
        js.append(j)
        log_pi = [torch.log_softmax(r + qq / beta, 1) for r, qq in zip(sol.tree.ref, q, strict=False)]
    assert all(b >= a - 1e-12 for a, b in zip(js, js[1:], strict=False)), js
    assert abs(js[-1] - beta * sol.log_z) < 1e-9 and js[0] < js[-1] - 0.1


def test_onpolicy_targets_estimate_the_behaviour_policys_soft_value():
    """20,000 guided rollouts (random Llama head through the lean forward): the root entries'
    targets are within 4 standard errors of the exact Q^pi(prompt, a) for every first token."""
    torch.set_num_threads(1)
    beta = 0.8
    lm, reward = ToyLM(vocab=4, max_len=3, seed=0), ToyReward(seed=0)
    model = value_net.new_value_model(4, hidden=32, layers=1, heads=2, intermediate=64, seed=0)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
    rollouts = asyncio.run(onpolicy.collect_guided_rollouts(
        onpolicy.ProtocolStepper(lm), model, reward, [[0]], rollouts=20_000, max_tokens=3,
        beta=beta, eos=lm.eos_token_id, seed=0))
    sol = asyncio.run(exact_solution(lm, reward, [0], 3, beta))
    q_fn = model_q_fn(model)
    log_pi = [torch.log_softmax(ref + sol.tree.to_dense(q_fn(sol.tree.contexts(t))) / beta, 1)
              for t, ref in enumerate(sol.tree.ref[:-1])]
    exact_q, _ = policy_soft_q(sol.tree, sol.rewards, log_pi, beta)
    ts = onpolicy_q_set([[0]], rollouts, beta, lm.eos_token_id)
    root = ts.entries[:, 1] == 1
    for col, a in enumerate(sol.tree.tokens + [lm.eos_token_id]):
        sel = root & (ts.entries[:, 2] == a)
        target, n = float(ts.targets[sel][0]), float(ts.weights[sel].sum())
        gs = [r.reward - beta * sum(r.kl[1:]) for r in rollouts
              if (r.tokens[:1] == [a] if a != lm.eos_token_id else not r.tokens)]
        assert len(gs) == round(n)
        sd = math.sqrt(sum((x - target) ** 2 for x in gs) / (len(gs) - 1))
        assert abs(target - float(exact_q[0][0, col])) < 4 * sd / math.sqrt(n) + 1e-9, a


def test_onpolicy_targets_subtract_the_kl_after_the_step():
    r = Rollout(0, [1, 2], True, group=0, start=0, reward=1.0, kl=[0.5, 0.25, 0.125])
    capped = Rollout(0, [1, 2], False, group=0, start=0, reward=-1.0, kl=[0.5, 0.25])
    ts = onpolicy_q_set([[7]], [r], beta=2.0, eos=3)
    got = {(int(j), int(a)): float(t) for (_, j, a), t in zip(ts.entries.tolist(), ts.targets, strict=True)}
    assert got == {(1, 1): 1.0 - 2 * 0.375, (2, 2): 1.0 - 2 * 0.125, (3, 3): 1.0}
    ts = onpolicy_q_set([[7]], [capped], beta=2.0, eos=3)
    got = {(int(j), int(a)): float(t) for (_, j, a), t in zip(ts.entries.tolist(), ts.targets, strict=True)}
    assert got == {(1, 1): -1.0 - 2 * 0.25, (2, 2): -1.0, (3, 3): -1.0}  # EOS forced at the cap


def test_guided_rollout_training_from_the_soft_q_toy_model(tmp_path, toy_value):
    src, first = toy_value
    cfg = toy_config(tmp_path / "spi", rollout_policy="guided", init_from=src.out, rollouts=4000,
                     steps=100, lr=0.003, eval_every=100)
    summary = train(cfg, progress=False)
    assert summary["rollout_policy"] == "guided" and summary["init_from"] == src.out
    assert summary["final"]["kl_theta_star"] <= 0.05, summary["final"]
