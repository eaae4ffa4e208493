"""What the sync and async clients share: options, request bodies, the retry policy, errors.

Retry policy (run by tenacity, ``Retrying`` or ``AsyncRetrying`` over ``retry_policy``): an
attempt that fails with a connection error, a timeout, or HTTP 429 or 503 is retried up to
``max_retries`` times, after ``retry_delay`` seconds; the last failure is raised as it is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from tilt_client.errors import APIConnectionError, APIStatusError, APITimeoutError, status_error
from tilt_client.models import ChatMessage, Guidance, RewardTerm

RETRY_STATUSES = (429, 503)
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class ClientOptions:
    """Connection settings of one client (``base_url`` may end with or without ``/v1``)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float | httpx.Timeout | None,
                 max_retries: int, backoff: float, max_backoff: float):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff

    def build_request(self, http: httpx.Client | httpx.AsyncClient, method: str, path: str,
                      body: dict[str, Any] | None) -> httpx.Request:
        return http.build_request(method, self.base_url + path, json=body, headers=self.headers)

    @contextmanager
    def transport_errors(self, path: str) -> Iterator[None]:
        """httpx's timeouts and transport failures become the SDK's exceptions."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise APITimeoutError(f"request to {path} timed out") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"cannot reach {self.base_url}: {exc}") from exc

    def retry_policy(self) -> dict[str, Any]:
        """Keyword arguments of ``tenacity.Retrying`` / ``AsyncRetrying`` (module docstring)."""

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            return retry_delay(state.attempt_number - 1, failure, self.backoff, self.max_backoff)

        return dict(stop=stop_after_attempt(self.max_retries + 1), wait=wait,
                    retry=retry_if_exception(is_retryable), reraise=True)


def is_retryable(exc: BaseException) -> bool:
    """Connection errors and timeouts, and HTTP 429 and 503."""
    return isinstance(exc, APIConnectionError) or (
        isinstance(exc, APIStatusError) and exc.status in RETRY_STATUSES)


def retry_delay(attempt: int, response: httpx.Response | BaseException | None, backoff: float,
                max_backoff: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After when the
    failed ``response`` (or the ``APIStatusError`` made from it) has one, else
    backoff · 2^attempt capped at ``max_backoff``, with ±25% jitter."""
    header = (getattr(response, "headers", None) or {}).get("retry-after")
    if header is not None:
        try:
            return min(max(float(header), 0.0), max_backoff)
        except ValueError:
            pass
    base = min(backoff * (2 ** attempt), max_backoff)
    return base * random.uniform(0.75, 1.25)


def _dump(value: Any) -> Any:
    if isinstance(value, (Guidance, ChatMessage, RewardTerm)):
        return value.model_dump(exclude_none=True)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def build_body(**fields: Any) -> dict[str, Any]:
    """JSON body from keyword arguments, leaving out the ones that are None; ``extra_body``
    is merged last (for fields this SDK does not know yet)."""
    extra = fields.pop("extra_body", None) or {}
    body = {k: _dump(v) for k, v in fields.items() if v is not None}
    body.update(extra)
    return body


def raise_for_status(response: httpx.Response, body: Any | None = None) -> None:
    if response.status_code < 400:
        return
    if body is None:
        try:
            body = response.json()
        except (ValueError, httpx.ResponseNotRead):
            try:
                body = response.text
            except httpx.ResponseNotRead:
                body = None
    raise status_error(response.status_code, body, dict(response.headers))


__all__ = ["ClientOptions", "build_body", "retry_delay", "is_retryable", "raise_for_status",
           "DEFAULT_TIMEOUT", "RETRY_STATUSES"]
