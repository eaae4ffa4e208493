"""Session-scoped real servers for the server tests: toy engines (see live.py), and
``vllm_server``: the session's one vLLM engine (``vllm_demo_engine``, the demo base model with
a native value model) served by a uvicorn server on the test session's event loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
import pytest_asyncio

from tests.server.live import API_KEY, LiveServer, start_server, toy_config


@pytest.fixture(scope="session")
def toy_server() -> Iterator[LiveServer]:
    live = start_server(toy_config())
    yield live
    live.stop()


@pytest.fixture(scope="session")
def keyed_server() -> Iterator[LiveServer]:
    """A second, API-key-protected toy server (cheap: the toy engine is pure Python)."""
    live = start_server(toy_config(api_keys=[API_KEY, "sk-other"]))
    live.api_key = API_KEY
    yield live
    live.stop()


LONG_MODEL = "toy:vocab=8,len=200,seed=0"


class SlowLM:
    """The toy LM with ``delay_s`` of (non-blocking) latency per ``logprobs`` call."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s = inner, delay_s
        self.vocab_size, self.eos_token_id = inner.vocab_size, inner.eos_token_id
        self.calls = 0

    async def logprobs(self, contexts):
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return await self.inner.logprobs(contexts)


@pytest.fixture(scope="session")
def long_server() -> Iterator[LiveServer]:
    """A toy server with long completions and one slot plus one queue place: streams stay
    open long enough to be cancelled mid-way, and a third request finds the queue full."""
    live = start_server(toy_config(
        model=LONG_MODEL, rewards={}, defaults={},
        limits={"max_concurrent_requests": 1, "max_queue": 1, "retry_after_s": 2,
                "max_n": 512}))
    # The toy engine computes a step in microseconds; add a real engine's step latency
    # (50 ms per batched call, on the real toy LM) so a stream stays open long enough.
    live.engine_state.handle.lm = SlowLM(live.engine_state.handle.lm, delay_s=0.05)
    yield live
    live.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def vllm_server(vllm_demo_engine, engine_models):
    import uvicorn

    from rewards.loader import load_reward
    from server.app import create_app
    from server.config import ServerConfig
    from server.engine_state import EngineState

    handle = vllm_demo_engine
    config = ServerConfig(model=str(engine_models.base), engine="vllm",
                          rewards={"vader": "vader"},
                          defaults={"value_model": engine_models.vm_name, "reward": "vader",
                                    "max_tokens": 8},
                          limits={"max_logprobs": -1, "max_tokens": 64})
    service = EngineState(config, handle, {"vader": load_reward("vader", codec=handle.codec)})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(config, service), host="127.0.0.1",
                                           port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "vLLM server failed to start"
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service
    server.should_exit = True
    await task
