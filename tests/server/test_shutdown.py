"""Stopping ``tilt serve`` (a real process, the vLLM CPU engine on the demo model) with SIGTERM
or SIGINT: a request still running gets an error it can read (503, server_shutting_down), the
process exits, and none of its child processes (vLLM's EngineCore and workers) is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.server.live import free_port

pytestmark = pytest.mark.vllm

TILT = [str(Path(sys.executable).parent / "tilt"), "serve"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "VLLM_LOGGING_LEVEL": "WARNING"}
EXIT_WITHIN_S = 15


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        assert proc.poll() is None, "tilt serve exited during start-up"
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("tilt serve was not ready in time")


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_inflight_request_and_leaves_no_process(sig):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(TILT + ["--port", str(port), "--log-level", "warning"], env=ENV,
                            start_new_session=True)
    children: list[psutil.Process] = []
    try:
        wait_ready(url, proc)
        children = descendants(proc.pid)
        assert children, "the vLLM engine should run in child processes"
        answer: dict = {}

        def long_request() -> None:  # 64 SMC particles x 400 tokens: tens of seconds on CPU
            r = httpx.post(url + "/v1/completions", timeout=60, json={
                "prompt": "The movie was", "max_tokens": 400, "seed": 0,
                "guidance": {"method": "smc", "particles": 64, "reward": "vader"}})
            answer.update(status=r.status_code, body=r.json())

        client = threading.Thread(target=long_request)
        client.start()
        time.sleep(3)  # the request is running
        assert client.is_alive()
        t0 = time.time()
        proc.send_signal(sig)
        assert proc.wait(timeout=EXIT_WITHIN_S) == 0
        client.join(timeout=10)
        assert answer["status"] == 503, answer
        assert answer["body"]["error"]["code"] == "server_shutting_down"
        gone, alive = psutil.wait_procs(children, timeout=max(0.0, EXIT_WITHIN_S - (time.time() - t0)))
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    finally:  # whatever failed: nothing of ours stays (the server runs in its own group)
        for p in [*children, psutil.Process(proc.pid)] if proc.poll() is None else children:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
