"""Client for a remote reward service (the wire format is defined in ``rewards.http_server``).

    POST URL   {"prompt": str, "completions": [str, ...]}
      200  ->  {"scores": [number | null, ...]}     one per completion; null means -inf

Completions are sent in batches of ``batch_size`` (concurrently).

Retry policy (``retry_policy``, run by tenacity): each request is bounded by ``timeout``
seconds in total (an ``asyncio`` deadline on top of httpx's per-phase timeouts), and is retried
``retries`` times on connection errors, timeouts and HTTP 429, 500, 502, 503, 504, sleeping
``backoff · 2^i`` seconds before retry i (no jitter). So a call never takes longer than about
``(retries + 1) · timeout + backoff · (2^retries - 1)`` seconds.

Anything else — another HTTP 4xx or 5xx, a body that is not JSON, a wrong shape or length, a
non-number — is not retried. Every failure raises ``rewards.errors.RewardServiceError`` (the
server maps it to HTTP 502).
"""
from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from rewards.base import TextReward
from rewards.errors import RewardServiceError

RETRY_STATUS = {429, 500, 502, 503, 504}


class _Retryable(Exception):
    """A failure worth another attempt (network, timeout, a status in ``RETRY_STATUS``)."""


def retry_policy(retries: int, backoff: float) -> AsyncRetrying:
    """The retry policy of the module docstring: ``retries`` more attempts after a
    ``_Retryable`` failure, ``backoff · 2^i`` seconds before retry i; the last failure is
    re-raised as it is."""
    return AsyncRetrying(stop=stop_after_attempt(retries + 1), wait=wait_exponential(multiplier=backoff),
                         retry=retry_if_exception_type(_Retryable), reraise=True)


def parse_scores(body: Any, n: int, url: str, attempts: int) -> list[float]:
    """Validate a response body against the wire format -> floats (null -> -inf)."""
    scores = body.get("scores") if isinstance(body, dict) else None
    if not isinstance(scores, list):
        raise RewardServiceError(url, f"response is not {{'scores': [...]}}: {str(body)[:200]!r}", attempts)
    if len(scores) != n:
        raise RewardServiceError(url, f"got {len(scores)} scores for {n} completions", attempts)
    out = []
    for s in scores:
        if s is None:
            out.append(-math.inf)
        elif isinstance(s, (int, float)) and not isinstance(s, bool) and not math.isnan(s) and s != math.inf:
            out.append(float(s))
        else:
            raise RewardServiceError(url, f"score {s!r} is not a number or null", attempts)
    return out


class HTTPReward(TextReward):
    def __init__(self, url: str, timeout: float = 10.0, retries: int = 2, backoff: float = 0.25,
                 batch_size: int = 64, headers: dict[str, str] | None = None, codec: Any = None):
        super().__init__(codec)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"reward service URL must start with http:// or https://, got {url!r}")
        if timeout <= 0 or retries < 0 or backoff < 0 or batch_size < 1:
            raise ValueError("need timeout > 0, retries >= 0, backoff >= 0, batch_size >= 1")
        self.url, self.timeout, self.retries, self.backoff = url, timeout, retries, backoff
        self.batch_size = batch_size
        self.headers = dict(headers or {})
        self.name = f"http:{url}"
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (httpx clients must not cross loops)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), headers=self.headers)
            self._loop = loop
        return self._client

    async def _post_once(self, payload: dict[str, Any]) -> httpx.Response:
        try:
            resp = await asyncio.wait_for(self._get_client().post(self.url, json=payload), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable(f"timed out after {self.timeout:g} s") from None
        except httpx.TransportError as e:
            raise _Retryable(f"{type(e).__name__}: {e}") from None
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]!r}")
        return resp

    async def _post(self, prompt: str, completions: list[str]) -> list[float]:
        payload = {"prompt": prompt, "completions": completions}
        attempts = 0
        try:
            async for attempt in retry_policy(self.retries, self.backoff):
                attempts = attempt.retry_state.attempt_number
                with attempt:
                    resp = await self._post_once(payload)
        except _Retryable as e:
            raise RewardServiceError(self.url, str(e), attempts) from None
        if resp.status_code != 200:
            raise RewardServiceError(self.url, f"HTTP {resp.status_code}: {resp.text[:200]!r}", attempts)
        try:
            body = resp.json()
        except ValueError:
            raise RewardServiceError(self.url, f"response is not JSON: {resp.text[:200]!r}", attempts) from None
        return parse_scores(body, len(completions), self.url, attempts)

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        batches = [list(completions[i:i + self.batch_size])
                   for i in range(0, len(completions), self.batch_size)]
        results = await asyncio.gather(*(self._post(prompt, b) for b in batches))
        return [s for r in results for s in r]

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except RuntimeError:  # its event loop is gone
                pass
