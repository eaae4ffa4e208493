"""Streamed responses: server-sent events (parsed by httpx-sse) -> typed chunks.

Each event's ``data`` is one JSON chunk; ``data: [DONE]`` ends the stream; an event holding an
error object (the server hit a problem after the first byte) raises the matching exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import httpx
from httpx_sse import EventSource, ServerSentEvent
from pydantic import BaseModel

from tilt_client.errors import status_error

T = TypeVar("T", bound=BaseModel)

_ERROR_STATUS = {"rate_limit_error": 429, "upstream_error": 502, "timeout_error": 504,
                 "service_unavailable": 503}


def check_stream_event(event: dict[str, Any]) -> None:
    """An error object inside a stream becomes the matching exception."""
    if "error" in event and "choices" not in event:
        err = event["error"] if isinstance(event["error"], dict) else {}
        raise status_error(_ERROR_STATUS.get(str(err.get("type")), 400), event)


def _is_done(sse: ServerSentEvent) -> bool:
    return sse.data.strip() == "[DONE]"


def _chunk(sse: ServerSentEvent, model: type[T]) -> T:
    event = sse.json()
    check_stream_event(event)
    return model.model_validate(event)


class Stream(Generic[T]):
    """Iterator over the chunks of one streamed response; ``close()`` (or leaving a
    ``with`` block) hangs up, which makes the server abort the generation."""

    def __init__(self, response: httpx.Response, model: type[T]):
        self.response, self.model = response, model
        self._events = EventSource(response).iter_sse()

    def __iter__(self) -> Iterator[T]:
        try:
            for sse in self._events:
                if _is_done(sse):
                    return
                if sse.data:
                    yield _chunk(sse, self.model)
        finally:
            self.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream(Generic[T]):
    """Async iterator over the chunks of one streamed response; ``aclose()`` hangs up."""

    def __init__(self, response: httpx.Response, model: type[T]):
        self.response, self.model = response, model

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for sse in EventSource(self.response).aiter_sse():
                if _is_done(sse):
                    return
                if sse.data:
                    yield _chunk(sse, self.model)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
