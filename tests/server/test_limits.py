"""Load limits and safety: cancelled streams, a full queue, API keys, metrics."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import openai
import pytest
from tilt_client import (
    AuthenticationError,
    BadRequestError,
    RateLimitError,
    Tilt,
    UpstreamError,
)

from tests.server.live import metric

LONG = {"prompt": "<3>", "max_tokens": 200, "n": 256, "seed": 0, "stream": True}


def wait_for(pred, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_cancelled_stream_leaves_nothing_running(long_server):
    url = long_server.url
    aborted = metric(url, "tilt:requests_aborted_total")
    with httpx.stream("POST", url + "/v1/completions", json=LONG, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # keep a reference: dropping it closes the connection
        for _ in range(5):
            assert next(lines).startswith("data:") or True
        assert metric(url, "tilt:num_requests_running") == 1
    # The client hung up mid-way: the server cancels the sampler and frees the slot.
    assert wait_for(lambda: metric(url, "tilt:num_requests_running") == 0)
    assert metric(url, "tilt:num_requests_waiting") == 0
    assert metric(url, "tilt:engine_requests_running") == 0
    assert wait_for(lambda: metric(url, "tilt:requests_aborted_total") == aborted + 1)
    calls = long_server.engine_state.handle.lm.calls
    time.sleep(0.3)  # six engine steps: no sampler is still calling the model
    assert long_server.engine_state.handle.lm.calls == calls
    # and the server still answers
    ok = httpx.post(url + "/v1/completions", json={"prompt": "<1>", "max_tokens": 3}, timeout=30)
    assert ok.status_code == 200


def test_disconnect_aborts_non_streamed_request(long_server):
    url, lm = long_server.url, long_server.engine_state.handle.lm
    aborted = metric(url, "tilt:requests_aborted_total")
    body = {k: v for k, v in LONG.items() if k != "stream"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=body, timeout=0.4)  # the client gives up
    assert wait_for(lambda: metric(url, "tilt:num_requests_running") == 0)
    assert wait_for(lambda: metric(url, "tilt:requests_aborted_total") == aborted + 1)
    calls = lm.calls
    time.sleep(0.3)
    assert lm.calls == calls  # the sampler was cancelled, not left running


def test_sdk_stream_close_aborts(long_server):
    url = long_server.url
    with Tilt(url) as c:
        stream = c.completions.create("<3>", max_tokens=200, n=256, seed=1, stream=True)
        for i, _ in enumerate(stream):
            if i == 2:
                break
        stream.close()
    assert wait_for(lambda: metric(url, "tilt:num_requests_running") == 0)


def test_full_queue_answers_429(long_server):
    url = long_server.url
    rejected = metric(url, "tilt:requests_rejected_total")
    first = httpx.stream("POST", url + "/v1/completions", json=LONG, timeout=60)
    r1 = first.__enter__()
    try:
        lines = r1.iter_lines()
        next(lines)  # the first request holds the only slot
        second_status: list[int] = []

        def queued() -> None:
            r = httpx.post(url + "/v1/completions", timeout=60,
                           json={"prompt": "<1>", "max_tokens": 2})
            second_status.append(r.status_code)

        t = threading.Thread(target=queued)
        t.start()
        assert wait_for(lambda: metric(url, "tilt:num_requests_waiting") == 1)
        r3 = httpx.post(url + "/v1/completions", json={"prompt": "<1>", "max_tokens": 2})
        assert r3.status_code == 429
        assert r3.headers["retry-after"] == "2"
        assert r3.json()["error"]["type"] == "rate_limit_error"
        with Tilt(url, max_retries=0) as c, pytest.raises(RateLimitError):
            c.completions.create("<1>", max_tokens=2)
        assert metric(url, "tilt:requests_rejected_total") == rejected + 2
    finally:
        first.__exit__(None, None, None)
    t.join(timeout=60)
    assert second_status == [200]  # the queued request ran once the slot was free
    assert wait_for(lambda: metric(url, "tilt:num_requests_running") == 0)


def test_api_keys(keyed_server, caplog):
    url, key = keyed_server.url, keyed_server.api_key
    body = {"prompt": "<1>", "max_tokens": 2}
    caplog.set_level(logging.DEBUG)
    assert httpx.post(url + "/v1/completions", json=body).status_code == 401
    # checked before the body is read: bad JSON without a key is a 401 too
    assert httpx.post(url + "/v1/completions", content=b"{oops",
                      headers={"content-type": "application/json"}).status_code == 401
    wrong = httpx.post(url + "/v1/completions", json=body,
                       headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/v1/models", headers={"Authorization": key}).status_code == 401
    ok = httpx.post(url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer sk-other"}).status_code == 200
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(url + open_path).status_code == 200
    with Tilt(url, api_key="bad", max_retries=0) as c, pytest.raises(AuthenticationError):
        c.models.list()
    with Tilt(url, api_key=key) as c:
        assert c.completions.create("<1>", max_tokens=2).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
    assert openai.OpenAI(base_url=url + "/v1", api_key=key).models.list().data
    assert all(key not in rec.getMessage() for rec in caplog.records)


def test_metrics_move_as_expected(toy_server):
    url = toy_server.url
    names = ["tilt:requests_total", "tilt:request_success_total", "tilt:prompt_tokens_total",
             "tilt:generation_tokens_total", "tilt:e2e_request_latency_seconds_count",
             "tilt:time_to_first_token_seconds_count", "tilt:request_errors_total",
             "tilt:kl_to_base_nats_count", "tilt:value_model_time_seconds_count",
             "tilt:particle_ess_fraction_count", "tilt:particle_resamples_count",
             "tilt:inter_token_latency_seconds_count"]
    before = {n: metric(url, n) for n in names}
    with Tilt(url) as c:
        a = c.completions.create("<1><2>", max_tokens=4, n=3, seed=1, guidance={"method": "token"})
        b = list(c.completions.create("<3>", max_tokens=4, n=2, seed=2, stream=True))
        s = c.completions.create("<1>", max_tokens=3, n=2, seed=3,
                                 guidance={"method": "smc", "particles": 4})
        with pytest.raises(BadRequestError):
            c.completions.create("<1>", guidance={"beta": 0})
    gen_a = a.usage.completion_tokens
    gen_b = sum(len(ch.choices[0].text) // 3 for ch in b if ch.choices)
    gen_s = s.usage.completion_tokens
    d = {n: metric(url, n) - before[n] for n in names}
    assert d["tilt:requests_total"] == 3
    assert metric(url, "tilt:requests_total", method="smc") >= 1
    assert d["tilt:request_success_total"] == 3 + 2 + 2
    assert d["tilt:prompt_tokens_total"] == 2 + 1 + 1
    assert d["tilt:generation_tokens_total"] == gen_a + gen_b + gen_s
    assert d["tilt:e2e_request_latency_seconds_count"] == 3
    assert d["tilt:time_to_first_token_seconds_count"] == 3
    assert d["tilt:inter_token_latency_seconds_count"] >= 1  # the streamed request
    assert d["tilt:request_errors_total"] == 1
    assert metric(url, "tilt:request_errors_total", status="400") >= 1
    assert d["tilt:kl_to_base_nats_count"] == 3 + 2 + 2
    assert d["tilt:value_model_time_seconds_count"] == 2  # token + smc (exact twist)
    assert d["tilt:particle_ess_fraction_count"] == 2
    assert d["tilt:particle_resamples_count"] == 2
    assert metric(url, "tilt:num_requests_running") == 0
    assert metric(url, "tilt:num_requests_waiting") == 0


def test_unavailable_reward_service_is_502(toy_server):
    with Tilt(toy_server.url, max_retries=0) as c:
        with pytest.raises(UpstreamError) as err:
            c.completions.create("<1>", max_tokens=2, guidance={"method": "importance",
                                                                "reward": "down"})
        assert err.value.status == 502 and err.value.param == "guidance.reward"
        with pytest.raises(UpstreamError):
            c.rewards.score("<1>", ["<2>"], reward="down")
        assert c.completions.create("<1>", max_tokens=2).choices  # still serving


def test_request_time_limit_is_504(long_server):
    limits = long_server.engine_state.config.limits
    old, limits.request_timeout_s = limits.request_timeout_s, 0.2
    try:
        body = {k: v for k, v in LONG.items() if k != "stream"}
        r = httpx.post(long_server.url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
        with httpx.stream("POST", long_server.url + "/v1/completions", json=LONG,
                          timeout=30) as s:
            events = [ln for ln in s.iter_lines() if ln.startswith("data:")]
        assert "timeout_error" in events[-2] and events[-1] == "data: [DONE]"
    finally:
        limits.request_timeout_s = old
    assert wait_for(lambda: metric(long_server.url, "tilt:num_requests_running") == 0)


def test_default_admission_is_the_engine_batch():
    """With max_concurrent_requests unset the server admits as many requests as the engine
    batches (vLLM's max_num_seqs), so admission never leaves the engine idle; a set limit
    wins."""
    from server.config import Limits
    from server.limits import Admission
    from server.metrics import Metrics

    metrics = Metrics("m")
    assert Admission(Limits(), metrics, engine_batch=64).max_concurrent == 64
    assert Admission(Limits(max_concurrent_requests=4), metrics, engine_batch=64).max_concurrent == 4
    assert Admission(Limits(), metrics).max_concurrent == 8  # engines without a batch size
