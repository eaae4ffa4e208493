"""A private event loop on its own thread, for an engine client that does heavy Python work
inside its own asyncio tasks.

vLLM's ``AsyncLLM`` turns every engine step's outputs into Python objects in an output-handler
task on the loop it runs on; with full-vocabulary log-prob rows (particle methods) that is
seconds of CPU per second. Run on the server's loop, it stalls health checks and every other
request. On an ``EngineLoop`` the server's loop only awaits results:

    loop = EngineLoop("tilt-vllm")
    engine = await loop.run(make_engine())       # the client binds to loop.loop, not ours
    out = await loop.run(engine_call(...))        # cancelling this await cancels it there
    await loop.back(callback(...), caller_loop)   # from the engine loop: run on the caller's
    loop.close()

Cancellation crosses threads: cancelling the awaiting task cancels the coroutine on the engine
loop (``asyncio.run_coroutine_threadsafe`` chains the two futures).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EngineLoop:
    def __init__(self, name: str = "tilt-engine"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        """Schedule ``coro`` on the engine loop; a ``concurrent.futures.Future``."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the engine loop from another loop."""
        return await asyncio.wrap_future(self.submit(coro))

    @staticmethod
    async def back(coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop) -> T:
        """From the engine loop: await ``coro`` on ``loop`` (the caller's)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def call_soon(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Schedule the plain function ``fn`` inside the engine loop; a
        ``concurrent.futures.Future`` of its result."""
        async def _call() -> Any:
            return fn(*args, **kwargs)

        return self.submit(_call())

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the plain function ``fn`` inside the engine loop and wait for it (blocking)."""
        return self.call_soon(fn, *args, **kwargs).result()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the loop and its thread (pending tasks are dropped)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive():
            self.loop.close()
