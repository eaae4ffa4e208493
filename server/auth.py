"""Optional Bearer API keys for /v1/* (health, readiness and metrics stay open).

Keys are compared with ``hmac.compare_digest`` against every configured key (constant time
in the key's content) and are never logged or echoed back.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import TiltHTTPError


def _matches(token: str, keys: list[bytes]) -> bool:
    given = token.encode()
    ok = False
    for key in keys:  # no early exit: the time does not depend on which key matched
        ok |= hmac.compare_digest(given, key)
    return ok


class ApiKeyCheck:
    """FastAPI dependency: 401 unless ``Authorization: Bearer <key>`` holds a valid key."""

    def __init__(self, api_keys: list[str]):
        self._keys = [k.encode() for k in api_keys]

    async def __call__(self, request: Request) -> None:
        if not self._keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not _matches(token.strip(), self._keys):
            raise TiltHTTPError(401, "missing or invalid API key (send 'Authorization: "
                                "Bearer <key>')", code="invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"})
