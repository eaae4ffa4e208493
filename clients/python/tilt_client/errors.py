"""Exceptions of the Tilt SDK. Every HTTP error carries the server's OpenAI-style fields."""

from __future__ import annotations

from typing import Any


class TiltError(Exception):
    """Base class of every SDK error."""


class APIConnectionError(TiltError):
    """The server could not be reached (after retries)."""


class APITimeoutError(APIConnectionError):
    """The request timed out on the client side."""


class APIStatusError(TiltError):
    """The server answered an HTTP error: ``status``, ``message``, ``param``, ``code``."""

    def __init__(self, status: int, message: str, *, type: str | None = None,
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, body: Any = None):
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers, self.body = param, code, headers or {}, body
        where = f" (param: {param})" if param else ""
        super().__init__(f"HTTP {status}: {message}{where}")


class BadRequestError(APIStatusError):
    """400: the request is invalid; ``param`` names the offending field."""


class AuthenticationError(APIStatusError):
    """401: missing or wrong API key."""


class NotFoundError(APIStatusError):
    """404: unknown model or route."""


class RateLimitError(APIStatusError):
    """429: the server's queue is full (retried automatically, honouring Retry-After)."""


class UpstreamError(APIStatusError):
    """502: a reward service behind the server failed."""


class ServiceUnavailableError(APIStatusError):
    """503: the server is not ready (retried automatically)."""


class ServerTimeoutError(APIStatusError):
    """504: the request ran past the server's time limit."""


class InternalServerError(APIStatusError):
    """Any other 5xx."""


_BY_STATUS = {400: BadRequestError, 401: AuthenticationError, 404: NotFoundError,
              429: RateLimitError, 502: UpstreamError, 503: ServiceUnavailableError,
              504: ServerTimeoutError}


def status_error(status: int, body: Any, headers: dict[str, str] | None = None) -> APIStatusError:
    """Build the right exception from an OpenAI error body ``{"error": {...}}``."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {"message": str(body)[:500] if body else f"HTTP {status}"}
    cls = _BY_STATUS.get(status, InternalServerError if status >= 500 else APIStatusError)
    return cls(status, str(err.get("message")), type=err.get("type"), param=err.get("param"),
               code=err.get("code"), headers=headers, body=body)
