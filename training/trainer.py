"""``tilt train``: distil pi* ∝ pi_ref·exp(R/beta) into a value model Q_theta.

    train(cfg) -> open model and reward, encode prompts, load init_from
               -> the objective's loop:  soft_q | iw_fkl  training.offline  (fixed rollout set)
                                         reverse_kl       training.reverse_kl (on-policy episodes)
               -> value model in the engines' format at ``cfg.out`` (training.loop.save_result)

Both loops run on ``training.loop.train_steps`` (schedule, checkpoints, metrics, data parallel)
on ``cfg.device`` (``training.loop.resolve_device``; bf16 autocast on CUDA). Under torchrun one
engine per node (LOCAL_RANK 0) draws the rollouts (``training.nodes``).

Files under ``cfg.out``: the value model (config.json, model.safetensors, tilt.json, tokenizer
files) and ``train/``: rollouts.pt (offline objectives; reused on --resume), checkpoint.pt,
metrics.jsonl, summary.json.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch

from training import loop, nodes, offline, reverse_kl, value_net
from training.config import ConfigError, TrainConfig
from training.exact_eval import exact_report  # noqa: F401 (bench/toy_train.py imports it from here)


async def open_model_and_reward(cfg: TrainConfig) -> tuple[Any, Any]:
    """(engine handle, reward); a model or reward that cannot be loaded -> ConfigError. Under
    torchrun only LOCAL_RANK 0 of a node opens the engine; the others get the codec and
    vocabulary without one (``training.nodes.engineless``)."""
    from engines.loader import open_engine
    from rewards.loader import load_reward

    try:
        handle = (await open_engine(cfg.model, engine=cfg.engine, **cfg.engine_options)
                  if nodes.opens_engine() else nodes.engineless(cfg.model))
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


async def train_async(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
                      stop_after: int | None = None) -> dict[str, Any]:
    device = loop.resolve_device(cfg.device)   # CUDA asked for but absent: exit 2 at once
    with loop.distributed(device):                # nccl on CUDA, else gloo
        rank, _ = loop.world()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if not progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        loop.seed_everything(cfg.seed + rank)
        handle, reward = await open_model_and_reward(cfg)
        try:
            prompt_ids = encode_prompts(handle, cfg.load_prompts())
            # loaded once, before any rollout (a bad init_from exits 2 at once)
            start = (value_net.initial_model(cfg, handle.lm.vocab_size, 64)
                     if cfg.init_from or cfg.init_from_lm or cfg.init_layers else None)
            out = Path(cfg.out)
            work = out / "train"
            work.mkdir(parents=True, exist_ok=True)   # nothing is written for input that fails above
            objective = reverse_kl if cfg.objective == "reverse_kl" else offline
            return await objective.train(cfg, handle, reward, prompt_ids, start, out, work,
                                         resume=resume, show=progress and rank == 0,
                                         stop_after=stop_after, device=device)
        finally:
            await handle.aclose()


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run training (to ``cfg.steps``, or checkpoint and stop at ``stop_after``); returns the
    summary on rank 0 ({} on other ranks)."""
    return asyncio.run(train_async(cfg, resume=resume, progress=progress, stop_after=stop_after))
