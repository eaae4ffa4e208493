"""The native value models' memory is checked before vLLM starts (``engines.value_budget``):
the weights' size is the model's own parameter count, the cache its worst case, and a budget
that cannot hold them is a start-up error naming the options to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.lean_llama import LeanLlama
from engines.value_budget import GIB, check_value_budget, value_model_bytes


def test_weights_are_the_parameters_and_the_cache_its_worst_case(engine_models):
    for path in [engine_models.value_model, *engine_models.arch_vms.values()]:
        lean = LeanLlama(path)
        w, c = value_model_bytes(path, 4, max_num_seqs=64, max_model_len=2000)
        assert w == 4 * lean.num_parameters
        per_token = 2 * lean.n_layers * lean.n_kv * lean.head_dim * 4
        assert c == 1.5 * 64 * 2048 * per_token  # slots and capacity rounded up to powers of 2


def test_a_budget_too_small_is_a_clear_error(engine_models):
    vms = {"vm": str(engine_models.value_model)}
    kw = dict(dtype_bytes=4, on_cpu=True, max_num_seqs=64, max_model_len=512,
              kv_cache_gib=1, gpu_memory_utilization=0.85, device_memory=64 * GIB)
    check_value_budget(Path(engine_models.base), vms, budget_gib=None, **kw)  # fits in 64 GiB
    with pytest.raises(ValueError, match=r"value models need up to .* GiB .* more than "
                                         r"value_cache_gib"):
        check_value_budget(Path(engine_models.base), vms, budget_gib=0.001, **kw)
    with pytest.raises(ValueError, match="kv_cache_gib and the base weights"):
        check_value_budget(Path(engine_models.base), vms, budget_gib=None,
                           **{**kw, "device_memory": GIB})  # all of it is vLLM's KV space
    gpu = {**kw, "on_cpu": False, "device_memory": 16 * 2**20}
    with pytest.raises(ValueError, match="what gpu_memory_utilization leaves"):
        check_value_budget(Path(engine_models.base), vms, budget_gib=None, **gpu)
