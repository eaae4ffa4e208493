"""Errors raised by reward adapters.

``RewardServiceError`` means a *remote* reward could not be computed: the service is down,
timed out after its retries, or answered something that is not the wire format. The server
maps it to HTTP 502 (bad gateway); it is never raised for bad user input (that is ValueError).
"""

from __future__ import annotations


class RewardServiceError(RuntimeError):
    """A reward service is unreachable, too slow, or answered garbage.

    Attributes: ``url`` (the endpoint), ``attempts`` (requests made), ``reason`` (short text).
    """

    def __init__(self, url: str, reason: str, attempts: int = 1):
        self.url = url
        self.reason = reason
        self.attempts = attempts
        super().__init__(f"reward service {url} failed after {attempts} attempt(s): {reason}")
