"""The objectives and their training sets on tiny hand-checked cases."""

from __future__ import annotations

import math

import pytest
import torch

from training import objectives
from training.rollouts import Rollout
from training.targets import iw_fkl_set, soft_q_set

EOS = 3


def test_soft_q_loss_is_weighted_mse():
    q = torch.tensor([1.0, 2.0, 0.0])
    t = torch.tensor([0.0, 2.0, 1.0])
    w = torch.tensor([1.0, 5.0, 2.0])
    assert math.isclose(float(objectives.soft_q_loss(q, t, w)), (1 * 1 + 0 + 2 * 1) / 8)


def test_iw_fkl_optimum_is_the_weighted_empirical_distribution():
    """One state: minimising -sum w log softmax(l + q/beta)[a] gives softmax = weighted counts."""
    base = torch.log_softmax(torch.tensor([[0.3, -1.0, 0.5, 0.0]]), dim=-1)
    actions = torch.tensor([0, 1, 1, 2, 3])
    w = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25])
    q = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.LBFGS([q], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objectives.iw_fkl_loss(base.expand(5, 4), q.expand(5, 4), actions, w, beta=0.5)
        loss.backward()
        return loss

    opt.step(closure)
    p = torch.softmax(base + q.detach() / 0.5, dim=-1)[0]
    target = torch.tensor([0.1, 0.5, 0.15, 0.25])
    assert torch.allclose(p, target, atol=1e-4)


def test_soft_q_targets_are_log_mean_exp_over_rollouts_sharing_the_prefix():
    beta = 0.5
    rs = [Rollout(0, [1, 2], True, 0, 0, reward=1.0), Rollout(0, [1, 0], True, 0, 0, reward=-2.0),
          Rollout(0, [1, 2], True, 0, 0, reward=1.0), Rollout(0, [2], False, 0, 0, reward=0.5)]
    ts = soft_q_set([[0]], rs, beta, EOS)
    got: dict = {}   # (state, action) -> (target, total weight over the paths holding it)
    for (p, j, a), t, w in zip(ts.entries.tolist(), ts.targets.tolist(), ts.weights.tolist(), strict=True):
        key = (tuple(ts.paths[p][:j]), a)
        assert got.get(key, (t, 0))[0] == t
        got[key] = (t, got.get(key, (t, 0.0))[1] + w)
    lme = beta * math.log((2 * math.exp(1.0 / beta) + math.exp(-2.0 / beta)) / 3)
    assert math.isclose(got[((0,), 1)][0], lme) and got[((0,), 1)][1] == 3
    assert got[((0,), 2)] == (0.5, 1.0)
    assert got[((0, 1), 2)] == (1.0, 2.0)          # Q(s, a) of a deterministic continuation
    assert got[((0, 1, 2), EOS)] == (1.0, 2.0)     # Q(s, EOS) = R(s) exactly
    assert len(ts.paths) == 3                      # duplicate rollouts share one path
    # the prompt state lies on all 3 paths: its entries are spread over them
    assert sum(1 for (p, j, a) in ts.entries.tolist() if j == 1 and a == 1) == 3


def test_iw_fkl_weights_are_self_normalised_per_group():
    rs = [Rollout(0, [1], True, 0, 0, reward=0.0), Rollout(0, [2], True, 0, 0, reward=math.log(3)),
          Rollout(0, [1, 2], True, 1, 1, reward=5.0)]
    ts = iw_fkl_set([[0]], rs, 1.0, EOS, max_tokens=3)
    rows: dict = {}   # (state, action) -> total weight over the paths holding the state
    for (p, j, a), w in zip(ts.entries.tolist(), ts.weights.tolist(), strict=True):
        key = (tuple(ts.paths[p][:j]), a)
        rows[key] = rows.get(key, 0.0) + w
    assert math.isclose(rows[((0,), 1)], 0.25) and math.isclose(rows[((0,), 2)], 0.75)
    assert math.isclose(rows[((0, 1), 2)], 1.0)    # a branch starts after its shared prefix
    assert math.isclose(rows[((0, 1), EOS)], 0.25) and math.isclose(rows[((0, 1, 2), EOS)], 1.0)
    # the branch rollout contributes nothing before its start: W((0,), 1) is rollout 0's alone
    assert set(rows) == {((0,), 1), ((0,), 2), ((0, 1), EOS), ((0, 2), EOS), ((0, 1), 2), ((0, 1, 2), EOS)}


def test_exp_loss_minimiser_is_the_soft_value_of_pooled_samples():
    """exp-Bregman regression of one Q onto single samples R_i -> beta log mean exp(R_i/beta)
    (MSE would give the mean reward instead)."""
    beta = 0.3
    r = torch.tensor([0.9, -0.2, 0.0, 0.1, -0.5], dtype=torch.float64)
    q = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([q], max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objectives.soft_q_exp_loss(q.expand(5), r, torch.ones(5, dtype=torch.float64), beta)
        loss.backward()
        return loss

    opt.step(closure)
    soft = beta * (torch.logsumexp(r / beta, 0) - math.log(5))
    assert abs(float(q.detach()) - float(soft)) < 1e-6 and float(soft) > float(r.mean()) + 0.1


def test_exp_loss_is_linear_past_the_clip_and_exact_below_it():
    """exp(u) - u - 1 for u <= u_max; past it exp continues along its tangent at u_max."""
    beta, u_max = 0.2, 4.0
    u = torch.tensor([-1.0, 0.5, 3.9, 4.5, 6.0], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    for clip in (u_max, 10.0):
        got = [float(objectives.soft_q_exp_loss(torch.zeros(1, dtype=torch.float64),
                                                 (beta * x).view(1), one, beta, u_max=clip))
               for x in u]
        want = [math.exp(x) - x - 1 if x <= clip else
                math.exp(clip) * (1 + x - clip) - x - 1 for x in u.tolist()]
        assert got == pytest.approx(want, rel=1e-9)


def test_grouped_iw_fkl_batch_loss_equals_the_per_entry_formula():
    from training.batches import batch_loss
    from training.config import TrainConfig

    class Base:
        def rows(self, paths, rows, js):
            return torch.log_softmax(torch.arange(4.0).repeat(len(rows), 1) * 0.3, dim=-1)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(4, 4)

        def forward(self, input_ids, use_cache=False):
            return type("Out", (), {"logits": self.emb(input_ids).cumsum(1)})()

    model = Model()
    paths = [[0, 1, 2], [0, 2]]
    rows, js = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1, 1, 2, 1, 2])
    actions, w = torch.tensor([1, 2, 2, 2, EOS]), torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25])
    cfg = TrainConfig(objective="iw_fkl", beta=0.7)
    got = batch_loss(model, (paths, rows, js, actions, torch.zeros(5), w), cfg, Base())
    ids = torch.tensor([[0, 1, 2], [0, 2, 0]])
    q = model(ids).logits[rows, js - 1]
    want = objectives.iw_fkl_loss(Base().rows(None, rows, js), q, actions, w, 0.7)
    assert torch.allclose(got, want, atol=1e-6)


def test_action_only_head_gives_the_same_q_as_the_full_vocabulary_head():
    from training import value_net

    for tie in (True, False):
        model = value_net.new_value_model(50, hidden=16, layers=1, heads=2, intermediate=32, tie=tie)
        with torch.no_grad():  # a non-trivial head (the untied one starts at zero)
            model.lm_head.weight.normal_()
        paths = [[1, 2, 3, 4], [5, 6], [7, 8, 9]]
        rows, js = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 4, 2, 2, 3])
        actions = torch.tensor([3, 0, 49, 7, 7])
        full = value_net.q_at(model, paths, rows, js)[torch.arange(5), actions]
        torch.testing.assert_close(value_net.q_sa_at(model, paths, rows, js, actions), full)


def test_tilted_branch_prefixes_are_not_trained_on_and_continuations_are():
    # one trajectory [1, 2] and one tilted branch cut after [1] that went on with [3]
    rs = [Rollout(0, [1, 2], True, 0, 0, reward=0.0),
          Rollout(0, [1, 3], True, 1, 1, reward=1.0, tilted=True)]
    ts = soft_q_set([[5]], rs, beta=1.0, eos=0)
    pairs = {(ts.paths[p][:j][-1] if j > 1 else None, j, a): float(t)
             for (p, j, a), t in zip(ts.entries.tolist(), ts.targets.tolist(), strict=True)}
    # Q([5], 1) sees only the trajectory's reward: the branch's prefix step is skipped
    assert {v for (_, j, a), v in pairs.items() if j == 1 and a == 1} == {0.0}
    # Q([5, 1], 3) and Q([5, 1, 3], EOS) come from the branch
    assert {v for (_, j, a), v in pairs.items() if j == 2 and a == 3} == {1.0}
    assert pairs[(3, 3, 0)] == 1.0 and pairs[(2, 3, 0)] == 0.0


def test_tilted_branching_draws_parents_by_reward():
    import asyncio

    from decoders.toy import ToyLM, ToyReward
    from training.rollouts import collect_rollouts

    lm, reward = ToyLM(vocab=6, max_len=5, seed=1), ToyReward(seed=2)
    rs = asyncio.run(collect_rollouts(lm, reward, [[0]], rollouts=64, max_tokens=5, branch_points=1,
                                      branches=2, seed=0, branch_from="tilted", beta=0.01))
    trajectories = [r for r in rs if r.start == 0]
    branches = [r for r in rs if r.start > 0]
    assert branches and all(r.tilted for r in branches) and not any(r.tilted for r in trajectories)
    assert all(not math.isnan(r.reward) for r in rs)
    # at beta -> 0 every parent is the best trajectory (up to ties): branches start from its prefixes
    best = max(trajectories, key=lambda r: r.reward)
    assert all(r.tokens[:r.start] == best.tokens[:r.start] for r in branches)


def test_a_completion_that_spells_another_prompt_keeps_its_own_prompt():
    """Prompt [5] + completion [6, 1] and prompt [5, 6] + completion [1] are the same ids but
    different states: both sets keep one path per prompt and build without a missing state."""
    rs = [Rollout(0, [6, 1], True, 0, 0, reward=1.0), Rollout(1, [1], True, 1, 0, reward=-1.0)]
    for ts in (soft_q_set([[5], [5, 6]], rs, 1.0, EOS), iw_fkl_set([[5], [5, 6]], rs, 1.0, EOS, max_tokens=3)):
        assert ts.paths == [[5, 6, 1], [5, 6, 1]]
        at_j2 = {(p, a) for p, j, a in ts.entries.tolist() if j == 2}
        assert (1, 1) in at_j2                    # prompt 1's first action, on its own path
    q = soft_q_set([[5], [5, 6]], rs, 1.0, EOS)
    targets = {(p, j, a): t for (p, j, a), t in zip(q.entries.tolist(), q.targets.tolist(), strict=True)}
    assert targets[(0, 2, 1)] == 1.0 and targets[(1, 2, 1)] == -1.0
