"""The one mapping from errors to HTTP: status + OpenAI's ``{"error": {message, type, param,
code}}``, for the server's domain errors (``server.errors``) and FastAPI's own.

    400 invalid_request_error   BadRequest; unknown fields, malformed JSON, wrong types
    401 authentication_error    Unauthorized
    404 not_found_error         NotFound; unknown route
    429 rate_limit_error        Overloaded (with Retry-After)
    499                         ClientDisconnected (nobody reads it)
    502 upstream_error          UpstreamFailed
    503 service_unavailable     NotReady, ShuttingDown (a subclass)
    504 timeout_error           TimedOut
    500 internal_error          anything else
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.errors import (
    BadRequest,
    ClientDisconnected,
    NotFound,
    NotReady,
    Overloaded,
    ShuttingDown,
    TiltError,
    TimedOut,
    Unauthorized,
    UpstreamFailed,
)

log = logging.getLogger("tilt.server")

STATUS: dict[type[TiltError], int] = {
    BadRequest: 400, Unauthorized: 401, NotFound: 404, Overloaded: 429,
    ClientDisconnected: 499, UpstreamFailed: 502, NotReady: 503, ShuttingDown: 503,
    TimedOut: 504}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 500: "internal_error", 502: "upstream_error",
          503: "service_unavailable", 504: "timeout_error"}


def status_of(exc: TiltError) -> int:
    return next((STATUS[k] for k in type(exc).__mro__ if k in STATUS), 500)


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "error"),
                      "param": param, "code": code}}


def tilt_error_body(exc: TiltError) -> dict[str, Any]:
    """The JSON of a domain error (also sent in-band by a stream that already said 200)."""
    return error_body(status_of(exc), exc.message, exc.param, exc.code)


def error_response(exc: TiltError) -> JSONResponse:
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(tilt_error_body(exc), status_code=status_of(exc), headers=headers)


def internal_error_body(exc: BaseException) -> dict[str, Any]:
    return error_body(500, f"internal error: {type(exc).__name__}")


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """Pydantic's location ('body', 'guidance', 'beta') -> 'guidance.beta'."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # Drop pydantic's union-branch tags such as 'str' or 'list[int]'.
    parts = [p for p in parts if not any(c in p for c in "[]") and p not in ("str", "int")]
    return ".".join(parts) or None


def _validation_message(err: dict[str, Any], param: str | None) -> str:
    if err.get("type") == "json_invalid":
        return f"malformed JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}"
    if err.get("type") == "extra_forbidden":
        return f"unknown field '{param}'"
    if err.get("type") == "missing":
        return f"missing required field '{param}'"
    return f"invalid value for '{param}': {err.get('msg')}"


def install_handlers(app: FastAPI) -> None:
    """Map every error a route can raise to the OpenAI error JSON."""

    @app.exception_handler(TiltError)
    async def _tilt(_: Request, exc: TiltError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = _loc_to_param(tuple(first.get("loc", ())))
        code = "json_invalid" if first.get("type") == "json_invalid" else "invalid_value"
        if first.get("type") == "json_invalid":
            param = None
        return JSONResponse(error_body(400, _validation_message(first, param), param, code),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return JSONResponse(internal_error_body(exc), status_code=500)
