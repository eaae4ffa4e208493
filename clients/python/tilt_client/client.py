"""Sync and async clients.

    from tilt_client import Tilt, Guidance
    client = Tilt("http://127.0.0.1:8000", api_key=None)
    out = client.completions.create(prompt="The movie was", max_tokens=16,
                                    guidance=Guidance(method="token", beta=0.5), seed=0)
    print(out.choices[0].text, out.choices[0].tilt.kl_to_base)
    for chunk in client.completions.create(prompt="Hi", stream=True):
        print(chunk.choices[0].text, end="")

``AsyncTilt`` has the same methods (``tilt_client.resources``, defined once for both) returning
awaitables; streams are async iterators. Requests answered 429 or 503, and connection
failures, are retried with exponential backoff (honouring Retry-After) up to ``max_retries``
times; streams only before their first byte (the policy: ``tilt_client._base``).

The two clients differ only where I/O happens: sending one attempt and reading an error body.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel
from tenacity import AsyncRetrying, Retrying

from tilt_client._base import ClientOptions, raise_for_status
from tilt_client.models import ModelList, RewardScores
from tilt_client.resources import Chat, Completions, Models, Rewards
from tilt_client.streaming import AsyncStream, Stream

T = TypeVar("T", bound=BaseModel)


class Tilt:
    """Synchronous client. ``base_url`` may end with or without ``/v1``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 http_client: httpx.Client | None = None):
        self._o = ClientOptions(base_url, api_key, timeout, max_retries, backoff, max_backoff)
        self._http = http_client or httpx.Client(timeout=self._o.timeout)
        self.completions = Completions(self)
        self.chat = Chat(self)
        self.rewards: Rewards[RewardScores] = Rewards(self)
        self.models: Models[ModelList] = Models(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Tilt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              stream: bool = False) -> httpx.Response:
        retrying = Retrying(**self._o.retry_policy())
        return retrying(self._attempt, method, path, body, stream)

    def _attempt(self, method: str, path: str, body: dict[str, Any] | None,
                 stream: bool) -> httpx.Response:
        request = self._o.build_request(self._http, method, path, body)
        with self._o.transport_errors(path):
            response = self._http.send(request, stream=stream)
        if response.status_code >= 400 and stream:
            response.read()
            response.close()
        raise_for_status(response)
        return response

    def _json(self, method: str, path: str, model: type[T], body: dict[str, Any] | None = None) -> T:
        return model.model_validate(self._send(method, path, body).json())

    def _post(self, path: str, body: dict[str, Any], model: type[T], chunk: type[BaseModel]) -> Any:
        if body.get("stream"):
            return Stream(self._send("POST", path, body, stream=True), chunk)
        return self._json("POST", path, model, body)

    def health(self) -> bool:
        """True when GET /health answers 200."""
        return self._send("GET", "/health").status_code == 200

    def ready(self) -> bool:
        """True when GET /ready answers 200 (the engine is open)."""
        try:
            return self._send("GET", "/ready").status_code == 200
        except Exception:  # noqa: BLE001
            return False

    def metrics(self) -> str:
        """The Prometheus text of GET /metrics."""
        return self._send("GET", "/metrics").text


class AsyncTilt:
    """Asynchronous client with the same surface as ``Tilt`` (methods return awaitables)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 http_client: httpx.AsyncClient | None = None):
        self._o = ClientOptions(base_url, api_key, timeout, max_retries, backoff, max_backoff)
        self._http = http_client or httpx.AsyncClient(timeout=self._o.timeout)
        self.completions = Completions(self)
        self.chat = Chat(self)
        self.rewards: Rewards[Awaitable[RewardScores]] = Rewards(self)
        self.models: Models[Awaitable[ModelList]] = Models(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTilt:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
                    stream: bool = False) -> httpx.Response:
        retrying = AsyncRetrying(**self._o.retry_policy())
        return await retrying(self._attempt, method, path, body, stream)

    async def _attempt(self, method: str, path: str, body: dict[str, Any] | None,
                       stream: bool) -> httpx.Response:
        request = self._o.build_request(self._http, method, path, body)
        with self._o.transport_errors(path):
            response = await self._http.send(request, stream=stream)
        if response.status_code >= 400 and stream:
            await response.aread()
            await response.aclose()
        raise_for_status(response)
        return response

    async def _json(self, method: str, path: str, model: type[T],
                    body: dict[str, Any] | None = None) -> T:
        return model.model_validate((await self._send(method, path, body)).json())

    async def _post(self, path: str, body: dict[str, Any], model: type[T],
                    chunk: type[BaseModel]) -> Any:
        if body.get("stream"):
            return AsyncStream(await self._send("POST", path, body, stream=True), chunk)
        return await self._json("POST", path, model, body)

    async def health(self) -> bool:
        """True when GET /health answers 200."""
        return (await self._send("GET", "/health")).status_code == 200

    async def ready(self) -> bool:
        """True when GET /ready answers 200 (the engine is open)."""
        try:
            return (await self._send("GET", "/ready")).status_code == 200
        except Exception:  # noqa: BLE001
            return False

    async def metrics(self) -> str:
        """The Prometheus text of GET /metrics."""
        return (await self._send("GET", "/metrics")).text


__all__ = ["Tilt", "AsyncTilt", "Stream", "AsyncStream"]
