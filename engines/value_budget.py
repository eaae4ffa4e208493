"""The native value models' memory, checked before vLLM starts.

Inside vLLM each native value model holds its weights and a slot KV cache outside vLLM's own
pool (``engines.lean_llama``):

    weights = parameters x b_v
    cache   = 2 x layers x slots x capacity x kv_heads x head_dim x b_v

b_v the value dtype's bytes; slots = max_num_seqs and capacity = max_model_len, each rounded
up to a power of two, is the cache's worst case (it grows by doubling; during the last growth
the old half is held too, so the peak is 1.5 x cache). That must fit in what vLLM leaves:

    GPU  (1 - gpu_memory_utilization) x the device's memory
    CPU  the machine's memory - vLLM's KV space (kv_cache_gib) - the base weights

or in ``value_cache_gib`` when the engine option sets it. Start-up fails with a ValueError that
gives the numbers and the options that shrink them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

GIB = 2**30


def _pow2(n: int, least: int) -> int:
    p = least
    while p < n:
        p *= 2
    return p


def value_model_bytes(path: str | Path, dtype_bytes: int, max_num_seqs: int,
                      max_model_len: int) -> tuple[int, int]:
    """(weights, worst-case peak cache) bytes of the value model at ``path``; the weights are
    counted from its safetensors files (any architecture, tied heads once)."""
    from safetensors import safe_open

    cfg = json.loads((Path(path) / "config.json").read_text())
    params = 0
    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open is not a dict
                params += math.prod(st.get_slice(k).get_shape())
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or h // heads)
    cache = (2 * int(cfg["num_hidden_layers"]) * _pow2(max_num_seqs, 4)
             * _pow2(max_model_len, 64) * kv * head_dim)
    return params * dtype_bytes, int(1.5 * cache * dtype_bytes)


def check_value_budget(base_dir: Path, value_models: dict[str, str], *, dtype_bytes: int,
                       on_cpu: bool, max_num_seqs: int, max_model_len: int,
                       budget_gib: float | None, kv_cache_gib: float,
                       gpu_memory_utilization: float, device_memory: int) -> None:
    """Raise ValueError when the value models' weights and worst-case caches exceed the
    budget (above); ``device_memory``: the GPU's, or the machine's memory on CPU."""
    if not value_models:
        return
    length = int(max_model_len)
    need = sum(sum(value_model_bytes(path, dtype_bytes, max_num_seqs, length))
               for path in value_models.values())
    if budget_gib is not None:
        budget, where = float(budget_gib) * GIB, "value_cache_gib"
    elif on_cpu:
        base_weights = sum(p.stat().st_size for p in base_dir.glob("*.safetensors"))
        budget = device_memory - kv_cache_gib * GIB - base_weights
        where = "the machine's memory less kv_cache_gib and the base weights"
    else:
        budget = (1.0 - gpu_memory_utilization) * device_memory
        where = "what gpu_memory_utilization leaves of the GPU"
    if need > budget:
        raise ValueError(
            f"the value models need up to {need / GIB:.2f} GiB (weights and their KV caches at "
            f"max_num_seqs {max_num_seqs} x max_model_len {length}), more than {where} "
            f"({budget / GIB:.2f} GiB); lower max_num_seqs or max_model_len, use value_dtype="
            "bfloat16, or set value_cache_gib")


def check_engine_budget(vllm_config: Any, base_dir: Path, value_models: dict[str, str],
                        value_dtype: str, budget_gib: float | None, kv_cache_gib: float) -> None:
    """``check_value_budget`` with the sizes vLLM's config settled on (before it starts)."""
    import torch
    from vllm.platforms import current_platform

    from engines.guidance_state import value_dtype as resolve

    if budget_gib is not None and (isinstance(budget_gib, bool) or
                                   not isinstance(budget_gib, (int, float)) or budget_gib <= 0):
        raise ValueError(f"value_cache_gib must be a number > 0, got {budget_gib!r}")
    on_cpu = current_platform.is_cpu()
    model_dtype = vllm_config.model_config.dtype
    dtype = resolve(value_dtype, torch.device("cpu" if on_cpu else "cuda"),
                    model_dtype if isinstance(model_dtype, torch.dtype) else None)
    check_value_budget(base_dir, value_models, dtype_bytes=dtype.itemsize, on_cpu=on_cpu,
                       max_num_seqs=int(vllm_config.scheduler_config.max_num_seqs),
                       max_model_len=int(vllm_config.model_config.max_model_len),
                       budget_gib=budget_gib, kv_cache_gib=kv_cache_gib,
                       gpu_memory_utilization=float(vllm_config.cache_config.gpu_memory_utilization),
                       device_memory=int(current_platform.get_device_total_memory(0)))
