"""Session fixtures for engine tests, reusable by other test packages (loaded as a pytest
plugin from tests/conftest.py).

    engine_models           paths: base (the demo model, or a tiny random Llama until it
                            exists), value_model ("test-vm", random Llama, small), dist_vm
                            ("test-vm-dist", distributional, atoms -1/0/1), other_vm (a value
                            model for another tokenizer), tiny_base
    vllm_demo_engine        ONE vLLM engine per session on engine_models.base with "test-vm"
                            and "test-vm-dist" registered
    transformers_demo_engine  the reference engine on the same model and value model (Q by
                            full transformers forwards: independent of vLLM's lean forward)
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio

from engines.loader import DEMO_BASE, REPO

VALUE_MODEL_NAME = "test-vm"
DIST_VALUE_MODEL_NAME = "test-vm-dist"  # distributional (atoms)
ARCHS = ("llama3", "qwen2", "mistral")  # value-model architectures besides plain Llama


def demo_base_dir() -> Path | None:
    d = REPO / DEMO_BASE
    return d if (d / "config.json").is_file() and any(d.glob("*.safetensors")) else None


@pytest.fixture(scope="session")
def engine_models(tmp_path_factory) -> SimpleNamespace:
    from engines.testing import (
        build_random_llama,
        build_random_value_model,
        build_tiny_tokenizer,
    )

    root = tmp_path_factory.mktemp("engine-models")
    tok = build_tiny_tokenizer(root / "tok", vocab_size=384)
    tiny = build_random_llama(root / "tiny-base", tok)
    base = demo_base_dir() or tiny
    vm = build_random_value_model(root / "vm", base, hidden=64, layers=1, heads=1,
                                  intermediate=128, init=0.05, beta=1.0)
    dist_vm = build_random_value_model(root / "dist-vm", base, hidden=64, layers=1, heads=1,
                                       intermediate=128, init=0.2, atoms=[-1.0, 0.0, 1.0])
    # Value models of other architectures, served natively by the session's vLLM engine.
    arch_vms = {f"test-vm-{arch}": build_random_value_model(
        root / f"vm-{arch}", base, hidden=64, layers=1, heads=2, intermediate=128, init=0.05,
        beta=1.0, seed=2, arch=arch) for arch in ARCHS}
    other_tok = build_tiny_tokenizer(root / "other-tok", vocab_size=320)
    other_base = build_random_llama(root / "other-base", other_tok, hidden=64, heads=1)
    other_vm = build_random_value_model(root / "other-vm", other_base, hidden=64, heads=1)
    return SimpleNamespace(base=Path(base), tiny_base=tiny, value_model=vm, other_vm=other_vm,
                           vm_name=VALUE_MODEL_NAME, dist_vm=dist_vm,
                           dist_vm_name=DIST_VALUE_MODEL_NAME, arch_vms=arch_vms)


def _value_models(engine_models) -> dict[str, str]:
    return {VALUE_MODEL_NAME: str(engine_models.value_model),
            DIST_VALUE_MODEL_NAME: str(engine_models.dist_vm),
            **{k: str(v) for k, v in engine_models.arch_vms.items()}}


@pytest_asyncio.fixture(scope="session")
async def vllm_demo_engine(engine_models):
    from engines.loader import open_engine

    handle = await open_engine(str(engine_models.base), engine="vllm",
                               value_models=_value_models(engine_models),
                               max_model_len=512, max_num_seqs=32)
    yield handle
    await handle.aclose()


@pytest_asyncio.fixture(scope="session")
async def transformers_demo_engine(engine_models):
    from engines.loader import open_engine

    handle = await open_engine(str(engine_models.base), engine="transformers",
                               value_models=_value_models(engine_models),
                               max_model_len=512, incremental_value_models=False)
    yield handle
    await handle.aclose()
