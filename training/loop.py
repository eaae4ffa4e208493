"""What every objective's training loop shares, and the loop itself (``train_steps``).

An objective (``training.offline``: soft_q / iw_fkl; ``training.reverse_kl``) builds its model
and data, then hands ``train_steps`` two callables: one optimisation step (loss and statistics
of a minibatch) and one evaluation. Here: seeding, data parallel, AdamW with the warm-up +
cosine schedule, the seeded order minibatches and prompts are drawn in, checkpoints (written in
one place, ``save_checkpoint``), the metrics log and the saved result.

Files under ``cfg.out``: the value model (``save_result``) and ``train/``: checkpoint.pt,
metrics.jsonl (one evaluation a line), summary.json.

Data parallel: under ``torchrun`` (env WORLD_SIZE > 1) a process group (``distributed``) whose
backend follows the training device (``backend``): NCCL when it is CUDA and this torch build has
NCCL, gloo otherwise (CPU training, as before). The model is wrapped in DistributedDataParallel;
rank 0 evaluates, checkpoints and saves. Rollouts come from one engine per node, opened by
LOCAL_RANK 0 (``training.nodes``). Tested with 2 gloo processes on CPU; the NCCL path has not
been run (no GPU here).

Device (``cfg.device``, ``resolve_device``): the value model, its optimiser state and every
training batch live there; rollouts and their targets stay on CPU (batches are moved per step,
``training.batches``). On CUDA the forward and loss run under bf16 autocast (``autocast``) with
fp32 master weights; checkpoints load onto the CPU first and saved value models are fp32 on
CPU. Under DDP ``cuda`` means each rank's ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from training import nodes, value_net
from training.config import ConfigError, TrainConfig

CHECKPOINT, METRICS, SUMMARY = "checkpoint.pt", "metrics.jsonl", "summary.json"

Record = dict[str, Any]


# ---- processes ------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed job, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def backend(device: torch.device) -> str:
    """The process group's backend for a training device: nccl on CUDA (when this torch has
    NCCL), else gloo."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


@contextmanager
def distributed(device: torch.device = torch.device("cpu")) -> Iterator[None]:
    """A process group (``backend(device)``) while training runs under torchrun (WORLD_SIZE > 1).
    ``device`` is the resolved training device (``resolve_device`` runs first)."""
    started = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group(backend=backend(device))
    try:
        yield
    finally:
        if started:
            dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    """The module the loss is computed through: DDP (gradients averaged over ranks) or the model."""
    if world()[1] == 1:
        return model
    dev = value_net.model_device(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[dev] if dev.type == "cuda" else None)


# ---- device ---------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``cfg.device`` as a torch device: auto -> cuda if available else cpu; cuda -> cuda:0, or
    cuda:LOCAL_RANK under torchrun (read from its environment: this runs before the process
    group starts, which needs the device). CUDA asked for but absent (or N out of range) ->
    ConfigError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available "
                          "(torch.cuda.is_available() is False); use --device cpu or auto")
    if name == "cuda":
        name = f"cuda:{nodes.local_rank()[0]}"
    dev = torch.device(name)
    if dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    torch.cuda.set_device(dev)
    return dev


def autocast(device: torch.device):
    """bf16 autocast on CUDA (fp32 weights; bf16 needs no GradScaler); nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


# ---- optimisation ---------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the learning rate at ``step``: linear warm-up (step 0 already at 1/warmup),
    then cosine decay from 1 to 0 at ``total``. transformers' cosine schedules differ: theirs
    start at 0 (or, ``..._warmup_lr_rate``, decay one step early), so they would move trained
    models (tests/training/test_loop.py)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """AdamW and its schedule: warm-up over 5% of the steps (1 to 100), then cosine decay."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, min(100, cfg.steps // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, warmup))
    return opt, sched


def clipped_step(loss: torch.Tensor, model: torch.nn.Module, opt, sched, max_norm: float = 1.0) -> None:
    """One optimiser step: backward, clip the gradient norm, step, schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    sched.step()


class Order:
    """``k`` distinct indices of range(n) per ``next()``, without replacement: a fresh
    permutation from ``gen`` whenever fewer than ``k`` are left (the leftover is dropped).
    Minibatches of paths (offline) and of prompts (reverse_kl) are drawn this way."""

    def __init__(self, n: int, k: int, gen: torch.Generator):
        self.n, self.k, self.gen = n, k, gen
        self.perm: list[int] = []

    def next(self) -> list[int]:
        if len(self.perm) < self.k:
            self.perm = torch.randperm(self.n, generator=self.gen).tolist()
        ids, self.perm = self.perm[:self.k], self.perm[self.k:]
        return ids


# ---- files ----------------------------------------------------------------------------------
def save_checkpoint(path: Path, model, opt, sched, step: int, order: Order, cfg: TrainConfig) -> None:
    """Everything a resumed run needs to continue as if uninterrupted (atomic replace)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step, "gen": order.gen.get_state(), "perm": order.perm,
                "torch_rng": torch.get_rng_state(), "config": cfg.to_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, opt, sched, order: Order) -> int:
    """Restore a checkpoint into the run's objects; returns its step."""
    ck = torch.load(path, map_location="cpu", weights_only=False)  # load_state_dict moves it
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    order.gen.set_state(ck["gen"])
    order.perm = list(ck["perm"] if "perm" in ck else ck["order"])  # "order": older reverse_kl runs
    torch.set_rng_state(ck["torch_rng"])
    return int(ck["step"])


def save_result(model, cfg: TrainConfig, vocab: int, summary: Record, out: Path, work: Path) -> None:
    """Write the trained value model to ``out`` (its manifest records ``summary``) and the
    summary to ``work/summary.json``. The model moves to the CPU (fp32) first."""
    model.to(device="cpu", dtype=torch.float32).eval()
    value_net.save(model, out, base=cfg.model, vocab_size=vocab, reward=cfg.reward, beta=cfg.beta,
                   training=summary)
    (work / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")


def finish(cfg: TrainConfig, model, vocab: int, step: int, out: Path, work: Path,
           summary: Callable[[], Record]) -> Record:
    """The run's result on rank 0 ({} on the others): stopped early (``stop_after``), the
    checkpoint; else ``summary()``, saved with the model."""
    rank, _ = world()
    result: Record = {}
    if rank == 0 and step < cfg.steps:
        result = {"stopped_at": step, "checkpoint": str(work / CHECKPOINT)}
    elif rank == 0:
        result = summary()
        save_result(model, cfg, vocab, result, out, work)
    barrier()
    return result


# ---- the loop -------------------------------------------------------------------------------
def smooth(running: dict[str, float], stats: dict[str, float]) -> dict[str, float]:
    """Exponential moving average (0.95) of step statistics; a missing or NaN entry restarts."""
    return {k: v if math.isnan(running.get(k, math.nan)) else 0.95 * running[k] + 0.05 * v
            for k, v in stats.items()}


async def train_steps(cfg: TrainConfig, model: torch.nn.Module, order: Order, work: Path, *,
                      step: Callable[[], Awaitable[tuple[torch.Tensor, dict[str, float]]]],
                      evaluate: Callable[[], Awaitable[Record]], label: str,
                      postfix: Callable[[dict[str, float]], dict[str, str]], shown: tuple[str, ...],
                      running: dict[str, float] | None = None, resume: bool = False,
                      show: bool = True, stop_after: int | None = None) -> tuple[int, list[Record]]:
    """Optimisation steps to ``cfg.steps`` (or ``stop_after``): ``await step()`` gives a
    minibatch's (loss, statistics); every ``eval_every`` steps and at the end rank 0 logs
    {"step", "train_<stat>" (running averages), **await evaluate()}; every ``ckpt_every`` steps
    and at the last one it checkpoints. Resumes from the checkpoint when asked. Returns (the
    last step, the evaluation records of this run)."""
    rank, _ = world()
    opt, sched = optimizer(model, cfg)
    ckpt, metrics = work / CHECKPOINT, work / METRICS
    at = load_checkpoint(ckpt, model, opt, sched, order) if resume and ckpt.is_file() else 0
    history: list[Record] = []
    running = dict(running or {})

    async def record() -> Record:
        model.eval()
        rec = {"step": at, **{f"train_{k}": v for k, v in running.items()}, **await evaluate()}
        model.train()
        with metrics.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        history.append(rec)
        return rec

    bar = tqdm(total=cfg.steps, initial=at, desc=label, disable=not show, unit="step")
    model.train()
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    while at < last:
        loss, stats = await step()
        clipped_step(loss, model, opt, sched)
        at += 1
        running = smooth(running, stats)
        bar.update(1)
        bar.set_postfix(postfix(running))
        if rank == 0 and (at % cfg.eval_every == 0 or at == cfg.steps):
            rec = await record()
            bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if k in shown})
        if rank == 0 and (at % cfg.ckpt_every == 0 or at == last):
            save_checkpoint(ckpt, model, opt, sched, at, order, cfg)
        # Suspend once a step, so a SIGTERM's cancellation (tilt.runner) reaches the loop even
        # when no step awaits anything real (a toy engine's rollouts never suspend).
        await asyncio.sleep(0)
    bar.close()
    if rank == 0 and at == cfg.steps and (not history or history[-1]["step"] != at):
        await record()   # resumed at the end: evaluate the final model once more
    return at, history
