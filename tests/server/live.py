"""Start a real Tilt server (uvicorn on a loopback port) in a thread, and read its metrics.

The server runs in its own thread and event loop, so tests use ordinary (sync or async)
HTTP clients against it. Limits are small so that the queue and cap tests are cheap.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

TOY_MODEL = "toy:vocab=8,len=4,seed=0"
API_KEY = "sk-test-key"
# An HTTP reward service that is not running (port 9, discard): every call fails fast.
DOWN_REWARD = "http://127.0.0.1:9/score#timeout=0.5,retries=0"


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
    def engine_state(self):
        return self.app.state.engine_state

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(config, ready_s: float = 120) -> LiveServer:
    """Start ``create_app(config)`` under uvicorn in a thread; wait until /ready answers."""
    from server.app import create_app

    config.port = free_port()
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=config.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.time() + ready_s
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

    base = dict(model=TOY_MODEL, engine="toy", rewards={"toy": "toy:seed=0", "toy1": "toy:seed=1",
                         "down": DOWN_REWARD},
                defaults={"reward": "toy", "value_model": "exact", "beta": 1.0},
                limits={"max_n": 512, "max_particles": 32, "max_prompt_tokens": 16,
                        "max_concurrent_requests": 4, "max_queue": 4, "max_logprobs": -1})
    base.update(overrides)
    return ServerConfig(**base)


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
