"""End to end: a Tilt server (toy engine, real uvicorn on loopback) configured with an HTTP
reward whose service is down answers HTTP 502 with an OpenAI error body, quickly (no hang),
both for POST /v1/rewards/score and for a guided generation that needs the reward."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.rewards.helpers import free_port


@pytest.fixture(scope="module")
def server_with_down_reward():
    from tests.server.live import start_server, toy_config

    dead = f"http://127.0.0.1:{free_port()}/score#timeout=1,retries=1,backoff=0.05"
    live = start_server(toy_config(rewards={"down": dead, "vader": "vader"},
                                   defaults={"reward": "down", "value_model": "exact"}))
    yield live
    live.stop()


def test_rewards_score_502(server_with_down_reward):
    url = server_with_down_reward.url
    t0 = time.monotonic()
    resp = httpx.post(f"{url}/v1/rewards/score", timeout=30,
                      json={"reward": "down", "prompt": "<1>", "completions": ["<2>", "<3>"]})
    elapsed = time.monotonic() - t0
    assert resp.status_code == 502, resp.text
    err = resp.json()["error"]
    assert "reward service" in err["message"] and err["type"] == "upstream_error"
    assert elapsed < 5.0, elapsed
    ok = httpx.post(f"{url}/v1/rewards/score", timeout=30,
                    json={"reward": "vader", "prompt": "hi", "completions": ["great!", "awful"]})
    assert ok.status_code == 200 and ok.json()["scores"][0] > 0 > ok.json()["scores"][1]


def test_guided_generation_502(server_with_down_reward):
    url = server_with_down_reward.url
    t0 = time.monotonic()
    resp = httpx.post(f"{url}/v1/completions", timeout=30, json={
        "prompt": "<1>", "max_tokens": 3, "guidance": {"method": "best_of_n", "particles": 4}})
    assert resp.status_code == 502, resp.text
    assert time.monotonic() - t0 < 5.0
