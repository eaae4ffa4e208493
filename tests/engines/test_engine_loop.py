"""engines.engine_loop.EngineLoop: coroutines run on the engine's own loop and thread, results
and callbacks cross back, cancelling the awaiting task cancels the work there."""

from __future__ import annotations

import asyncio
import threading

import pytest

from engines.engine_loop import EngineLoop


async def test_runs_there_calls_back_here_and_cancels_across():
    eng = EngineLoop("test-engine")
    here = threading.current_thread()
    caller = asyncio.get_running_loop()
    seen: list[tuple[str, str]] = []
    try:
        async def note(tag: str) -> None:
            seen.append((tag, threading.current_thread().name))

        async def work(x: int) -> int:
            assert threading.current_thread() is not here
            await EngineLoop.back(note("delta"), caller)
            return x * 2

        assert await eng.run(work(21)) == 42
        assert seen == [("delta", here.name)]  # the callback ran on the caller's thread

        started, cancelled = threading.Event(), threading.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        task = asyncio.ensure_future(eng.run(forever()))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.to_thread(cancelled.wait, 5)
        assert eng.call(lambda: threading.current_thread().name) == "test-engine"
    finally:
        eng.close()
    assert eng.loop.is_closed()
