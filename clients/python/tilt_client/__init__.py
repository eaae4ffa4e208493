"""Tilt Python SDK (httpx + pydantic only): sync and async clients for the Tilt server.

    from tilt_client import Tilt, Guidance
    client = Tilt("http://127.0.0.1:8000")
    out = client.completions.create(prompt="The movie was", guidance=Guidance(method="token"))
"""

from tilt_client.client import AsyncStream, AsyncTilt, Stream, Tilt
from tilt_client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServerTimeoutError,
    ServiceUnavailableError,
    TiltError,
    UpstreamError,
)
from tilt_client.models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    Completion,
    CompletionChunk,
    Guidance,
    ModelList,
    RewardScores,
    RewardTerm,
    TiltDiagnostics,
)

__all__ = [
    "Tilt", "AsyncTilt", "Stream", "AsyncStream", "Guidance", "RewardTerm", "ChatMessage",
    "Completion", "CompletionChunk", "ChatCompletion", "ChatCompletionChunk", "ModelList",
    "RewardScores", "TiltDiagnostics", "TiltError", "APIConnectionError", "APITimeoutError",
    "APIStatusError", "BadRequestError", "AuthenticationError", "NotFoundError",
    "RateLimitError", "UpstreamError", "ServiceUnavailableError", "ServerTimeoutError",
    "InternalServerError",
]
