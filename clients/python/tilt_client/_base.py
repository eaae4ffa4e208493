"""What the sync and async clients share: request bodies, retry policy, SSE parsing."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import httpx

from tilt_client.errors import status_error
from tilt_client.models import ChatMessage, Guidance, RewardTerm

RETRY_STATUSES = (429, 503)
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


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


def retry_delay(attempt: int, response: httpx.Response | None, backoff: float,
                max_backoff: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's Retry-After when
    given, else backoff · 2^attempt with ±25% jitter, capped at ``max_backoff``."""
    if response is not None:
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                return min(max(float(header), 0.0), max_backoff)
            except ValueError:
                pass
    base = min(backoff * (2 ** attempt), max_backoff)
    return base * random.uniform(0.75, 1.25)


def should_retry(response: httpx.Response) -> bool:
    return response.status_code in RETRY_STATUSES


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


def parse_sse_lines(lines: Iterable[str]) -> Iterable[dict[str, Any] | None]:
    """Yield each ``data:`` payload as JSON; ``None`` for the final ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield None
            return
        yield json.loads(data)


def check_stream_event(event: dict[str, Any]) -> None:
    """An error object inside a stream becomes the matching exception."""
    if "error" in event and "choices" not in event:
        err = event["error"] if isinstance(event["error"], dict) else {}
        status = {"rate_limit_error": 429, "upstream_error": 502, "timeout_error": 504,
                  "service_unavailable": 503}.get(str(err.get("type")), 400)
        raise status_error(status, event)


__all__ = ["build_body", "retry_delay", "should_retry", "raise_for_status",
           "parse_sse_lines", "check_stream_event", "DEFAULT_TIMEOUT"]
