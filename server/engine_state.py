"""What one server serves and its lifecycle: the engine handle, the rewards, the metrics.

    state = await EngineState.open(config)   # the engine, the rewards, defaults checked
    ...                                      # state.handle, state.rewards, state.metrics
    await state.aclose()

``EngineState(config, handle, rewards)`` wraps an engine opened elsewhere (tests share one).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from decoders.protocols import Reward
from server.config import ServerConfig
from server.metrics import Metrics


class EngineState:
    """One served base model (an ``EngineHandle``) with its value models and rewards."""

    def __init__(self, config: ServerConfig, handle: Any, rewards: dict[str, Reward],
                 metrics: Metrics | None = None):
        self.config, self.handle, self.rewards = config, handle, rewards
        self.model_name = config.served_model_name or handle.name
        self.metrics = metrics or Metrics(self.model_name, handle.num_running)
        self.created = int(time.time())
        self.ready = True
        self.closing = asyncio.Event()  # set by begin_shutdown: in-flight runs end with 503

    @classmethod
    async def open(cls, config: ServerConfig) -> EngineState:
        """Start the engine and load the rewards named in ``config``; ValueError when a
        configured default names something not served."""
        from engines.loader import open_engine
        from rewards.loader import load_reward

        handle = await open_engine(config.model, engine=config.engine,
                                   value_models=dict(config.value_models) or None,
                                   **config.engine_options)
        try:
            rewards = {name: load_reward(spec, codec=handle.codec)
                       for name, spec in config.rewards.items()}
            state = cls(config, handle, rewards)
            state.check_defaults()
        except BaseException:  # the engine's processes must not outlive a failed start
            await handle.aclose()
            raise
        return state

    def begin_shutdown(self) -> None:
        """Stop serving: /ready answers 503, running generations end with ``ShuttingDown``."""
        self.ready = False
        self.closing.set()

    async def aclose(self) -> None:
        self.begin_shutdown()
        await self.handle.aclose()

    def check_defaults(self) -> None:
        d = self.config.defaults
        if d.value_model is not None and d.value_model not in self.handle.value_models:
            raise ValueError(f"default value model {d.value_model!r} is not served "
                             f"(served: {sorted(self.handle.value_models)})")
        if d.reward is not None and d.reward not in self.rewards:
            raise ValueError(f"default reward {d.reward!r} is not served "
                             f"(served: {sorted(self.rewards)})")
