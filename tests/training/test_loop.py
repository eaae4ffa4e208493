"""training.loop: the learning-rate schedule is the one trained models were made with (to the
bit, through a checkpoint resume), and the seeded order of minibatches."""

from __future__ import annotations

import math

import pytest
import torch

from training import loop
from training.config import TrainConfig


def formula(step: int, total: int) -> float:
    """The schedule every bundled model was trained with, as first written in the trainer."""
    warmup = max(1, min(100, total // 20))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def lr_of(opt) -> float:
    return opt.param_groups[0]["lr"]


@pytest.mark.parametrize("steps, lr", [(1, 0.01), (7, 3e-3), (150, 0.01), (1000, 3e-3), (3000, 1e-3)])
def test_schedule_gives_the_old_lr_at_every_step(steps, lr):
    opt, sched = loop.optimizer(torch.nn.Linear(2, 1), TrainConfig(steps=steps, lr=lr))
    for s in range(steps + 1):
        assert lr_of(opt) == lr * formula(s, steps), s
        opt.step()
        sched.step()


@pytest.mark.parametrize("steps, stop", [(20, 7), (150, 3), (1000, 400)])
def test_schedule_resumed_from_its_state_continues_at_the_same_lrs(steps, stop):
    cfg = TrainConfig(steps=steps, lr=3e-3)
    model = torch.nn.Linear(2, 1)
    opt, sched = loop.optimizer(model, cfg)
    for _ in range(stop):
        opt.step()
        sched.step()
    state = {"opt": opt.state_dict(), "sched": sched.state_dict()}
    opt2, sched2 = loop.optimizer(model, cfg)   # as load_checkpoint restores them
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    for s in range(stop, steps + 1):
        assert lr_of(opt2) == cfg.lr * formula(s, steps), s
        opt2.step()
        sched2.step()


def test_transformers_cosine_schedules_are_not_this_one():
    """Why the schedule is not transformers': its cosine schedules start at LR 0 or decay a step
    early, so switching would move every trained model."""
    from transformers import (
        get_cosine_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    )

    steps, warmup = 150, 7
    plain = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1)], lr=1.0), warmup, steps)
    assert plain.get_last_lr()[0] == 0.0 != formula(0, steps)
    rate = get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        torch.optim.SGD([torch.zeros(1)], lr=1.0), warmup, steps, min_lr_rate=0.0)
    lrs = []
    for _ in range(steps):
        lrs.append(rate.get_last_lr()[0])
        rate.optimizer.step()
        rate.step()
    assert lrs[:warmup] == [formula(s, steps) for s in range(warmup)]   # the same warm-up ...
    assert lrs[warmup] < 1.0 == formula(warmup, steps)                  # ... but decays a step early


def test_order_draws_permutations_without_replacement_and_drops_the_leftover():
    order = loop.Order(10, 4, torch.Generator().manual_seed(0))
    first = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert order.next() == first[:4] and order.next() == first[4:8]
    third = order.next()                        # 2 left < 4: a fresh permutation
    assert len(set(third)) == 4 and order.perm and len(order.perm) == 6


def test_smooth_restarts_on_missing_or_nan_entries():
    assert loop.smooth({}, {"a": 2.0}) == {"a": 2.0}
    assert loop.smooth({"a": math.nan}, {"a": 2.0}) == {"a": 2.0}
    assert loop.smooth({"a": 1.0}, {"a": 2.0}) == {"a": 0.95 * 1.0 + 0.05 * 2.0}
