"""Optional Bearer API keys for /v1/* (health, readiness and metrics stay open).

Keys are compared with ``hmac.compare_digest`` against every configured key (constant time
in the key's content) and are never logged or echoed back.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import Unauthorized


def _matches(token: str, keys: list[bytes]) -> bool:
    given = token.encode()
    ok = False
    for key in keys:  # no early exit: the time does not depend on which key matched
        ok |= hmac.compare_digest(given, key)
    return ok


class ApiKeyCheck:
    """``Unauthorized`` (401) unless ``Authorization: Bearer <key>`` holds a valid key
    (checked in the app's middleware, before the body is read, so unauthenticated requests
    learn nothing)."""

    def __init__(self, api_keys: list[str]):
        self._keys = [k.encode() for k in api_keys]

    def guards(self, path: str) -> bool:
        return bool(self._keys) and path.startswith("/v1/")

    def check(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not _matches(token.strip(), self._keys):
            raise Unauthorized("missing or invalid API key (send 'Authorization: Bearer "
                               "<key>')")
