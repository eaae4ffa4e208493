"""One real Tilt server per test session: uvicorn on a loopback port, toy engine.

The server runs in its own thread and event loop, so tests use ordinary (sync or async)
HTTP clients against it. Limits are small so that the queue and cap tests are cheap.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

TOY_MODEL = "toy:vocab=8,len=4,seed=0"
API_KEY = "sk-test-key"


def _install_generate_stand_in() -> None:
    """Until decoders/generate.py lands: dispatch to the core's sampler modules (test-only)."""
    try:
        import decoders.generate  # noqa: F401
        return
    except ModuleNotFoundError:
        pass

    async def generate(lm, prompt_ids, spec, *, value=None, reward=None, on_tokens=None):
        from decoders.samplers import base, token

        if spec.method == "none":
            return await base.sample(lm, prompt_ids, spec, reward=reward, on_tokens=on_tokens)
        if spec.method == "token":
            if hasattr(value, "bind"):
                value = value.bind(prompt_ids, spec.max_tokens, reward=reward)
            return await token.sample(lm, prompt_ids, spec, value=value, reward=reward,
                                      on_tokens=on_tokens)
        raise ValueError(f"method {spec.method!r} not available in the test stand-in")

    mod = types.ModuleType("decoders.generate")
    mod.generate = generate
    sys.modules["decoders.generate"] = mod


_install_generate_stand_in()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread
    api_key: str | None = None

    @property
    def service(self):
        return self.app.state.service

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(config) -> LiveServer:
    """Start ``create_app(config)`` under uvicorn in a thread; wait until /ready answers."""
    from server.app import create_app

    config.port = free_port()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return LiveServer(url, app, server, thread)
        except httpx.HTTPError:
            pass
        if not thread.is_alive():
            raise RuntimeError("server thread died during start-up")
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def toy_config(**overrides):
    from server.config import ServerConfig

    base = dict(model=TOY_MODEL, engine="toy", rewards={"toy": "toy:seed=0", "toy1": "toy:seed=1"},
                defaults={"reward": "toy", "value_model": "exact", "beta": 1.0},
                limits={"max_n": 64, "max_particles": 32, "max_prompt_tokens": 16,
                        "max_concurrent_requests": 4, "max_queue": 4, "max_logprobs": -1})
    base.update(overrides)
    return ServerConfig(**base)


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


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` on GET /metrics whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    text = httpx.get(url + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
