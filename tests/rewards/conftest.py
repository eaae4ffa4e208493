"""Fixtures for reward tests: real instances only (a fitted tiny classifier saved to disk, a
real uvicorn reward server on loopback, a toy codec)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from decoders.toy import ToyLM
from engines.toy_engine import ToyCodec
from tests.rewards.helpers import build_test_app, fit_tiny_classifier, free_port


@pytest.fixture
def toy_codec() -> ToyCodec:
    return ToyCodec(ToyLM(vocab=8, max_len=4, seed=0))


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory) -> Path:
    return fit_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"))


@pytest.fixture(scope="session")
def reward_server():
    """A real uvicorn server on 127.0.0.1 (free port) in a thread; yields its base URL."""
    import uvicorn

    app = build_test_app()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            timeout_graceful_shutdown=1, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("reward server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app.state.test_state
    server.should_exit = True
    thread.join(timeout=5)
