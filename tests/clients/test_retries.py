"""SDK retry/backoff and error mapping, unit-tested in isolation with httpx.MockTransport
(the real-server tests are in tests/server)."""

from __future__ import annotations

import time

import httpx
import pytest
from tilt_client import (
    APIConnectionError,
    APITimeoutError,
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

    # httpx_sse and tenacity: small pure-python libraries (SSE parsing, retries), declared in
    # clients/python/pyproject.toml; still no torch or vLLM
    allowed = {"httpx", "pydantic", "httpx_sse", "tenacity", "tilt_client", "__future__",
               "typing", "collections", "asyncio", "json", "random", "time", "contextlib",
               "dataclasses"}
    for path in pathlib.Path(tilt_client.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            assert {n.split(".")[0] for n in names} <= allowed, (path.name, names)


def test_sdk_declares_what_it_imports():
    import pathlib
    import re

    project = pathlib.Path(__file__).parents[2] / "clients" / "python" / "pyproject.toml"
    deps = re.search(r"^dependencies = \[(.*)\]", project.read_text(), re.M).group(1)
    names = {re.split(r"[<>=!~ ]", d)[0] for d in re.findall(r'"([^"]+)"', deps)}
    assert names == {"httpx", "pydantic", "httpx-sse", "tenacity"}


def test_retry_after_from_the_error_and_connection_errors_use_backoff():
    from tilt_client import RateLimitError

    e = RateLimitError(429, "busy", headers={"retry-after": "0.5"})
    assert retry_delay(3, e, 1.0, 30.0) == 0.5
    assert 0.75 <= retry_delay(0, APIConnectionError("refused"), 1.0, 30.0) <= 1.25
    assert 0.75 <= retry_delay(0, err(429, headers={"Retry-After": "soon"}), 1.0, 30.0) <= 1.25


def test_async_and_sync_methods_have_the_same_signatures_and_docs():
    import inspect

    sync, asyn = Tilt("http://t"), AsyncTilt("http://t")
    for get in (lambda c: c.completions.create, lambda c: c.chat.completions.create,
                lambda c: c.rewards.score, lambda c: c.models.list, lambda c: c.health,
                lambda c: c.ready, lambda c: c.metrics):
        a, b = get(sync), get(asyn)
        assert inspect.signature(a).parameters == inspect.signature(b).parameters
        assert a.__doc__ and a.__doc__ == b.__doc__


SSE = ('data: {"id": "c", "object": "text_completion", "created": 0, "model": "m", '
       '"choices": [{"index": 0, "text": "a"}]}\n\n'
       ': ping\n\n'
       'data: {"id": "c", "object": "text_completion", "created": 0, "model": "m", '
       '"choices": [{"index": 0, "text": "b"}]}\n\n'
       'data: [DONE]\n\n')


def sse_response(text: str) -> httpx.Response:
    return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})


def test_stream_yields_chunks_until_done():
    calls, handler = scripted([sse_response(SSE)])
    client = Tilt("http://t", http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with client.completions.create("x", stream=True, include_usage=True) as stream:
        assert [c.choices[0].text for c in stream] == ["a", "b"]
    import json
    assert json.loads(calls[0].content) == {"prompt": "x", "stream": True,
                                            "stream_options": {"include_usage": True}}


async def test_async_stream_and_error_event():
    _, handler = scripted([sse_response(SSE)])
    async with AsyncTilt("http://t", http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler))) as client:
        stream = await client.completions.create("x", stream=True)
        assert [c.choices[0].text async for c in stream] == ["a", "b"]
    sse = 'data: {"error": {"message": "boom", "type": "upstream_error"}}\n\ndata: [DONE]\n\n'
    _, handler = scripted([sse_response(sse)])
    async with AsyncTilt("http://t", http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler))) as client:
        stream = await client.chat.completions.create([{"role": "user", "content": "hi"}],
                                                      stream=True)
        with pytest.raises(UpstreamError):
            [c async for c in stream]


async def test_async_gives_up_with_the_same_exceptions():
    calls, handler = scripted([httpx.ConnectTimeout("slow")])
    async with AsyncTilt("http://t", max_retries=2, backoff=0.001, http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler))) as client:
        with pytest.raises(APITimeoutError):
            await client.models.list()
        assert len(calls) == 3
        calls.clear()
        assert not await client.ready()
    calls, handler = scripted([err(503, headers={"Retry-After": "0"})])
    async with AsyncTilt("http://t", max_retries=1, http_client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler))) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.completions.create("x", stream=True)
        assert len(calls) == 2
