"""Sync and async clients.

    from tilt_client import Tilt, Guidance
    client = Tilt("http://127.0.0.1:8000", api_key=None)
    out = client.completions.create(prompt="The movie was", max_tokens=16,
                                    guidance=Guidance(method="token", beta=0.5), seed=0)
    print(out.choices[0].text, out.choices[0].tilt.kl_to_base)
    for chunk in client.completions.create(prompt="Hi", stream=True):
        print(chunk.choices[0].text, end="")

``AsyncTilt`` has the same methods as coroutines (streams are async iterators). Requests
answered 429 or 503, and connection failures, are retried with exponential backoff
(honouring Retry-After) up to ``max_retries`` times; streams only before their first byte.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from tilt_client._base import (
    DEFAULT_TIMEOUT,
    build_body,
    check_stream_event,
    parse_sse_lines,
    raise_for_status,
    retry_delay,
    should_retry,
)
from tilt_client.errors import APIConnectionError, APITimeoutError
from tilt_client.models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    Completion,
    CompletionChunk,
    Guidance,
    ModelList,
    RewardScores,
)

T = TypeVar("T", bound=BaseModel)


class _Options:
    def __init__(self, base_url: str, api_key: str | None, timeout: float | httpx.Timeout | None,
                 max_retries: int, backoff: float, max_backoff: float):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff


def _completion_body(prompt: str | list[int], kwargs: dict[str, Any]) -> dict[str, Any]:
    return build_body(prompt=prompt, **kwargs)


def _chat_body(messages: list[ChatMessage | dict[str, Any]], kwargs: dict[str, Any]) -> dict[str, Any]:
    return build_body(messages=messages, **kwargs)


# ============================================================================ sync


class Stream(Generic[T]):
    """Iterator over the chunks of one streamed response; ``close()`` (or leaving a
    ``with`` block) hangs up, which makes the server abort the generation."""

    def __init__(self, response: httpx.Response, model: type[T]):
        self.response, self.model = response, model
        self._events = parse_sse_lines(response.iter_lines())

    def __iter__(self) -> Iterator[T]:
        try:
            for event in self._events:
                if event is None:
                    return
                check_stream_event(event)
                yield self.model.model_validate(event)
        finally:
            self.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Tilt:
    """Synchronous client. ``base_url`` may end with or without ``/v1``."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 http_client: httpx.Client | None = None):
        self._o = _Options(base_url, api_key, timeout, max_retries, backoff, max_backoff)
        self._http = http_client or httpx.Client(timeout=self._o.timeout)
        self.completions = _Completions(self)
        self.chat = _Chat(self)
        self.rewards = _Rewards(self)
        self.models = _Models(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Tilt:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
              stream: bool = False) -> httpx.Response:
        o = self._o
        for attempt in range(o.max_retries + 1):
            request = self._http.build_request(method, o.base_url + path, json=body,
                                               headers=o.headers)
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                if attempt == o.max_retries:
                    raise APITimeoutError(f"request to {path} timed out") from exc
                time.sleep(retry_delay(attempt, None, o.backoff, o.max_backoff))
                continue
            except httpx.TransportError as exc:
                if attempt == o.max_retries:
                    raise APIConnectionError(f"cannot reach {o.base_url}: {exc}") from exc
                time.sleep(retry_delay(attempt, None, o.backoff, o.max_backoff))
                continue
            if should_retry(response) and attempt < o.max_retries:
                response.close()
                time.sleep(retry_delay(attempt, response, o.backoff, o.max_backoff))
                continue
            if response.status_code >= 400:
                if stream:
                    response.read()
                    response.close()
                raise_for_status(response)
            return response
        raise AssertionError("unreachable")

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


class _Completions:
    def __init__(self, client: Tilt):
        self._c = client

    def create(self, prompt: str | list[int], *, model: str | None = None,
               max_tokens: int | None = None, n: int | None = None,
               temperature: float | None = None, top_p: float | None = None,
               top_k: int | None = None, seed: int | None = None,
               stop: str | list[str] | None = None, logprobs: int | None = None,
               stream: bool = False, guidance: Guidance | dict[str, Any] | None = None,
               return_token_ids: bool | None = None, include_usage: bool | None = None,
               extra_body: dict[str, Any] | None = None) -> Any:
        """POST /v1/completions -> ``Completion`` (or ``Stream[CompletionChunk]``)."""
        body = _completion_body(prompt, dict(
            model=model, max_tokens=max_tokens, n=n, temperature=temperature, top_p=top_p,
            top_k=top_k, seed=seed, stop=stop, logprobs=logprobs, stream=stream or None,
            guidance=guidance, return_token_ids=return_token_ids,
            stream_options={"include_usage": True} if include_usage else None,
            extra_body=extra_body))
        return self._c._post("/v1/completions", body, Completion, CompletionChunk)


class _ChatCompletions:
    def __init__(self, client: Tilt):
        self._c = client

    def create(self, messages: list[ChatMessage | dict[str, Any]], *, model: str | None = None,
               max_tokens: int | None = None, max_completion_tokens: int | None = None,
               n: int | None = None,
               temperature: float | None = None, top_p: float | None = None,
               top_k: int | None = None, seed: int | None = None,
               stop: str | list[str] | None = None, logprobs: bool | None = None,
               top_logprobs: int | None = None, stream: bool = False,
               guidance: Guidance | dict[str, Any] | None = None,
               return_token_ids: bool | None = None, include_usage: bool | None = None,
               extra_body: dict[str, Any] | None = None) -> Any:
        """POST /v1/chat/completions -> ``ChatCompletion`` (or ``Stream[ChatCompletionChunk]``)."""
        body = _chat_body(messages, dict(
            model=model, max_tokens=max_tokens, max_completion_tokens=max_completion_tokens, n=n, temperature=temperature, top_p=top_p,
            top_k=top_k, seed=seed, stop=stop, logprobs=logprobs, top_logprobs=top_logprobs,
            stream=stream or None, guidance=guidance, return_token_ids=return_token_ids,
            stream_options={"include_usage": True} if include_usage else None,
            extra_body=extra_body))
        return self._c._post("/v1/chat/completions", body, ChatCompletion, ChatCompletionChunk)


class _Chat:
    def __init__(self, client: Tilt):
        self.completions = _ChatCompletions(client)


class _Rewards:
    def __init__(self, client: Tilt):
        self._c = client

    def score(self, prompt: str | list[int], completions: list[str] | list[list[int]], *,
              reward: str | None = None, model: str | None = None) -> RewardScores:
        """POST /v1/rewards/score -> R(prompt, y) for each completion."""
        body = build_body(prompt=prompt, completions=completions, reward=reward, model=model)
        return self._c._json("POST", "/v1/rewards/score", RewardScores, body)


class _Models:
    def __init__(self, client: Tilt):
        self._c = client

    def list(self) -> ModelList:
        """GET /v1/models: base model, value models and rewards with metadata."""
        return self._c._json("GET", "/v1/models", ModelList)


# ============================================================================ async


class AsyncStream(Generic[T]):
    """Async iterator over the chunks of one streamed response; ``aclose()`` hangs up."""

    def __init__(self, response: httpx.Response, model: type[T]):
        self.response, self.model = response, model

    async def __aiter__(self) -> AsyncIterator[T]:
        try:
            async for line in self.response.aiter_lines():
                for event in parse_sse_lines([line]):
                    if event is None:
                        return
                    check_stream_event(event)
                    yield self.model.model_validate(event)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncTilt:
    """Asynchronous client with the same surface as ``Tilt`` (methods are coroutines)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float | httpx.Timeout | None = None, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 http_client: httpx.AsyncClient | None = None):
        self._o = _Options(base_url, api_key, timeout, max_retries, backoff, max_backoff)
        self._http = http_client or httpx.AsyncClient(timeout=self._o.timeout)
        self.completions = _AsyncCompletions(self)
        self.chat = _AsyncChat(self)
        self.rewards = _AsyncRewards(self)
        self.models = _AsyncModels(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTilt:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None,
                    stream: bool = False) -> httpx.Response:
        o = self._o
        for attempt in range(o.max_retries + 1):
            request = self._http.build_request(method, o.base_url + path, json=body,
                                               headers=o.headers)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TimeoutException as exc:
                if attempt == o.max_retries:
                    raise APITimeoutError(f"request to {path} timed out") from exc
                await asyncio.sleep(retry_delay(attempt, None, o.backoff, o.max_backoff))
                continue
            except httpx.TransportError as exc:
                if attempt == o.max_retries:
                    raise APIConnectionError(f"cannot reach {o.base_url}: {exc}") from exc
                await asyncio.sleep(retry_delay(attempt, None, o.backoff, o.max_backoff))
                continue
            if should_retry(response) and attempt < o.max_retries:
                await response.aclose()
                await asyncio.sleep(retry_delay(attempt, response, o.backoff, o.max_backoff))
                continue
            if response.status_code >= 400:
                if stream:
                    await response.aread()
                    await response.aclose()
                raise_for_status(response)
            return response
        raise AssertionError("unreachable")

    async def _json(self, method: str, path: str, model: type[T],
                    body: dict[str, Any] | None = None) -> T:
        return model.model_validate((await self._send(method, path, body)).json())

    async def _post(self, path: str, body: dict[str, Any], model: type[T],
                    chunk: type[BaseModel]) -> Any:
        if body.get("stream"):
            return AsyncStream(await self._send("POST", path, body, stream=True), chunk)
        return await self._json("POST", path, model, body)

    async def health(self) -> bool:
        return (await self._send("GET", "/health")).status_code == 200

    async def ready(self) -> bool:
        try:
            return (await self._send("GET", "/ready")).status_code == 200
        except Exception:  # noqa: BLE001
            return False

    async def metrics(self) -> str:
        return (await self._send("GET", "/metrics")).text


class _AsyncCompletions:
    def __init__(self, client: AsyncTilt):
        self._c = client

    async def create(self, prompt: str | list[int], **kwargs: Any) -> Any:
        """Same arguments as ``Tilt.completions.create``."""
        include_usage = kwargs.pop("include_usage", None)
        if include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        return await self._c._post("/v1/completions", _completion_body(prompt, kwargs),
                                   Completion, CompletionChunk)


class _AsyncChatCompletions:
    def __init__(self, client: AsyncTilt):
        self._c = client

    async def create(self, messages: list[ChatMessage | dict[str, Any]], **kwargs: Any) -> Any:
        """Same arguments as ``Tilt.chat.completions.create``."""
        include_usage = kwargs.pop("include_usage", None)
        if include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        return await self._c._post("/v1/chat/completions", _chat_body(messages, kwargs),
                                   ChatCompletion, ChatCompletionChunk)


class _AsyncChat:
    def __init__(self, client: AsyncTilt):
        self.completions = _AsyncChatCompletions(client)


class _AsyncRewards:
    def __init__(self, client: AsyncTilt):
        self._c = client

    async def score(self, prompt: str | list[int], completions: list[str] | list[list[int]], *,
                    reward: str | None = None, model: str | None = None) -> RewardScores:
        body = build_body(prompt=prompt, completions=completions, reward=reward, model=model)
        return await self._c._json("POST", "/v1/rewards/score", RewardScores, body)


class _AsyncModels:
    def __init__(self, client: AsyncTilt):
        self._c = client

    async def list(self) -> ModelList:
        return await self._c._json("GET", "/v1/models", ModelList)
