"""The server's domain errors: what went wrong and which request field it is about.

Planning, running and admission raise these; they know no HTTP. ``server.http_errors`` is
the one place that maps each class to an HTTP status and OpenAI's error JSON.
"""

from __future__ import annotations

from types import EllipsisType
from typing import Any


class TiltError(Exception):
    """A failure reported to the client: a message, the offending field, a machine code.

    Subclasses name their default code (``class X(TiltError, code="...")``); ``code=...``
    keeps it, ``code=None`` sends none.
    """

    default_code: str | None = None

    def __init_subclass__(cls, code: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.default_code = code

    def __init__(self, message: str, param: str | None = None,
                 code: str | None | EllipsisType = ...):
        super().__init__(message)
        self.message, self.param = message, param
        self.code = self.default_code if code is ... else code


class BadRequest(TiltError, code="invalid_value"):
    """A value the schema could not judge: over a cap, an unknown name, a bad prompt."""


class Overloaded(TiltError, code="queue_full"):
    """Every slot is busy and the queue is full; the client may retry after a while."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthorized(TiltError, code="invalid_api_key"):
    """A missing or wrong API key."""


class ClientDisconnected(TiltError, code="client_disconnected"):
    """The client hung up; its work has been cancelled (nobody reads the answer)."""

    def __init__(self) -> None:
        super().__init__("client closed the request")


class NotFound(TiltError, code="model_not_found"):
    """The request names a model this server does not serve."""


class TimedOut(TiltError, code="timeout"):
    """The request ran past the server's time limit (its work has been cancelled)."""

    def __init__(self, limit_s: float | None):
        super().__init__(f"request ran past the server's limit of {limit_s} s")


class UpstreamFailed(TiltError, code="reward_unavailable"):
    """An external reward service failed (down, too slow, or answered garbage)."""


class NotReady(TiltError, code="not_ready"):
    """The engine is not open (starting up or shutting down)."""


class ShuttingDown(NotReady, code="server_shutting_down"):
    """The server is stopping (SIGTERM/SIGINT): in-flight work was cancelled, new work refused."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry on another replica or later")
