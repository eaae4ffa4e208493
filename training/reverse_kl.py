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

Data parallel: every rank samples its own episodes (seed·7919 + rank) through the lean forward
of the base (``onpolicy.base_stepper``), not the engine, so ranks without one (``training.nodes``)
need a base that forward supports; toys are pure Python on every rank.

Evaluation: on a toy with one prompt, the exact report (KL(pi_theta || pi*) by enumeration);
otherwise mean reward, KL to the base and R - beta KL on up to ``EVAL_PROMPTS`` held-out
prompts x ``group`` completions with a fixed seed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from decoders.blocks import step_kl
from training import loop, nodes, objectives, onpolicy, value_net
from training.config import ConfigError, TrainConfig
from training.exact_eval import exact_evaluator

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
    mean KL to the base, R - beta KL). Computed on ``net``'s device (episodes are on the CPU;
    bf16 autocast on CUDA)."""
    dev = value_net.model_device(net)
    steps = onpolicy.episode_steps(ep)
    base = ep.base_logp[steps[0], steps[1]].to(dev)
    rows, ts, js, acts = (x.to(dev) for x in steps)
    acts = torch.where(acts < 0, eos, acts)
    rewards = rewards.to(dev)
    paths = [p + t for p, t in zip(ep.prompts, ep.tokens, strict=True)]
    with loop.autocast(dev):
        q = value_net.q_at(net, paths, rows, js)
        with torch.no_grad():
            logp = objectives.guided_logprobs(base, q, beta)
            kl_e = step_kl(logp, base)
        kl = torch.zeros(len(paths), ep.base_logp.shape[1], dtype=kl_e.dtype, device=dev)
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


async def train(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]],
                start: torch.nn.Module | None, out: Path, work: Path, *, resume: bool, show: bool,
                stop_after: int | None, device: torch.device | None = None) -> dict[str, Any]:
    """On-policy steps through ``loop.train_steps`` on ``device`` (default: ``cfg.device``
    resolved; episodes are sampled on the CPU); returns the summary on rank 0."""
    rank, size = loop.world()
    device = device if device is not None else loop.resolve_device(cfg.device)
    eos, vocab = handle.lm.eos_token_id, handle.lm.vocab_size
    model = (start if start is not None else value_net.initial_model(
        cfg, vocab, max(64, max(len(p) for p in prompt_ids) + cfg.max_tokens + 1))).to(device)
    exact = exact_evaluator(cfg, handle, reward, prompt_ids)
    n_val = 0 if len(prompt_ids) == 1 else max(1, int(len(prompt_ids) * cfg.val_fraction))
    train_prompts = prompt_ids[:len(prompt_ids) - n_val] if n_val else prompt_ids
    val_prompts = prompt_ids[len(prompt_ids) - n_val:][:EVAL_PROMPTS]
    base = onpolicy.base_stepper(cfg.model, handle.lm)
    if isinstance(base, onpolicy.ProtocolStepper) and isinstance(handle, nodes.Engineless):
        raise ConfigError(f"reverse_kl with several ranks per node needs a base the lean forward "
                          f"runs (Llama, Qwen2/3, Mistral): {cfg.model} is not one, and only "
                          "LOCAL_RANK 0 opens an engine; use --nproc-per-node 1")
    net = loop.data_parallel(model)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank)  # draws prompts and episodes
    order = loop.Order(len(train_prompts), cfg.batch_size // cfg.group, gen)

    async def step():
        batch = repeat([train_prompts[i] for i in order.next()], cfg.group)
        ep = await onpolicy.sample_episodes(base, onpolicy.value_stepper(model), batch, beta=cfg.beta,
                                            max_tokens=cfg.max_tokens, eos=eos, gen=gen)
        rewards = await score_episodes(reward, ep, cfg.group)
        return episode_loss(net, ep, rewards, cfg.beta, cfg.group, eos, cfg.baseline)

    async def evaluate() -> dict[str, Any]:
        if exact is not None:
            return await exact(model)
        return await held_out_stats(model, base, reward, val_prompts, cfg, eos)

    t1 = time.time()
    step_at, history = await loop.train_steps(
        cfg, model, order, work, step=step, evaluate=evaluate, label="train reverse_kl",
        postfix=lambda r: {"R": f"{r['reward']:.3f}", "KL": f"{r['kl_to_base']:.3f}"},
        shown=("val_objective", "kl_theta_star"), resume=resume, show=show, stop_after=stop_after)
    if show:
        tqdm.write(f"reverse_kl: {step_at} steps in {time.time() - t1:.0f} s")

    def summary() -> dict[str, Any]:
        return {"objective": cfg.objective, "beta": cfg.beta, "steps": step_at, "world_size": size,
                "device": str(device),
                "episodes": step_at * cfg.batch_size * size, "group": cfg.group,
                "baseline": cfg.baseline, "lr": cfg.lr, "init_from": cfg.init_from,
                "init_scale": cfg.init_scale, "prompts": len(prompt_ids),
                "parameters": value_net.num_parameters(model), "seed": cfg.seed,
                "seconds_train": round(time.time() - t1, 2),
                "final": history[-1] if history else {}}
    return loop.finish(cfg, model, vocab, step_at, out, work, summary)
