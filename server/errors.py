"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the server reports goes through ``TiltHTTPError`` (or one of FastAPI's own
validation/HTTP errors, mapped here) so clients always see the same JSON shape, with
``param`` naming the offending request field when there is one.

    400 invalid_request_error   bad values, unknown fields, malformed JSON, wrong types
    401 authentication_error    missing or wrong API key
    404 not_found_error         unknown model / route
    429 rate_limit_error        queue full (with Retry-After)
    502 upstream_error          an external reward service failed
    503 service_unavailable     engine not ready
    504 timeout_error           the request ran past the server's time limit
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tilt.server")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 500: "internal_error", 502: "upstream_error",
          503: "service_unavailable", 504: "timeout_error"}


class TiltHTTPError(Exception):
    """An error with an HTTP status and the request field it is about."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code, self.headers = code, headers


def bad_request(message: str, param: str | None = None, code: str | None = None) -> TiltHTTPError:
    return TiltHTTPError(400, message, param=param, code=code or "invalid_value")


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "error"),
                      "param": param, "code": code}}


def error_response(exc: TiltHTTPError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, exc.param, exc.code),
                        status_code=exc.status, headers=exc.headers)


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
    """Map every error FastAPI can raise to the OpenAI error JSON."""

    @app.exception_handler(TiltHTTPError)
    async def _tilt(_: Request, exc: TiltHTTPError) -> JSONResponse:
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
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"),
                            status_code=500)
