"""SDK retry/backoff and error mapping, unit-tested in isolation with httpx.MockTransport
(the real-server tests are in tests/server)."""

from __future__ import annotations

import time

import httpx
import pytest
from tilt_client import (
    APIConnectionError,
    AsyncTilt,
    BadRequestError,
    RateLimitError,
    ServiceUnavailableError,
    Tilt,
    UpstreamError,
)
from tilt_client._base import retry_delay

OK = {"id": "c", "object": "text_completion", "created": 0, "model": "m",
      "choices": [{"index": 0, "text": "hi", "finish_reason": "length",
                   "tilt": {"method": "token", "kl_to_base": 0.5}}]}


def err(status: int, param: str | None = None, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, json={"error": {
        "message": "nope", "type": "x", "param": param, "code": None}})


def scripted(responses: list):
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        item = responses[min(len(calls) - 1, len(responses) - 1)]
        if isinstance(item, Exception):
            raise item
        return item

    return calls, handler


def test_retries_429_then_succeeds_honouring_retry_after():
    calls, handler = scripted([err(429, headers={"Retry-After": "0.2"}), err(503),
                               httpx.Response(200, json=OK)])
    client = Tilt("http://t", api_key="k", backoff=0.01,
                  http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    t = time.perf_counter()
    out = client.completions.create("x", guidance={"method": "token"})
    assert time.perf_counter() - t >= 0.2  # waited as the server asked
    assert out.choices[0].tilt.kl_to_base == 0.5 and len(calls) == 3
    assert calls[0].headers["authorization"] == "Bearer k"


def test_gives_up_after_max_retries():
    calls, handler = scripted([err(503)])
    client = Tilt("http://t", max_retries=2, backoff=0.001,
                  http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(ServiceUnavailableError):
        client.models.list()
    assert len(calls) == 3


def test_no_retry_on_400_and_typed_errors():
    calls, handler = scripted([err(400, param="guidance.beta")])
    client = Tilt("http://t", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(BadRequestError) as e:
        client.completions.create("x")
    assert e.value.param == "guidance.beta" and len(calls) == 1
    _, handler = scripted([err(502)])
    client = Tilt("http://t", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(UpstreamError):
        client.rewards.score("x", ["y"])


def test_connection_errors_are_retried_then_raised():
    calls, handler = scripted([httpx.ConnectError("refused")])
    client = Tilt("http://t", max_retries=1, backoff=0.001,
                  http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(APIConnectionError):
        client.completions.create("x")
    assert len(calls) == 2


def test_stream_error_event_raises():
    sse = 'data: {"error": {"message": "boom", "type": "rate_limit_error", "param": null}}\n\n' \
          "data: [DONE]\n\n"
    _, handler = scripted([httpx.Response(200, text=sse,
                                          headers={"content-type": "text/event-stream"})])
    client = Tilt("http://t", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(RateLimitError):
        list(client.completions.create("x", stream=True))


async def test_async_retry():
    calls, handler = scripted([err(429, headers={"Retry-After": "0"}),
                               httpx.Response(200, json=OK)])
    async with AsyncTilt("http://t/v1", http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler))) as client:
        out = await client.completions.create("x")
    assert out.choices[0].text == "hi" and len(calls) == 2
    assert str(calls[0].url) == "http://t/v1/completions"


def test_backoff_grows_and_is_capped():
    assert 0.75 <= retry_delay(0, None, 1.0, 30) <= 1.25
    assert 3.0 <= retry_delay(2, None, 1.0, 30) <= 5.0
    assert retry_delay(10, None, 1.0, 8.0) <= 8.0 * 1.25
    r = httpx.Response(429, headers={"Retry-After": "120"})
    assert retry_delay(0, r, 1.0, 30.0) == 30.0


def test_sdk_depends_only_on_httpx_and_pydantic():
    import ast
    import pathlib

    import tilt_client

    allowed = {"httpx", "pydantic", "tilt_client", "__future__", "typing", "collections",
               "asyncio", "json", "random", "time", "contextlib", "dataclasses"}
    for path in pathlib.Path(tilt_client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert {n.split(".")[0] for n in names} <= allowed, (path.name, names)
