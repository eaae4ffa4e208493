"""Open an engine for a model spec: the one entry point the server and CLI use.

    await open_engine("toy:vocab=8,len=4,seed=0", engine="toy")
    await open_engine("tilt/assets/demo-base", engine="vllm", value_models={"pos": "path"})

Toy specs always use the toy engine and get the exact value source under the name "exact".
Other models are Hugging Face directories (``DEMO_BASE``, the bundled demo model, is the
default) or the names ``smollm2`` and ``demo``; relative paths are tried against the working directory, then the repository.
Options go to ``VllmEngine.open`` / ``TransformersEngine.open`` (e.g. ``name``,
``max_model_len``, ``max_num_seqs``, ``kv_cache_gib``, ``device``, ``max_tokens_cap``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.base import EngineHandle

ENGINES = ("vllm", "transformers", "toy")
REPO = Path(__file__).resolve().parents[1]
DEMO_BASE = "tilt/assets/demo-base"


def resolve_model_dir(model: str) -> Path:
    """A model directory from a path (absolute, relative to cwd, or to the repository) or a
    name: ``smollm2`` (SmolLM2-135M-Instruct, built by ``tilt setup-model``), ``demo``."""
    if model == "smollm2":
        from tilt.models.smollm2 import model_dir

        found = model_dir()
        if not (found / "config.json").is_file():
            raise ValueError(f"model 'smollm2' is not built in {found}: run `tilt setup-model`")
        return found
    if model == "demo":
        model = DEMO_BASE
    for cand in (Path(model), REPO / model):
        if (cand / "config.json").is_file():
            return cand.resolve()
    raise ValueError(f"model {model!r} not found: expected a Hugging Face model directory "
                     f"(config.json, weights, tokenizer) or a toy spec 'toy:vocab=V,len=T,seed=S'")


def _value_model_dir(name: str, path: str) -> str:
    from engines.value_model import ValueModelError

    for cand in (Path(path), REPO / path):
        if cand.is_dir():
            return str(cand.resolve())
    raise ValueModelError(f"value model {name!r}: no directory at {path!r}")


async def open_engine(model: str, engine: str = "vllm", value_models: dict[str, str] | None = None,
                      **options: Any) -> EngineHandle:
    """Start ``engine`` on ``model`` with named value models (name -> path). Raises ValueError
    with a clear message for an unknown engine, a missing model or an incompatible value model."""
    if model.startswith("toy:"):
        from engines.toy_engine import ToyEngine

        handle = ToyEngine(model)
        from decoders.exact import ExactValue  # noqa: PLC0415 (written with the core)

        handle.value_models["exact"] = ExactValue(handle.lm)
        if value_models:
            raise ValueError("toy models serve only the built-in value model 'exact'")
        return handle
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "toy":
        raise ValueError(f"the toy engine serves only toy specs, not {model!r}")
    model_dir = resolve_model_dir(model or DEMO_BASE)
    vms = {name: _value_model_dir(name, path) for name, path in (value_models or {}).items()}
    if engine == "transformers":
        from engines.transformers_engine import TransformersEngine

        return await TransformersEngine.open(model_dir, vms, **options)
    from engines.vllm_engine import VllmEngine

    return await VllmEngine.open(model_dir, vms, **options)
