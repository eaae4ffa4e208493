"""``tilt.runner.run``: the children a command starts are ended when it returns; processes
that were already running before it (a test session's vLLM engine, say) are left alone; a
signal cancels the command (exit 128 + signal) and a second one forces the exit."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

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


# A command whose coroutine is stuck in synchronous work (it never reaches an await), with a
# child process of its own; it prints "busy" once its child runs.
BUSY = """
import asyncio, subprocess, sys, time
from tilt.runner import Interrupted, run

async def main():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(child.pid, "busy", flush=True)
    while True:
        time.sleep(0.05)

try:
    run(main())
except Interrupted as exc:
    sys.exit(exc.exit_code)
"""


def test_second_signal_forces_exit_while_the_loop_is_busy():
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline().split()[0])
        proc.send_signal(signal.SIGTERM)  # cancellation cannot reach a loop that never yields
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 128 + signal.SIGTERM
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    finally:
        proc.kill()
        proc.wait()


def test_first_signal_cancels_and_the_command_exits_128_plus_signal():
    script = BUSY.replace("time.sleep(0.05)", "await asyncio.sleep(0.05)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline().split()[0])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 128 + signal.SIGINT
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    finally:
        proc.kill()
        proc.wait()
