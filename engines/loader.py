"""Open an engine for a model spec: the one entry point the server and CLI use.

    await open_engine("toy:vocab=8,len=4,seed=0", engine="toy")
    await open_engine("tilt/assets/demo-base", engine="vllm", value_models={"pos": "path"})

Toy specs always use the toy engine and get the exact value source under the name "exact".
"""

from __future__ import annotations

from typing import Any

from engines.base import EngineHandle

ENGINES = ("vllm", "transformers", "toy")


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
    raise NotImplementedError(f"engine {engine!r} is not implemented yet")
