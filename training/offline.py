"""Objectives ``soft_q`` and ``iw_fkl``: fit Q_theta on one fixed set of scored rollouts.

    rollouts (engine, or the guided policy of init_from) -> rewards (batched)
    -> TrainSet (training.targets) -> AdamW steps on minibatches (training.batches)

The rollouts are saved to ``train/rollouts.pt`` and reused by --resume. Data parallel: rank r's
share, 1/K of them (seed·1000 + r), is collected by its node's one engine (LOCAL_RANK 0 collects
the shares of its node in turn, ``training.nodes``); every rank receives all of them, so every
rank builds the same targets, and ranks draw different minibatches (seed·7919 + rank).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from training import loop, nodes, onpolicy, value_net
from training.batches import BaseRows, Batches, batch_loss, eval_loss
from training.config import TrainConfig
from training.exact_eval import exact_evaluator
from training.rollouts import Rollout, collect_rollouts
from training.targets import TrainSet, iw_fkl_set, onpolicy_q_set, soft_q_set


async def get_rollouts(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]],
                       work: Path, resume: bool, show: bool = True,
                       behaviour: torch.nn.Module | None = None) -> list[Rollout]:
    """Collected or reloaded from train/rollouts.pt; ``rollout_policy: guided`` rolls out
    ``behaviour``'s guided policy. Rank r's share (seed·1000 + r) is collected by its node's
    engine (``training.nodes``: LOCAL_RANK 0 collects every share of its node in turn), then
    every share reaches every rank, concatenated in rank order."""
    rank, size = loop.world()
    path = work / "rollouts.pt"
    if resume and path.is_file():
        saved = torch.load(path, weights_only=False)
        return [Rollout(**r) for r in saved["rollouts"]]
    mine: dict[int, list[dict[str, Any]]] = {}
    if nodes.opens_engine():
        for r in nodes.node_ranks():
            share = cfg.rollouts // size + (1 if r < cfg.rollouts % size else 0)
            got = await rank_rollouts(cfg, handle, reward, prompt_ids, share, r,
                                      show and rank == 0, behaviour)
            mine[r] = [asdict(x) for x in got]
    parts = {r: part for node in nodes.from_leaders(mine) for r, part in node.items()}
    offset, rollouts = 0, []
    for r in range(size):  # keep group ids distinct across ranks
        rs = [Rollout(**x) for x in parts[r]]
        for x in rs:
            if x.start > 0:
                x.group += offset
        offset += max((x.group for x in rs), default=0) + 1
        rollouts.extend(rs)
    if rank == 0:
        torch.save({"rollouts": [asdict(r) for r in rollouts], "config": cfg.to_dict()}, path)
    return rollouts


async def rank_rollouts(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]],
                        share: int, rank: int, show: bool,
                        behaviour: torch.nn.Module | None) -> list[Rollout]:
    """Rank ``rank``'s ``share`` rollouts per prompt, seeded seed·1000 + rank."""
    if cfg.rollout_policy == "guided":
        return await onpolicy.collect_guided_rollouts(
            onpolicy.base_stepper(cfg.model, handle.lm), behaviour, reward, prompt_ids,
            rollouts=share, max_tokens=cfg.max_tokens, beta=cfg.guide_beta or cfg.beta,
            eos=handle.lm.eos_token_id, seed=cfg.seed * 1000 + rank, progress=show)
    return await collect_rollouts(handle.lm, reward, prompt_ids, rollouts=share,
                                  max_tokens=cfg.max_tokens, branch_points=cfg.branch_points,
                                  branches=cfg.branches, seed=cfg.seed * 1000 + rank,
                                  temperature=cfg.temperature, branch_from=cfg.branch_from,
                                  beta=cfg.beta, progress=show)


def build_set(cfg: TrainConfig, prompt_ids: list[list[int]], rollouts: list[Rollout], eos: int) -> TrainSet:
    if cfg.rollout_policy == "guided":
        return onpolicy_q_set(prompt_ids, rollouts, cfg.beta, eos)
    if cfg.objective == "soft_q":
        return soft_q_set(prompt_ids, rollouts, cfg.beta, eos)
    return iw_fkl_set(prompt_ids, rollouts, cfg.beta, eos, cfg.max_tokens)


async def train(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]],
                start: torch.nn.Module | None, out: Path, work: Path, *, resume: bool, show: bool,
                stop_after: int | None, device: torch.device | None = None) -> dict[str, Any]:
    """Rollouts, targets, then ``loop.train_steps`` on ``device`` (default: ``cfg.device``
    resolved); returns the summary on rank 0."""
    rank, size = loop.world()
    device = device if device is not None else loop.resolve_device(cfg.device)
    eos, vocab = handle.lm.eos_token_id, handle.lm.vocab_size
    t0 = time.time()
    rollouts = await get_rollouts(cfg, handle, reward, prompt_ids, work, resume, show, start)
    t_roll = time.time() - t0
    full = build_set(cfg, prompt_ids, rollouts, eos)
    train_set, val_set = full.split(cfg.val_fraction, cfg.seed)
    base = None
    if cfg.objective == "iw_fkl":
        base = BaseRows(handle, cfg, device)
        await base.prepare(full)
    model = (start if start is not None else value_net.initial_model(
        cfg, vocab, max(64, max(len(p) for p in full.paths) + 1))).to(device)
    net = loop.data_parallel(model)
    batches = Batches(train_set, cfg.batch_size, cfg.seed * 7919 + rank)
    val_batches = Batches(val_set, cfg.batch_size, 0) if len(val_set.paths) else None
    exact = exact_evaluator(cfg, handle, reward, prompt_ids)

    async def step():
        loss = batch_loss(net, batches.next(), cfg, base)
        return loss, {"loss": float(loss.detach())}

    async def evaluate() -> dict[str, Any]:
        rec: dict[str, Any] = {}
        if val_batches is not None:
            rec["val_loss"] = eval_loss(model, val_batches, cfg, base)
        if exact is not None:
            rec.update(await exact(model))
        return rec

    t1 = time.time()
    step_at, history = await loop.train_steps(
        cfg, model, batches.order, work, step=step, evaluate=evaluate, label=f"train {cfg.objective}",
        postfix=lambda r: {"loss": f"{r['loss']:.4f}"}, shown=("train_loss", "val_loss", "kl_theta_star"),
        running={"loss": float("nan")}, resume=resume, show=show, stop_after=stop_after)
    t_train = time.time() - t1

    def summary() -> dict[str, Any]:
        return {
            "objective": cfg.objective, "q_loss": cfg.q_loss, "beta": cfg.beta, "steps": step_at,
            "world_size": size, "device": str(device),
            **({"init_from": cfg.init_from, "init_scale": cfg.init_scale} if cfg.init_from else {}),
            **({"init_from_lm": cfg.init_from_lm or cfg.model, "init_layers": cfg.init_layers}
               if cfg.init_from_lm or cfg.init_layers else {}),
            **({"rollout_policy": "guided", "guide_beta": cfg.guide_beta or cfg.beta}
               if cfg.rollout_policy == "guided" else {}),
            **({"exp_clip": cfg.exp_clip} if cfg.q_loss == "exp" else {}),
            "rollouts": len(rollouts), "paths": len(full.paths), "entries": int(len(full.entries)),
            "parameters": value_net.num_parameters(model), "seed": cfg.seed,
            "seconds_rollouts": round(t_roll, 2), "seconds_train": round(t_train, 2),
            "final": history[-1] if history else {},
        }
    return loop.finish(cfg, model, vocab, step_at, out, work, summary)
