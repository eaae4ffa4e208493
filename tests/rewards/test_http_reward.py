"""The HTTP reward client against a real uvicorn reward server on loopback, including the
down-service cases: each failure is a RewardServiceError, raised within a stated time bound."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from rewards.errors import RewardServiceError
from rewards.http_client import HTTPReward
from rewards.loader import load_reward
from rewards.vader import VaderReward
from tests.rewards.helpers import free_port

TEXTS = ["I love this, it is wonderful!", "This is terrible and sad.", "The box is brown."]


async def test_reference_server_matches_local_vader(reward_server, toy_codec):
    base, _ = reward_server
    remote = load_reward(f"http:{base}/score", codec=toy_codec)
    assert await remote.score_text("p", TEXTS) == await VaderReward().score_text("p", TEXTS)
    bare = load_reward(f"{base}/score#timeout=5,retries=0,batch_size=2")
    assert isinstance(bare, HTTPReward) and bare.batch_size == 2 and bare.retries == 0
    assert await bare.score_text("p", TEXTS) == await remote.score_text("p", TEXTS)
    out = await remote.score([1], [[2, 3], [4]])  # token level through the codec
    assert out.shape == (2,)
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{base}/health")).json() == {"status": "ok", "reward": "vader"}
        assert (await c.post(f"{base}/score", json={"completions": 3})).status_code == 422
    await remote.aclose()
    await bare.aclose()


async def test_batching_splits_requests(reward_server):
    base, state = reward_server
    state["batches"] = []
    r = HTTPReward(f"{base}/count", batch_size=3)
    texts = [f"x{'y' * i}" for i in range(8)]
    assert await r.score_text("", texts) == [float(len(t)) for t in texts]  # order kept
    assert sorted(state["batches"]) == [2, 3, 3]
    assert await r.score_text("", []) == []
    await r.aclose()


async def test_retries_then_succeeds_and_null_is_neg_inf(reward_server):
    base, state = reward_server
    state["flaky"] = 0
    r = HTTPReward(f"{base}/flaky", retries=2, backoff=0.01)
    assert await r.score_text("", ["fine", "bad"]) == [0.5, -math.inf]
    assert state["flaky"] == 3  # two 503s, then success
    await r.aclose()


async def test_connection_refused_fails_fast():
    r = load_reward(f"http://127.0.0.1:{free_port()}/score#retries=2,backoff=0.05,timeout=2")
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError) as info:
        await r.score_text("", ["hello"])
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed  # 3 refused connects + 0.15 s of backoff
    assert info.value.attempts == 3 and "ConnectError" in str(info.value)
    await r.aclose()


async def test_timeout_fails_within_bound(reward_server):
    base, _ = reward_server
    r = HTTPReward(f"{base}/slow", timeout=0.3, retries=1, backoff=0.05)
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError, match="timed out"):
        await r.score_text("", ["hello"])
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5, elapsed  # bound: (retries+1)*timeout + backoff = 0.65 s
    await r.aclose()


@pytest.mark.parametrize("route,match", [
    ("garbage", "not JSON"), ("short", "got 1 scores for 2"), ("nan", "not a number"),
    ("bad_request", "HTTP 400"), ("error500", "HTTP 500"), ("missing", "HTTP 404"),
])
async def test_garbage_answers_are_reward_service_errors(reward_server, route, match):
    base, _ = reward_server
    r = HTTPReward(f"{base}/{route}", retries=1, backoff=0.01, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError, match=match):
        await r.score_text("", ["a", "b"])
    assert time.monotonic() - t0 < 2.0
    await r.aclose()


def test_bad_http_specs():
    with pytest.raises(ValueError, match="http:// or https://"):
        load_reward("http:ftp://example.org")
    with pytest.raises(ValueError, match="unknown option"):
        load_reward("http://127.0.0.1:1/score#speed=9")
    with pytest.raises(ValueError, match="must be a number"):
        load_reward("http://127.0.0.1:1/score#timeout=soon")
    with pytest.raises(ValueError, match="timeout > 0"):
        load_reward("http://127.0.0.1:1/score#timeout=0")


def test_wire_format_null_is_neg_inf():
    from rewards.http_client import parse_scores
    from rewards.http_server import to_wire

    assert to_wire([0.5, -math.inf]) == [0.5, None]
    assert parse_scores({"scores": [0.5, None]}, 2, "u", 1) == [0.5, -math.inf]
    for bad in ({"scores": [True, 1]}, {"scores": [float("inf"), 1]}, {"score": [1, 2]}, [1, 2]):
        with pytest.raises(RewardServiceError):
            parse_scores(bad, 2, "u", 1)


async def test_retry_policy_backs_off_exponentially_and_only_on_retryable():
    from rewards.http_client import _Retryable, retry_policy

    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    calls = []

    async def flaky(exc: Exception) -> None:
        calls.append(exc)
        raise exc

    policy = retry_policy(retries=3, backoff=0.5).copy(sleep=record)
    with pytest.raises(_Retryable):
        await policy(flaky, _Retryable("down"))
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]  # backoff · 2^i before retry i
    calls.clear()
    with pytest.raises(ValueError):  # anything else: one attempt, re-raised as it is
        await retry_policy(retries=3, backoff=0.5).copy(sleep=record)(flaky, ValueError("no"))
    assert len(calls) == 1
