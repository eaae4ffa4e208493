"""Objective ``reverse_kl``: on-policy distillation of pi* into the guided policy.

    minimise  KL(pi_theta || pi*) = E_{y ~ pi_theta}[ sum_t KL_t(s_t) - R(x, y) / beta ] + log Z(x)

    pi_theta(. | s) = softmax(l_ref(s, .) + Q_theta(s, .) / beta),
    KL_t(s) = KL(pi_theta(. | s) || pi_ref(. | s))

This is the paper's objective for distilling an EBM into an ARM, and -beta times it is
E[R] - beta KL(pi_theta || pi_ref) (up to beta log Z): exactly the reward-vs-KL trade-off token
guidance is judged by, measured on the guided policy's own states. soft_q and iw_fkl fit Q on
pi_ref's states instead, where a small model spends its capacity on states guidance rarely
visits.

Each step draws ``batch_size`` completions of the current guided policy (``batch_size / group``
prompts, ``group`` completions each, ``training.onpolicy``), scores them in one reward call per
prompt, and takes one AdamW step on ``objectives.reverse_kl_loss`` with advantages G - b:
G the step's reward-to-go, b the leave-one-out mean over the prompt's other completions
(``baseline: loo``) or the value model's own E_pi[Q]/beta at the state (``baseline: value``,
better once Q is roughly calibrated). It is usually started from a soft_q model
(``init_from``, optionally with Q scaled by ``init_scale``): from scratch the only signal is the
sampled reward.

Evaluation: on a toy with one prompt, the exact report (KL(pi_theta || pi*) by enumeration);
otherwise mean reward, KL to the base and R - beta KL on up to ``EVAL_PROMPTS`` held-out
prompts x ``group`` completions with a fixed seed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from decoders.blocks import step_kl
from training import objectives, onpolicy, vmodel
from training.config import TrainConfig

EVAL_PROMPTS = 256


async def score_episodes(reward: Any, ep: onpolicy.Episodes, group: int) -> torch.Tensor:
    """R(x, y) for every row (one ``Reward.score`` call per group of rows sharing a prompt)."""
    parts = [await reward.score(ep.prompts[g], ep.tokens[g:g + group])
             for g in range(0, len(ep.tokens), group)]
    r = torch.cat(parts).double()
    if not torch.isfinite(r).all():
        raise ValueError("reverse_kl needs finite rewards: a hard constraint (-inf) makes "
                         "KL(pi_theta || pi*) infinite for every softmax policy; use soft_q or "
                         "iw_fkl, or a finite penalty")
    return r


def episode_loss(net: torch.nn.Module, ep: onpolicy.Episodes, rewards: torch.Tensor,
                 beta: float, group: int, eos: int,
                 baseline: str = "loo") -> tuple[torch.Tensor, dict[str, float]]:
    """``objectives.reverse_kl_loss`` over every decision of the episodes, with advantages
    G - b (b: the leave-one-out mean, or the value model's state baseline); also (mean reward,
    mean KL to the base, R - beta KL)."""
    rows, ts, js, acts = onpolicy.episode_steps(ep)
    acts = torch.where(acts < 0, eos, acts)
    paths = [p + t for p, t in zip(ep.prompts, ep.tokens, strict=True)]
    q = vmodel.q_at(net, paths, rows, js)
    base = ep.base_logp[rows, ts]
    with torch.no_grad():
        logp = objectives.guided_logprobs(base, q, beta)
        kl_e = step_kl(logp, base)
    kl = torch.zeros(len(paths), ep.base_logp.shape[1], dtype=kl_e.dtype)
    kl[rows, ts] = kl_e
    if baseline == "value":
        adv = (onpolicy.rewards_to_go(kl, rewards, beta)[rows, ts]
               - onpolicy.state_baseline(logp, q.detach(), beta))
    else:
        adv = onpolicy.rloo_advantages(kl, rewards, beta, group)[rows, ts]
    loss, _ = objectives.reverse_kl_loss(base, q, acts, adv, beta, len(paths))
    return loss, stats(rewards, kl.sum(1), beta)


def stats(rewards: torch.Tensor, kl: torch.Tensor, beta: float) -> dict[str, float]:
    r, k = float(rewards.mean()), float(kl.double().mean())
    return {"reward": r, "kl_to_base": k, "objective": r - beta * k}


def repeat(prompts: list[list[int]], group: int) -> list[list[int]]:
    return [list(p) for p in prompts for _ in range(group)]


async def held_out_stats(model, base, reward, prompts: list[list[int]], cfg: TrainConfig,
                         eos: int) -> dict[str, float]:
    """Mean reward, KL to the base and R - beta KL of the guided policy on held-out prompts
    (fixed seed, so successive evaluations share their random numbers)."""
    gen = torch.Generator().manual_seed(12345)
    rs, kls = [], []
    chunk = max(1, cfg.batch_size // cfg.group)
    for c0 in range(0, len(prompts), chunk):
        batch = repeat(prompts[c0:c0 + chunk], cfg.group)
        ep = await onpolicy.sample_episodes(base, onpolicy.value_stepper(model), batch, beta=cfg.beta,
                                            max_tokens=cfg.max_tokens, eos=eos, gen=gen)
        r = await score_episodes(reward, ep, cfg.group)
        with torch.no_grad():
            _, st = episode_loss(model, ep, r, cfg.beta, cfg.group, eos)
        rs.append(st["reward"] * len(batch))
        kls.append(st["kl_to_base"] * len(batch))
    n = len(prompts) * cfg.group
    r, k = sum(rs) / n, sum(kls) / n
    return {"val_reward": r, "val_kl_to_base": k, "val_objective": r - cfg.beta * k}


def save_checkpoint(path: Path, model, opt, sched, step: int, gen: torch.Generator,
                    order: list[int], cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step, "gen": gen.get_state(), "order": order,
                "torch_rng": torch.get_rng_state(), "config": cfg.to_dict()}, tmp)
    os.replace(tmp, path)


async def train_loop(cfg: TrainConfig, handle: Any, reward: Any, model: torch.nn.Module,
                     prompt_ids: list[list[int]], work: Path, *, resume: bool, show: bool,
                     stop_after: int | None, exact_eval) -> tuple[int, list[dict[str, Any]]]:
    """Run the on-policy steps; returns (last step, evaluation history). ``exact_eval`` is an
    async callable(model) -> dict for enumerable toys, else None."""
    from training.trainer import cosine, world

    rank, size = world()
    eos = handle.lm.eos_token_id
    n_val = 0 if len(prompt_ids) == 1 else max(1, int(len(prompt_ids) * cfg.val_fraction))
    train_prompts = prompt_ids[:len(prompt_ids) - n_val] if n_val else prompt_ids
    val_prompts = prompt_ids[len(prompt_ids) - n_val:][:EVAL_PROMPTS]
    base = onpolicy.base_stepper(cfg.model, handle.lm)
    net = torch.nn.parallel.DistributedDataParallel(model) if size > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, min(100, cfg.steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, cfg.steps, warmup))
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank)
    order: list[int] = []
    ckpt, metrics_path = work / "checkpoint.pt", work / "metrics.jsonl"
    step = 0
    if resume and ckpt.is_file():
        ck = torch.load(ckpt, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"])
        order, step = list(ck["order"]), int(ck["step"])
        torch.set_rng_state(ck["torch_rng"])
    per_step = cfg.batch_size // cfg.group
    history: list[dict[str, Any]] = []

    async def evaluate(at: int, running: dict[str, float]) -> dict[str, Any]:
        model.eval()
        rec: dict[str, Any] = {"step": at, **{f"train_{k}": v for k, v in running.items()}}
        rec.update(await exact_eval(model) if exact_eval is not None else
                   await held_out_stats(model, base, reward, val_prompts, cfg, eos))
        model.train()
        with metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        history.append(rec)
        return rec

    bar = tqdm(total=cfg.steps, initial=step, desc="train reverse_kl", disable=not show, unit="step")
    model.train()
    running: dict[str, float] = {}
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    t0 = time.time()
    while step < last:
        if len(order) < per_step:
            order = torch.randperm(len(train_prompts), generator=gen).tolist()
        picks, order = order[:per_step], order[per_step:]
        batch = repeat([train_prompts[i] for i in picks], cfg.group)
        ep = await onpolicy.sample_episodes(base, onpolicy.value_stepper(model), batch, beta=cfg.beta,
                                            max_tokens=cfg.max_tokens, eos=eos, gen=gen)
        rewards = await score_episodes(reward, ep, cfg.group)
        loss, st = episode_loss(net, ep, rewards, cfg.beta, cfg.group, eos, cfg.baseline)
        vmodel.clipped_step(loss, model, opt, sched)
        step += 1
        running = st if not running else {k: 0.95 * running[k] + 0.05 * st[k] for k in st}
        bar.update(1)
        bar.set_postfix(R=f"{running['reward']:.3f}", KL=f"{running['kl_to_base']:.3f}")
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            rec = await evaluate(step, running)
            bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items()
                             if k in ("val_objective", "kl_theta_star")})
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == last):
            save_checkpoint(ckpt, model, opt, sched, step, gen, order, cfg)
    bar.close()
    if rank == 0 and step == cfg.steps and (not history or history[-1]["step"] != step):
        await evaluate(step, running)
    if show:
        tqdm.write(f"reverse_kl: {step} steps in {time.time() - t0:.0f} s")
    if size > 1:
        dist.barrier()
    return step, history
