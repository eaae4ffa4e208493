"""Schemathesis fuzzing of the POST endpoints from the server's own OpenAPI schema
(bounded: 25 examples per endpoint, valid and invalid bodies): never a 5xx, errors are
always OpenAI error JSON, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions",
                                  "/v1/rewards/score"])
def test_fuzzed_bodies_never_break_the_server(toy_server, path):
    schema = schemathesis.openapi.from_url(toy_server.url + "/openapi.json")
    op = schema[path]["POST"]
    bodies = (op.as_strategy(generation_mode=GenerationMode.NEGATIVE)
              | op.as_strategy(generation_mode=GenerationMode.POSITIVE))
    seen: dict[int, int] = {}

    @settings(max_examples=25, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(bodies)
    def check(case):
        r = case.call(base_url=toy_server.url, timeout=30)
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (case.body, r.text)
        if r.status_code >= 400:
            err = r.json()["error"]
            assert err["message"] and err["type"]

    check()
    assert any(400 <= s < 500 for s in seen)
    assert httpx.get(toy_server.url + "/health").status_code == 200
