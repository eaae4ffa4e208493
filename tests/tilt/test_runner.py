"""``tilt.runner.run``: the children a command starts are ended when it returns; processes
that were already running before it (a test session's vLLM engine, say) are left alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psutil

from tilt.runner import run

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_run_ends_the_children_it_started_and_keeps_older_ones():
    older = subprocess.Popen(SLEEPER)
    started: list[subprocess.Popen] = []

    async def main() -> str:
        started.append(subprocess.Popen(SLEEPER))
        await asyncio.sleep(0.1)
        return "done"

    try:
        assert run(main()) == "done"
        assert started[0].wait(timeout=10) is not None  # ended by run()
        assert older.poll() is None and psutil.Process(older.pid).is_running()
    finally:
        older.kill()
        older.wait()
