"""Run a command's coroutine so that SIGTERM and SIGINT shut its engines down cleanly.

    from tilt.runner import run
    run(main())                      # like asyncio.run, for every command that opens an engine

- First SIGTERM or SIGINT: ``on_signal`` is called if given (``tilt serve`` drains: running
  requests end with a 503 the client can read, then uvicorn exits), else the main task is
  cancelled, so every ``finally`` / ``async with`` closes
  its engine (``VllmEngine.aclose`` ends vLLM's EngineCore and worker processes). The command
  then exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells expect.
- A second signal forces the exit: our child processes are killed and the process ends at once.
- Signals reach only the main thread: run() elsewhere (a test's thread) installs no handler.
- Whatever the path, child processes still alive at the end are terminated, then killed after
  a short grace period, so no engine process outlives the command.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("tilt")
T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 5.0


class Interrupted(Exception):
    """The command was stopped by a signal (after its engines were closed)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


def child_pids() -> set[int]:
    """The pids of this process's descendants now."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def kill_children(grace_s: float = GRACE_S, keep: frozenset[int] = frozenset()) -> list[int]:
    """Terminate every descendant process except the pids in ``keep`` (those that were already
    running before the command started, e.g. a test session's engine), then kill those alive
    after ``grace_s``; returns the pids that had to be signalled."""
    import psutil

    children = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
    for p in children:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in children]


def run(main: Coroutine[Any, Any, T], on_signal: Callable[[int], bool] | None = None) -> T:
    """``asyncio.run(main)`` with the signal handling described in the module docstring.
    ``on_signal(signum)`` handles the first signal itself when it returns True (else the main
    task is cancelled). Raises ``Interrupted`` once ``main`` has finished unwinding."""
    received: list[int] = []
    keep = frozenset(child_pids())  # not ours to end: they outlive this command

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def first(signum: int) -> None:  # on the loop: on_signal may touch the server
            log.info("%s: shutting down (send it again to force)", signal.Signals(signum).name)
            if on_signal is None or not on_signal(signum):
                task.cancel()

        def handle(signum: int, _frame: Any) -> None:
            # A Python-level handler, not loop.add_signal_handler: it runs in the main thread
            # between bytecodes, so a second signal forces the exit even while the loop is
            # busy in synchronous code (a training step) and never gets to its callbacks.
            received.append(signum)
            if len(received) > 1:
                log.warning("second %s: forcing exit", signal.Signals(signum).name)
                kill_children(grace_s=1.0, keep=keep)
                os._exit(128 + signum)
            loop.call_soon_threadsafe(first, signum)

        main_thread = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, handle) for sig in SIGNALS} if main_thread else {}
        try:
            return await main
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    try:
        result = asyncio.run(guarded())
    except asyncio.CancelledError:
        if not received:
            raise
        result = None  # type: ignore[assignment]
    finally:
        leftover = kill_children(keep=keep)
        if leftover:
            log.warning("ended %d leftover child process(es): %s", len(leftover), leftover)
    if received:
        raise Interrupted(received[0])
    return result
