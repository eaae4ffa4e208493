"""``tilt train``: distil pi* ∝ pi_ref·exp(R/beta) into a value model Q_theta.

    rollouts (engine) -> rewards (batched) -> TrainSet (soft_q | iw_fkl) -> AdamW steps
    -> periodic evaluation, checkpoints -> value model in the engines' format at ``cfg.out``

    reverse_kl (``training.reverse_kl``): no rollout set; every step samples episodes of the
    current guided policy and descends KL(pi_theta || pi*) on them.

Files under ``cfg.out``: the value model (config.json, model.safetensors, tilt.json, tokenizer
files) and ``train/``: rollouts.pt (reused on --resume), checkpoint.pt, metrics.jsonl.

Data parallel: under ``torchrun --nproc_per_node=K`` (env WORLD_SIZE > 1) every rank collects
1/K of the rollouts (seed + rank), the rollouts are all-gathered so every rank builds the same
targets, and the model is wrapped in DistributedDataParallel (gloo on CPU); ranks draw different
minibatches. Rank 0 evaluates, checkpoints and saves.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from training import objectives, vmodel
from training.config import ConfigError, TrainConfig
from training.rollouts import Rollout, collect_rollouts
from training.targets import TrainSet, iw_fkl_set, onpolicy_q_set, soft_q_set

EXACT_MAX_SEQUENCES = 200_000  # toy evaluation enumerates when the space is at most this big


# ---- setup ------------------------------------------------------------------------------
async def open_model_and_reward(cfg: TrainConfig) -> tuple[Any, Any]:
    """(engine handle, reward); a model or reward that cannot be loaded -> ConfigError."""
    from engines.loader import open_engine
    from rewards.loader import load_reward

    try:
        handle = await open_engine(cfg.model, engine=cfg.engine, **cfg.engine_options)
    except Exception as exc:  # noqa: BLE001 (any load failure is reported the same way)
        raise ConfigError(f"cannot load model {cfg.model!r} (engine {cfg.engine}): {exc}") from exc
    try:
        reward = load_reward(cfg.reward, codec=handle.codec)
    except Exception as exc:  # noqa: BLE001
        await handle.aclose()
        raise ConfigError(f"cannot load reward {cfg.reward!r}: {exc}") from exc
    return handle, reward


def encode_prompts(handle: Any, prompts: list[str]) -> list[list[int]]:
    ids = []
    for p in prompts:
        try:
            enc = list(handle.codec.encode(p))
        except ValueError as exc:
            raise ConfigError(f"cannot encode prompt {p!r}: {exc}") from exc
        if not enc:
            raise ConfigError(f"prompt {p!r} encodes to no tokens: value models read Q at the last "
                              "position of a context, so prompts must be non-empty (toy: e.g. '<0>')")
        ids.append(enc)
    return ids


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed job, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def maybe_init_distributed() -> bool:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        return True
    return False


# ---- rollouts -----------------------------------------------------------------------------
async def get_rollouts(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]],
                       work: Path, resume: bool, show: bool = True,
                       behaviour: torch.nn.Module | None = None) -> list[Rollout]:
    """Collected (this rank's share, then all-gathered) or reloaded from train/rollouts.pt;
    ``rollout_policy: guided`` rolls out ``behaviour``'s guided policy."""
    rank, size = world()
    path = work / "rollouts.pt"
    if resume and path.is_file():
        saved = torch.load(path, weights_only=False)
        return [Rollout(**r) for r in saved["rollouts"]]
    share = cfg.rollouts // size + (1 if rank < cfg.rollouts % size else 0)
    if cfg.rollout_policy == "guided":
        mine = await guided_rollouts(cfg, handle, reward, prompt_ids, share, show and rank == 0,
                                     behaviour)
    else:
        mine = await collect_rollouts(handle.lm, reward, prompt_ids, rollouts=share,
                                      max_tokens=cfg.max_tokens, branch_points=cfg.branch_points,
                                      branches=cfg.branches, seed=cfg.seed * 1000 + rank,
                                      temperature=cfg.temperature, branch_from=cfg.branch_from,
                                      beta=cfg.beta, progress=show and rank == 0)
    if size > 1:
        gathered: list[Any] = [None] * size
        dist.all_gather_object(gathered, [asdict(r) for r in mine])
        offset, allr = 0, []
        for part in gathered:  # keep group ids distinct across ranks
            rs = [Rollout(**r) for r in part]
            for r in rs:
                if r.start > 0:
                    r.group += offset
            offset += max((r.group for r in rs), default=0) + 1
            allr.extend(rs)
        mine = allr
    if rank == 0:
        torch.save({"rollouts": [asdict(r) for r in mine], "config": cfg.to_dict()}, path)
    return mine


async def guided_rollouts(cfg: TrainConfig, handle: Any, reward: Any, prompt_ids: list[list[int]],
                          per_prompt: int, show: bool, behaviour: torch.nn.Module) -> list[Rollout]:
    """Rollouts of the guided policy softmax(l_ref + Q/guide_beta) of ``behaviour`` (the
    starting model, frozen while they are drawn)."""
    from training import onpolicy

    rank, _ = world()
    return await onpolicy.collect_guided_rollouts(
        onpolicy.base_stepper(cfg.model, handle.lm), behaviour, reward, prompt_ids,
        rollouts=per_prompt, max_tokens=cfg.max_tokens, beta=cfg.guide_beta or cfg.beta,
        eos=handle.lm.eos_token_id, seed=cfg.seed * 1000 + rank, progress=show)


def build_set(cfg: TrainConfig, prompt_ids: list[list[int]], rollouts: list[Rollout], eos: int) -> TrainSet:
    if cfg.rollout_policy == "guided":
        return onpolicy_q_set(prompt_ids, rollouts, cfg.beta, eos)
    if cfg.objective == "soft_q":
        return soft_q_set(prompt_ids, rollouts, cfg.beta, eos)
    return iw_fkl_set(prompt_ids, rollouts, cfg.beta, eos, cfg.max_tokens)


# ---- base log-probs for iw_fkl -------------------------------------------------------------
class BaseRows:
    """log pi_ref(. | path[:j]) for training entries: precomputed through the engine protocol
    for small vocabularies (toys), else a teacher-forced transformers forward of the base."""

    def __init__(self, handle: Any, cfg: TrainConfig):
        self.handle, self.cfg = handle, cfg
        self.table: dict[tuple[int, ...], torch.Tensor] | None = None
        self.hf = None

    async def prepare(self, ts: TrainSet) -> None:
        if self.cfg.model.startswith("toy:"):
            keys = sorted({tuple(ts.paths[p][:j]) for p, j, _ in ts.entries.tolist()})
            rows = torch.cat([await self.handle.lm.logprobs([list(k) for k in keys[i:i + 4096]])
                              for i in range(0, len(keys), 4096)])
            self.table = dict(zip(keys, rows, strict=True))
        elif self.hf is None:
            from transformers import AutoModelForCausalLM

            from engines.loader import resolve_model_dir

            self.hf = AutoModelForCausalLM.from_pretrained(
                resolve_model_dir(self.cfg.model), dtype=torch.float32).eval()

    @torch.no_grad()
    def rows(self, paths: list[list[int]], rows: torch.Tensor, js: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return torch.stack([self.table[tuple(paths[r][:j])] for r, j in
                                zip(rows.tolist(), js.tolist(), strict=True)]).float()
        ids, _ = vmodel.pad_paths(paths)
        logits = self.hf(input_ids=ids, use_cache=False).logits[rows, js - 1]
        return torch.log_softmax(logits.float(), dim=-1)


# ---- loss ------------------------------------------------------------------------------------
class Batches:
    """Minibatches of ``batch_size`` paths (with all their entries), drawn without replacement
    per epoch from a seeded generator."""

    def __init__(self, ts: TrainSet, batch_size: int, seed: int):
        self.ts = ts
        order = torch.argsort(ts.entries[:, 0], stable=True)
        self.entries, self.targets, self.weights = ts.entries[order], ts.targets[order], ts.weights[order]
        counts = torch.bincount(self.entries[:, 0], minlength=len(ts.paths))
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.batch_size = min(batch_size, len(ts.paths))
        self.gen = torch.Generator().manual_seed(seed)
        self._perm: list[int] = []

    def take(self, path_ids: list[int]):
        """(paths, local row index, j, action, target, weight) for the given paths."""
        parts = [torch.arange(int(self.offsets[p]), int(self.offsets[p + 1])) for p in path_ids]
        idx = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        local = {p: i for i, p in enumerate(path_ids)}
        ent = self.entries[idx]
        rows = torch.tensor([local[int(p)] for p in ent[:, 0]], dtype=torch.long)
        return ([self.ts.paths[p] for p in path_ids], rows, ent[:, 1], ent[:, 2],
                self.targets[idx], self.weights[idx])

    def next(self):
        if len(self._perm) < self.batch_size:
            self._perm = torch.randperm(len(self.ts.paths), generator=self.gen).tolist()
        ids, self._perm = self._perm[:self.batch_size], self._perm[self.batch_size:]
        return self.take(ids)

    def all(self, chunk: int = 512):
        for c0 in range(0, len(self.ts.paths), chunk):
            yield self.take(list(range(c0, min(c0 + chunk, len(self.ts.paths)))))


def batch_loss(model, batch, cfg: TrainConfig, base: BaseRows | None) -> torch.Tensor:
    paths, rows, js, actions, targets, weights = batch
    if cfg.objective == "soft_q" and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        # soft-Q regression reads one action per entry: skip the full-vocabulary head
        q_sa = vmodel.q_sa_at(model, paths, rows, js, actions)
        return _soft_q(q_sa, targets, weights, cfg)
    # many entries share a state (every action seen there): compute each state's row once
    # (DDP syncs gradients only through its own forward, so it takes this path for soft_q too)
    pos = torch.stack([rows, js], dim=1)
    uniq, inv = torch.unique(pos, dim=0, return_inverse=True)
    q = vmodel.q_at(model, paths, uniq[:, 0], uniq[:, 1])
    if cfg.objective == "soft_q":
        return _soft_q(q[inv, actions], targets, weights, cfg)
    # iw_fkl: -sum_e w_e log pi_theta(a_e|s_e) = -sum_{s,a} W(s,a) log pi_theta(a|s), grouped by s
    w_sa = torch.zeros(len(uniq), q.shape[1], dtype=q.dtype)
    w_sa.index_put_((inv, actions), weights.to(q.dtype), accumulate=True)
    logp = objectives.guided_logprobs(base.rows(paths, uniq[:, 0], uniq[:, 1]), q, cfg.beta)
    return -(w_sa * logp).sum() / w_sa.sum().clamp_min(1e-12)


def _soft_q(q_sa: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if cfg.q_loss == "exp":
        return objectives.soft_q_exp_loss(q_sa, targets.float(), weights.float(), cfg.beta,
                                               u_max=cfg.exp_clip)
    return objectives.soft_q_loss(q_sa, targets.float(), weights.float())


@torch.no_grad()
def eval_loss(model, batches: Batches, cfg: TrainConfig, base: BaseRows | None) -> float:
    tot, wsum = 0.0, 0.0
    for b in batches.all():
        w = float(b[5].sum())
        if w > 0:
            tot += float(batch_loss(model, b, cfg, base)) * w
            wsum += w
    return tot / wsum if wsum else float("nan")


# ---- toy: exact evaluation ------------------------------------------------------------------
def model_q_fn(model):
    """contexts -> Q_theta(context, .) at the last position (float64 [B, V])."""
    def q_fn(contexts: list[list[int]]) -> torch.Tensor:
        js = torch.tensor([len(c) for c in contexts])
        with torch.no_grad():
            return vmodel.q_at(model, contexts, torch.arange(len(contexts)), js).double()
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


# ---- checkpoints ------------------------------------------------------------------------------
def save_checkpoint(path: Path, model, opt, sched, step: int, batches: Batches, cfg: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step, "gen": batches.gen.get_state(), "perm": batches._perm,
                "torch_rng": torch.get_rng_state(), "config": cfg.to_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, opt, sched, batches: Batches) -> int:
    ck = torch.load(path, weights_only=False)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    batches.gen.set_state(ck["gen"])
    batches._perm = list(ck["perm"])
    torch.set_rng_state(ck["torch_rng"])
    return int(ck["step"])


def cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


# ---- the loop ---------------------------------------------------------------------------------
async def train_async(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
                      stop_after: int | None = None) -> dict[str, Any]:
    distributed = maybe_init_distributed()
    rank, size = world()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    seed_everything(cfg.seed + rank)
    out = Path(cfg.out)
    work = out / "train"   # created once the model, reward and prompts have loaded
    handle, reward = await open_model_and_reward(cfg)
    try:
        return await _train(cfg, handle, reward, out, work, resume, progress and rank == 0, stop_after)
    finally:
        await handle.aclose()
        if distributed:
            dist.destroy_process_group()


def initial_model(cfg: TrainConfig, vocab: int, max_positions: int) -> torch.nn.Module:
    """The value model training starts from: ``init_from`` (an existing value model of this
    base) or a fresh one of the configured architecture (zero head: Q = 0)."""
    if cfg.init_from:
        try:
            model = vmodel.load_value_model(cfg.init_from, cfg.model, vocab)
        except ValueError as exc:
            raise ConfigError(f"cannot start from {cfg.init_from!r}: {exc}") from exc
        vmodel.scale_q(model, cfg.init_scale)
        return model
    return vmodel.new_value_model(vocab, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                                  intermediate=cfg.intermediate, seed=cfg.seed,
                                  tie=cfg.tie_embeddings, max_positions=max_positions)


async def _train(cfg, handle, reward, out: Path, work: Path, resume: bool, show: bool,
                 stop_after: int | None = None) -> dict[str, Any]:
    rank, size = world()
    prompt_ids = encode_prompts(handle, cfg.load_prompts())
    eos, vocab = handle.lm.eos_token_id, handle.lm.vocab_size
    # loaded once, before any rollout (a bad init_from exits 2 at once)
    start = initial_model(cfg, vocab, 64) if cfg.init_from else None
    work.mkdir(parents=True, exist_ok=True)   # nothing is written for input that fails above
    if cfg.objective == "reverse_kl":
        return await _train_reverse_kl(cfg, handle, reward, prompt_ids, out, work, resume, show,
                                       stop_after, start)
    t0 = time.time()
    rollouts = await get_rollouts(cfg, handle, reward, prompt_ids, work, resume, show, start)
    t_roll = time.time() - t0
    full = build_set(cfg, prompt_ids, rollouts, eos)
    train_set, val_set = full.split(cfg.val_fraction, cfg.seed)
    base = None
    if cfg.objective == "iw_fkl":
        base = BaseRows(handle, cfg)
        await base.prepare(full)
    model = start if start is not None else initial_model(cfg, vocab,
                                                           max(64, max(len(p) for p in full.paths) + 1))
    net = torch.nn.parallel.DistributedDataParallel(model) if size > 1 else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, min(100, cfg.steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, cfg.steps, warmup))
    batches = Batches(train_set, cfg.batch_size, cfg.seed * 7919 + rank)
    val_batches = Batches(val_set, cfg.batch_size, 0) if len(val_set.paths) else None
    ckpt = work / "checkpoint.pt"
    step = 0
    if resume and ckpt.is_file():
        step = load_checkpoint(ckpt, model, opt, sched, batches)
    exact = toy_enumerable(cfg, handle) and len(prompt_ids) == 1
    metrics_path = work / "metrics.jsonl"
    history: list[dict[str, Any]] = []

    async def evaluate(at: int, train_loss: float) -> dict[str, Any]:
        model.eval()
        rec: dict[str, Any] = {"step": at, "train_loss": train_loss}
        if val_batches is not None:
            rec["val_loss"] = eval_loss(model, val_batches, cfg, base)
        if exact:
            rec.update(await exact_report(handle.lm, reward, prompt_ids[0], cfg.max_tokens,
                                          cfg.beta, model_q_fn(model)))
        model.train()
        with metrics_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        history.append(rec)
        return rec

    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.objective}", disable=not show, unit="step")
    model.train()
    t1, running = time.time(), float("nan")
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    while step < last:
        loss = batch_loss(net, batches.next(), cfg, base)
        vmodel.clipped_step(loss, model, opt, sched)
        step += 1
        lv = float(loss.detach())
        running = lv if math.isnan(running) else 0.95 * running + 0.05 * lv
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}")
        if rank == 0 and (step % cfg.eval_every == 0 or step == cfg.steps):
            rec = await evaluate(step, running)
            bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items()
                             if k in ("train_loss", "val_loss", "kl_theta_star")})
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == last):
            save_checkpoint(ckpt, model, opt, sched, step, batches, cfg)
    bar.close()
    if step < cfg.steps:  # stopped early (--stop-after): the checkpoint is the result
        if size > 1:
            dist.barrier()
        return {"stopped_at": step, "checkpoint": str(ckpt)} if rank == 0 else {}
    t_train = time.time() - t1
    summary: dict[str, Any] = {}
    if rank == 0:
        if not history or history[-1]["step"] != step:
            await evaluate(step, running)
        summary = {
            "objective": cfg.objective, "q_loss": cfg.q_loss, "beta": cfg.beta, "steps": step, "world_size": size,
            **({"init_from": cfg.init_from, "init_scale": cfg.init_scale} if cfg.init_from else {}),
            **({"rollout_policy": "guided", "guide_beta": cfg.guide_beta or cfg.beta}
               if cfg.rollout_policy == "guided" else {}),
            **({"exp_clip": cfg.exp_clip} if cfg.q_loss == "exp" else {}),
            "rollouts": len(rollouts), "paths": len(full.paths), "entries": int(len(full.entries)),
            "parameters": vmodel.num_parameters(model), "seed": cfg.seed,
            "seconds_rollouts": round(t_roll, 2), "seconds_train": round(t_train, 2),
            "final": history[-1] if history else {},
        }
        save_result(model, cfg, vocab, summary, out, work)
    if size > 1:
        dist.barrier()
    return summary


def save_result(model, cfg: TrainConfig, vocab: int, summary: dict[str, Any], out: Path,
                work: Path) -> None:
    """Write the trained value model to ``out`` (manifest records ``summary``) and the summary
    to ``work/summary.json``."""
    model.eval()
    vmodel.save(model, out, base=cfg.model, vocab_size=vocab, reward=cfg.reward, beta=cfg.beta,
                training=summary)
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


async def _train_reverse_kl(cfg, handle, reward, prompt_ids, out: Path, work: Path, resume: bool,
                            show: bool, stop_after: int | None,
                            start: torch.nn.Module | None) -> dict[str, Any]:
    """The on-policy objective (``training.reverse_kl``): no rollout set, episodes per step."""
    from training import reverse_kl

    rank, size = world()
    vocab = handle.lm.vocab_size
    model = start if start is not None else initial_model(
        cfg, vocab, max(64, max(len(p) for p in prompt_ids) + cfg.max_tokens + 1))
    exact_eval = None
    if toy_enumerable(cfg, handle) and len(prompt_ids) == 1:
        async def exact_eval(m):
            return await exact_report(handle.lm, reward, prompt_ids[0], cfg.max_tokens, cfg.beta,
                                      model_q_fn(m))
    t1 = time.time()
    step, history = await reverse_kl.train_loop(cfg, handle, reward, model, prompt_ids, work,
                                                resume=resume, show=show, stop_after=stop_after,
                                                exact_eval=exact_eval)
    if step < cfg.steps:
        return {"stopped_at": step, "checkpoint": str(work / "checkpoint.pt")} if rank == 0 else {}
    summary: dict[str, Any] = {}
    if rank == 0:
        summary = {"objective": cfg.objective, "beta": cfg.beta, "steps": step, "world_size": size,
                   "episodes": step * cfg.batch_size * size, "group": cfg.group,
                   "baseline": cfg.baseline, "lr": cfg.lr, "init_from": cfg.init_from,
                   "init_scale": cfg.init_scale, "prompts": len(prompt_ids),
                   "parameters": vmodel.num_parameters(model), "seed": cfg.seed,
                   "seconds_train": round(time.time() - t1, 2),
                   "final": history[-1] if history else {}}
        save_result(model, cfg, vocab, summary, out, work)
    if size > 1:
        dist.barrier()
    return summary


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run training (to ``cfg.steps``, or checkpoint and stop at ``stop_after``); returns the
    summary on rank 0 ({} on other ranks)."""
    return asyncio.run(train_async(cfg, resume=resume, progress=progress, stop_after=stop_after))
