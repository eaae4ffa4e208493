"""Streaming a plan: run the sampler and yield each choice's text as it becomes final.

    async for event in stream(state, plan, timeout_s):   # StreamEvent(index, text, ids)
        ...                                               # event.choice set on its last one

Methods whose tokens are final once sampled (``none``, ``token``) push tokens through a
queue as they come; the others send each choice when it is done. Text that could still be
the start of a stop string, or an incomplete UTF-8 character, is held back, so that
concatenating one choice's events gives exactly the non-streamed choice (same seed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from server.engine_state import EngineState
from server.generation import run
from server.plan import Plan
from server.postprocess import Choice, finish, truncate_at_stop

log = logging.getLogger("tilt.server")


@dataclass
class StreamEvent:
    """New text/ids of choice ``index``; ``choice`` is set on its last event."""

    index: int
    text: str
    token_ids: list[int]
    choice: Choice | None = None


async def stream(state: EngineState, plan: Plan,
                 timeout_s: float | None = None) -> AsyncIterator[StreamEvent]:
    """The sampler's output as events; closing the iterator cancels the sampler."""
    queue: asyncio.Queue = asyncio.Queue()

    async def on_tokens(index: int, tokens: list[int]) -> None:
        queue.put_nowait((index, list(tokens)))
        await asyncio.sleep(0)  # let the event loop send it (and notice a hang-up)

    hook = on_tokens if plan.streams_tokens else None
    task = asyncio.ensure_future(run(state, plan, hook, timeout_s))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    states = [_StreamState(state.handle.codec, plan.stop, plan.stop_token_ids)
              for _ in range(plan.spec.n)]
    try:
        while (item := await queue.get()) is not None:
            index, tokens = item
            if 0 <= index < len(states):
                event = states[index].push(index, tokens)
                if event is not None:
                    yield event
        samples = task.result()
        for index, sample in enumerate(samples):
            [choice] = await finish(state, plan, [(index, sample)])
            yield states[index].finish(choice)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _StreamState:
    """What has been sent for one choice; holds back text that could start a stop string."""

    def __init__(self, codec: Any, stops: list[str], stop_ids: tuple[int, ...] = ()):
        self.codec, self.stops, self.stop_ids = codec, stops, stop_ids
        self.tokens: list[int] = []
        self.sent_text, self.sent_ids, self.stopped = "", 0, False
        self.holdback = max((len(s) for s in stops), default=1) - 1

    def push(self, index: int, tokens: list[int]) -> StreamEvent | None:
        if self.stopped:
            return None
        self.tokens += tokens
        text, k, self.stopped = truncate_at_stop(self.codec, self.tokens, self.stops,
                                                 self.stop_ids)
        if not self.stopped:
            text = text[: len(text) - self.holdback] if self.holdback else text
            while text.endswith("\ufffd"):  # an incomplete multi-byte character
                text = text[:-1]
        if not text.startswith(self.sent_text):
            return None  # the decoded prefix changed; send at the end
        new_text, new_ids = text[len(self.sent_text):], self.tokens[self.sent_ids:k]
        if not new_text and not new_ids:
            return None
        self.sent_text, self.sent_ids = text, k
        return StreamEvent(index, new_text, new_ids)

    def finish(self, choice: Choice) -> StreamEvent:
        text = choice.text
        if not text.startswith(self.sent_text):
            log.warning("streamed text of choice %d diverged from its final text", choice.index)
        rest = text[len(self.sent_text):] if text.startswith(self.sent_text) else ""
        return StreamEvent(choice.index, rest, choice.token_ids[self.sent_ids:], choice)
