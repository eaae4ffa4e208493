"""Minibatches of a ``TrainSet`` and their losses (objectives soft_q and iw_fkl).

A batch is a set of paths with all their entries: one teacher-forced forward of the value
model over the paths gives Q_theta at every entry's state (``training.value_net``). Batches
are drawn on the CPU and moved to the value model's device in ``batch_loss`` (bf16 autocast on
CUDA, ``training.loop.autocast``).
"""

from __future__ import annotations

from typing import Any

import torch

from training import objectives, value_net
from training.config import TrainConfig
from training.loop import Order, autocast
from training.targets import TrainSet


class BaseRows:
    """log pi_ref(. | path[:j]) for training entries (iw_fkl): precomputed through the engine
    protocol for small vocabularies (toys), else a teacher-forced transformers forward of the base
    (fp32 on ``device``, outside autocast). Rows come back on the device of ``rows``."""

    def __init__(self, handle: Any, cfg: TrainConfig, device: str | torch.device = "cpu"):
        self.handle, self.cfg, self.device = handle, cfg, torch.device(device)
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
                resolve_model_dir(self.cfg.model), dtype=torch.float32).to(self.device).eval()

    @torch.no_grad()
    def rows(self, paths: list[list[int]], rows: torch.Tensor, js: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return torch.stack([self.table[tuple(paths[r][:j])] for r, j in
                                zip(rows.tolist(), js.tolist(), strict=True)]).float().to(rows.device)
        ids, _ = value_net.pad_paths(paths)
        at = rows.to(self.device), js.to(self.device)
        with torch.autocast(device_type=self.device.type, enabled=False):
            logits = self.hf(input_ids=ids.to(self.device), use_cache=False).logits[at[0], at[1] - 1]
        return torch.log_softmax(logits.float(), dim=-1).to(rows.device)


class Batches:
    """Minibatches of ``batch_size`` paths (with all their entries), drawn without replacement
    per epoch from a seeded generator (``order``, checkpointed with the run)."""

    def __init__(self, ts: TrainSet, batch_size: int, seed: int):
        self.ts = ts
        by_path = torch.argsort(ts.entries[:, 0], stable=True)
        self.entries, self.targets, self.weights = (ts.entries[by_path], ts.targets[by_path],
                                                    ts.weights[by_path])
        counts = torch.bincount(self.entries[:, 0], minlength=len(ts.paths))
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.order = Order(len(ts.paths), min(batch_size, len(ts.paths)),
                           torch.Generator().manual_seed(seed))

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
        return self.take(self.order.next())

    def all(self, chunk: int = 512):
        for c0 in range(0, len(self.ts.paths), chunk):
            yield self.take(list(range(c0, min(c0 + chunk, len(self.ts.paths)))))


def batch_loss(model, batch, cfg: TrainConfig, base: BaseRows | None) -> torch.Tensor:
    """The objective's loss of a batch, on the model's device (bf16 autocast on CUDA)."""
    dev = value_net.model_device(model)
    paths, *tensors = batch
    with autocast(dev):
        return _batch_loss(model, paths, *(t.to(dev) for t in tensors), cfg=cfg, base=base)


def _batch_loss(model, paths, rows, js, actions, targets, weights, *, cfg: TrainConfig,
                base: BaseRows | None) -> torch.Tensor:
    if cfg.objective == "soft_q" and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        # soft-Q regression reads one action per entry: skip the full-vocabulary head
        q_sa = value_net.q_sa_at(model, paths, rows, js, actions)
        return soft_q(q_sa, targets, weights, cfg)
    # many entries share a state (every action seen there): compute each state's row once
    # (DDP syncs gradients only through its own forward, so it takes this path for soft_q too)
    pos = torch.stack([rows, js], dim=1)
    uniq, inv = torch.unique(pos, dim=0, return_inverse=True)
    q = value_net.q_at(model, paths, uniq[:, 0], uniq[:, 1])
    if cfg.objective == "soft_q":
        return soft_q(q[inv, actions], targets, weights, cfg)
    # iw_fkl: -sum_e w_e log pi_theta(a_e|s_e) = -sum_{s,a} W(s,a) log pi_theta(a|s), grouped by s
    w_sa = torch.zeros(len(uniq), q.shape[1], dtype=q.dtype, device=q.device)
    w_sa.index_put_((inv, actions), weights.to(q.dtype), accumulate=True)
    logp = objectives.guided_logprobs(base.rows(paths, uniq[:, 0], uniq[:, 1]), q, cfg.beta)
    return -(w_sa * logp).sum() / w_sa.sum().clamp_min(1e-12)


def soft_q(q_sa: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
           cfg: TrainConfig) -> torch.Tensor:
    """The soft-Q regression loss ``cfg.q_loss`` names (mse, or exp with ``cfg.exp_clip``)."""
    if cfg.q_loss == "exp":
        return objectives.soft_q_exp_loss(q_sa, targets.float(), weights.float(), cfg.beta,
                                          u_max=cfg.exp_clip)
    return objectives.soft_q_loss(q_sa, targets.float(), weights.float())


@torch.no_grad()
def eval_loss(model, batches: Batches, cfg: TrainConfig, base: BaseRows | None) -> float:
    """The loss over every batch, weighted by their total entry weight."""
    tot, wsum = 0.0, 0.0
    for b in batches.all():
        w = float(b[5].sum())
        if w > 0:
            tot += float(batch_loss(model, b, cfg, base)) * w
            wsum += w
    return tot / wsum if wsum else float("nan")
