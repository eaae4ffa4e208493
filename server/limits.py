"""Load limits: a bounded admission queue, and abort on client disconnect (the time limit
is applied where the sampler runs, ``server.generation``).

    running <= max_concurrent_requests     (a semaphore)
    waiting <= max_queue                   (more -> Overloaded: 429 with Retry-After)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

from starlette.requests import Request

from server.config import Limits
from server.errors import ClientDisconnected, Overloaded
from server.metrics import Metrics

T = TypeVar("T")


class Admission:
    """At most ``max_concurrent`` requests run; at most ``max_queue`` wait for a slot.
    ``max_concurrent`` is ``limits.max_concurrent_requests`` when set, else ``engine_batch``
    (the sequences the engine batches, so that admission never starves it), else 8."""

    def __init__(self, limits: Limits, metrics: Metrics, engine_batch: int | None = None):
        self.limits, self.metrics = limits, metrics
        self.max_concurrent = limits.max_concurrent_requests or engine_batch or 8
        self.running = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None

    def _publish(self) -> None:
        self.metrics.load(self.running, self.waiting)

    def _full(self) -> bool:
        busy = self.running >= self.max_concurrent
        return busy and self.waiting >= self.limits.max_queue

    def check(self) -> None:
        """Raise ``Overloaded`` (429, Retry-After) when every slot is busy and the queue is
        full."""
        if self._full():
            self.metrics.rejected()
            raise Overloaded(f"server is busy: {self.running} requests running and "
                             f"{self.waiting} waiting (queue full); retry later",
                             retry_after_s=self.limits.retry_after_s)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one running slot for the duration of the block, or raise ``Overloaded``."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrent)
        self.check()
        self.waiting += 1
        self._publish()
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
            self._publish()
        self.running += 1
        self._publish()
        try:
            yield
        finally:
            self.running -= 1
            self._sem.release()
            self._publish()


async def _wait_disconnect(request: Request) -> None:
    """Return when the client hangs up (the body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``; if the client disconnects first, cancel it (aborting engine requests)
    and raise ``ClientDisconnected``. Same idea as vLLM's ``with_cancellation``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected()
    return task.result()
