"""Pieces of ``tilt bench serve`` (tilt.benchmarks.serve) on small real parts: the closed-loop
load and the /health probe against the toy server, and the server process wrapper (start,
pause, resume, stop with nothing left) on a plain HTTP server. The full benchmark (vLLM's own
server vs tilt serve) is a command (README), not a test."""

from __future__ import annotations

import asyncio
import sys

import httpx
import psutil
import pytest

from tests.server.live import free_port, start_server, toy_config
from tilt.benchmarks.serve import Server, closed_loop, with_health_probe


def test_closed_loop_counts_every_token_and_probes_health():
    live = start_server(toy_config(served_model_name="bench"))
    try:
        def bodies(i: int) -> dict:
            return {"model": "bench", "prompt": "<1>", "max_tokens": 3, "seed": i,
                    "guidance": {"method": "smc", "particles": 4}}

        res, health = asyncio.run(with_health_probe(
            live.url, closed_loop(live.url, bodies, clients=3, requests=2), every_s=0.01))
        assert res["errors"] == 0 and res["requests"] == 6
        assert 6 <= res["completion_tokens"] <= 6 * 3  # the toy may end before max_tokens
        assert res["generated_tokens"] > res["completion_tokens"]  # every particle's tokens
        assert res["tokens_per_s"] == pytest.approx(res["completion_tokens"] / res["seconds"], rel=0.02)
        assert res["latency_s"]["n"] == 6 and health["n"] >= 1
    finally:
        live.stop()


def test_server_pause_resume_and_stop_leave_nothing(tmp_path):
    port = free_port()
    srv = Server("http", [sys.executable, "-m", "http.server", str(port), "--bind",
                          "127.0.0.1"], port, "/", tmp_path / "http.log")
    srv.start(ready_s=30)
    pid = srv.proc.pid
    srv.pause()
    try:
        httpx.get(srv.url + "/", timeout=0.5)
        answered = True
    except httpx.TimeoutException:
        answered = False
    assert not answered, "a paused server must not answer"
    srv.resume()
    assert httpx.get(srv.url + "/", timeout=5).status_code == 200
    srv.stop()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("args", [["--clients", "0"], ["--smc-resample-every", "0"],
                                  ["--max-tokens", "x"]])
def test_bad_options_exit_2_before_starting_anything(args):
    from typer.testing import CliRunner

    from tilt.cli import app

    result = CliRunner().invoke(app, ["bench", "serve", *args])
    assert result.exit_code == 2, result.output
