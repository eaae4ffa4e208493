"""The endpoints, defined once for both clients: ``client.completions``, ``client.chat``,
``client.rewards``, ``client.models``.

Each method builds its request body and hands it to the client it belongs to, so the
parameters, defaults and docstrings are the same on ``Tilt`` and ``AsyncTilt``. ``Tilt``
answers with the result; ``AsyncTilt`` with an awaitable of it (``await client.models.list()``).
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from tilt_client._base import build_body
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

R = TypeVar("R")  # what a method returns: the value on Tilt, an awaitable of it on AsyncTilt


class Transport(Protocol):
    """What a resource needs from its client (``Tilt`` or ``AsyncTilt``)."""

    def _json(self, method: str, path: str, model: type[BaseModel],
              body: dict[str, Any] | None = None) -> Any: ...

    def _post(self, path: str, body: dict[str, Any], model: type[BaseModel],
              chunk: type[BaseModel]) -> Any: ...


def _stream_options(include_usage: bool | None) -> dict[str, bool] | None:
    return {"include_usage": True} if include_usage else None


class Completions:
    def __init__(self, client: Transport):
        self._client = client

    def create(self, prompt: str | list[int], *, model: str | None = None,
               max_tokens: int | None = None, n: int | None = None,
               temperature: float | None = None, top_p: float | None = None,
               top_k: int | None = None, seed: int | None = None,
               stop: str | list[str] | None = None, logprobs: int | None = None,
               stream: bool = False, guidance: Guidance | dict[str, Any] | None = None,
               return_token_ids: bool | None = None, include_usage: bool | None = None,
               extra_body: dict[str, Any] | None = None) -> Any:
        """POST /v1/completions -> ``Completion`` (or ``Stream[CompletionChunk]``;
        ``AsyncStream`` on ``AsyncTilt``)."""
        body = build_body(
            prompt=prompt, model=model, max_tokens=max_tokens, n=n, temperature=temperature,
            top_p=top_p, top_k=top_k, seed=seed, stop=stop, logprobs=logprobs,
            stream=stream or None, guidance=guidance, return_token_ids=return_token_ids,
            stream_options=_stream_options(include_usage), extra_body=extra_body)
        return self._client._post("/v1/completions", body, Completion, CompletionChunk)


class ChatCompletions:
    def __init__(self, client: Transport):
        self._client = client

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
        """POST /v1/chat/completions -> ``ChatCompletion`` (or ``Stream[ChatCompletionChunk]``;
        ``AsyncStream`` on ``AsyncTilt``)."""
        body = build_body(
            messages=messages, model=model, max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens, n=n, temperature=temperature,
            top_p=top_p, top_k=top_k, seed=seed, stop=stop, logprobs=logprobs,
            top_logprobs=top_logprobs, stream=stream or None, guidance=guidance,
            return_token_ids=return_token_ids, stream_options=_stream_options(include_usage),
            extra_body=extra_body)
        return self._client._post("/v1/chat/completions", body, ChatCompletion,
                                  ChatCompletionChunk)


class Chat:
    def __init__(self, client: Transport):
        self.completions = ChatCompletions(client)


class Rewards(Generic[R]):
    """``R`` is ``RewardScores`` on ``Tilt``, an awaitable of it on ``AsyncTilt``."""

    def __init__(self, client: Transport):
        self._client = client

    def score(self, prompt: str | list[int], completions: list[str] | list[list[int]], *,
              reward: str | None = None, model: str | None = None) -> R:
        """POST /v1/rewards/score -> R(prompt, y) for each completion."""
        body = build_body(prompt=prompt, completions=completions, reward=reward, model=model)
        return self._client._json("POST", "/v1/rewards/score", RewardScores, body)


class Models(Generic[R]):
    """``R`` is ``ModelList`` on ``Tilt``, an awaitable of it on ``AsyncTilt``."""

    def __init__(self, client: Transport):
        self._client = client

    def list(self) -> R:
        """GET /v1/models: base model, value models and rewards with metadata."""
        return self._client._json("GET", "/v1/models", ModelList)
