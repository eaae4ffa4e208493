"""`tilt train` under DDP draws its rollouts from one engine per node: 2 gloo processes on CPU
(one node, LOCAL_RANK 0 and 1) train soft_q on the demo base through the transformers engine."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import asdict

import torch
import torch.multiprocessing as mp

from training.config import load_config
from training.rollouts import collect_rollouts

CFG = dict(model="demo", engine="transformers", reward="vader", prompts=["The day was", "I think"],
           max_tokens=6, rollouts=6, branch_points=1, branches=2, steps=4, batch_size=8,
           eval_every=4, ckpt_every=4, hidden=64, layers=1, heads=1, intermediate=64, seed=3,
           threads=1)


def _rank(local_rank: int, port: int, cfg: dict, log: str) -> None:
    """One torchrun-like rank: counts its engine opens and records the rollouts it trains on."""
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE="2",
                      LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    import engines.loader
    import training.offline
    from training.trainer import train

    real_open, real_build = engines.loader.open_engine, training.offline.build_set

    async def counted(*args, **kw):
        with open(os.path.join(log, f"opens-{local_rank}"), "a") as f:
            f.write("open\n")
        return await real_open(*args, **kw)

    def recorded(cfg, prompt_ids, rollouts, eos):
        with open(os.path.join(log, f"rollouts-{local_rank}.json"), "w") as f:
            json.dump([asdict(r) for r in rollouts], f)
        return real_build(cfg, prompt_ids, rollouts, eos)

    engines.loader.open_engine, training.offline.build_set = counted, recorded
    summary = train(load_config(None, cfg), progress=False)
    with open(os.path.join(log, f"summary-{local_rank}.json"), "w") as f:
        json.dump(summary, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_rank_rollouts(cfg) -> list[list[dict]]:
    """What each rank's own engine drew before: rank r's half, seed·1000 + r, a fresh engine."""
    from engines.loader import open_engine
    from rewards.loader import load_reward

    async def one(rank: int) -> list[dict]:
        handle = await open_engine(cfg.model, engine=cfg.engine)
        reward = load_reward(cfg.reward, codec=handle.codec)
        prompts = [handle.codec.encode(p) for p in cfg.prompts]
        got = await collect_rollouts(handle.lm, reward, prompts, rollouts=cfg.rollouts // 2,
                                     max_tokens=cfg.max_tokens, branch_points=cfg.branch_points,
                                     branches=cfg.branches, seed=cfg.seed * 1000 + rank)
        await handle.aclose()
        return [asdict(r) for r in got]
    return [asyncio.run(one(r)) for r in (0, 1)]


def test_two_ranks_train_on_the_rollouts_of_one_engine(tmp_path):
    cfg = {**CFG, "out": str(tmp_path / "out")}
    log = tmp_path / "log"
    log.mkdir()
    ctx = mp.start_processes(_rank, args=(free_port(), cfg, str(log)), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 120
    try:
        while not ctx.join(timeout=2):   # raises with a rank's traceback if one fails
            assert time.monotonic() < deadline, "DDP run timed out"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    # exactly one engine: rank 0 (LOCAL_RANK 0) opened it, rank 1 none
    assert (log / "opens-0").read_text() == "open\n" and not (log / "opens-1").exists()
    # both ranks finished; rank 0 saved the value model
    summary = json.loads((log / "summary-0.json").read_text())
    assert json.loads((log / "summary-1.json").read_text()) == {}
    assert summary["world_size"] == 2 and summary["steps"] == 4
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and (out / "tilt.json").is_file()
    # both ranks trained on the same rollouts, those rank 0 saved ...
    got = json.loads((log / "rollouts-0.json").read_text())
    assert json.loads((log / "rollouts-1.json").read_text()) == got
    saved = torch.load(out / "train" / "rollouts.pt", weights_only=False)["rollouts"]
    assert saved == got and summary["rollouts"] == len(got)
    # ... and they are what each rank's own engine drew before, rank 1's groups shifted
    first, second = per_rank_rollouts(load_config(None, cfg))
    shift = max(r["group"] for r in first) + 1
    for r in second:
        r["group"] += shift if r["start"] > 0 else 0
    assert got == first + second
