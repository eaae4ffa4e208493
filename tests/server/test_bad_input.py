"""Bad input gets a 4xx in OpenAI's error JSON naming the parameter; the server keeps serving."""

from __future__ import annotations

import httpx
import pytest
from tilt_client import BadRequestError, NotFoundError, Tilt

P = "<1><2>"
CASES = [
    # (endpoint, body, status, param)
    ("completions", {"prompt": P, "guidance": {"method": "token", "beta": 0}}, 400, "guidance.beta"),
    ("completions", {"prompt": P, "guidance": {"beta": -2.5}}, 400, "guidance.beta"),
    ("completions", {"prompt": P, "guidance": {"method": "magic"}}, 400, "guidance.method"),
    ("completions", {"prompt": P, "guidance": {"method": "token", "value_model": "nope"}}, 400,
     "guidance.value_model"),
    ("completions", {"prompt": P, "guidance": {"method": "smc", "reward": "nope"}}, 400,
     "guidance.reward"),
    ("completions", {"prompt": P, "guidance": {"method": "smc", "rewards": [
        {"name": "toy"}, {"name": "nope", "weight": 2}]}}, 400, "guidance.rewards.1.name"),
    ("completions", {"prompt": P, "max_tokens": -1}, 400, "max_tokens"),
    ("completions", {"prompt": P, "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"prompt": P, "max_tokens": 10**9}, 400, "max_tokens"),
    ("completions", {"prompt": P, "guidance": {"method": "smc", "particles": 100000}}, 400,
     "guidance.particles"),
    ("completions", {"prompt": P, "n": 100000}, 400, "n"),
    ("completions", {"prompt": "<1>" * 17}, 400, "prompt"),
    ("completions", {"prompt": list(range(7)) * 3}, 400, "prompt"),
    ("completions", {"prompt": [1, 99]}, 400, "prompt"),
    ("completions", {"prompt": "not toy text"}, 400, "prompt"),
    ("completions", {"prompt": ""}, 400, "prompt"),
    ("completions", {"prompt": []}, 400, "prompt"),
    ("completions", {"prompt": P, "logprobs": 9}, 400, "logprobs"),
    ("completions", {"prompt": P, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("completions", {"prompt": P, "n": "three"}, 400, "n"),
    ("completions", {"prompt": P, "temperature": "hot"}, 400, "temperature"),
    ("completions", {"prompt": 5}, 400, "prompt"),
    ("completions", {"prompt": P, "guidance": {"particles": 2.5}}, 400, "guidance.particles"),
    ("completions", {"prompt": P, "guidance": {"method": "smc", "resample_every": 0}}, 400,
     "guidance.resample_every"),
    ("completions", {"prompt": P, "guidance": {"resample_every": "often"}}, 400,
     "guidance.resample_every"),
    ("completions", {"prompt": P, "temperature": 2.5}, 400, "temperature"),
    ("completions", {"prompt": P, "guidance": "token"}, 400, "guidance"),
    ("completions", {"prompt": P, "frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ("completions", {"prompt": P, "min_p": 0.1}, 400, "min_p"),  # needs vLLM's sampler
    ("completions", {"prompt": P, "ignore_eos": True}, 400, "ignore_eos"),
    ("completions", {"prompt": P, "logit_bias": {"x": 1}}, 400, "logit_bias"),
    ("completions", {"prompt": P, "max_tokens": 2, "min_tokens": 3}, 400, "min_tokens"),
    ("completions", {"prompt": [P, "not toy text"]}, 400, "prompt.1"),
    ("completions", {"prompt": P, "guidance": {"method": "token", "temperatur": 1}}, 400,
     "guidance.temperatur"),
    ("completions", {}, 400, "prompt"),
    ("completions", {"prompt": P, "model": "gpt-9"}, 404, "model"),
    ("chat/completions", {"messages": []}, 400, "messages"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "<1>"}]}, 400,
     "messages.0.role"),
    ("chat/completions", {"messages": [{"role": "user", "content": "<1>"}], "top_logprobs": 2},
     400, "top_logprobs"),
    ("chat/completions", {"messages": [{"role": "user", "content": "<1>"}],
                          "max_completion_tokens": -3}, 400, "max_completion_tokens"),
    ("rewards/score", {"prompt": P, "completions": ["<1>"], "reward": "nope"}, 400, "reward"),
    ("rewards/score", {"prompt": P, "completions": []}, 400, "completions"),
]


@pytest.mark.parametrize("endpoint,body,status,param", CASES,
                         ids=[f"{e}:{p}:{i}" for i, (e, _, _, p) in enumerate(CASES)])
def test_bad_input_names_the_parameter(toy_server, endpoint, body, status, param):
    r = httpx.post(f"{toy_server.url}/v1/{endpoint}", json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    assert err["message"] and err["type"] in ("invalid_request_error", "not_found_error")


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'{"prompt": "<1>",}'])
def test_malformed_json(toy_server, raw):
    r = httpx.post(f"{toy_server.url}/v1/completions", content=raw, timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_sdk_raises_typed_errors_and_server_keeps_serving(toy_server):
    with Tilt(toy_server.url, max_retries=0) as c:
        with pytest.raises(BadRequestError) as err:
            c.completions.create(P, guidance={"method": "token", "beta": 0})
        assert err.value.param == "guidance.beta" and err.value.status == 400
        with pytest.raises(NotFoundError):
            c.completions.create(P, model="other")
        out = c.completions.create(P, max_tokens=2, guidance={"method": "token"})
        assert out.choices[0].tilt.method == "token"
    assert httpx.get(toy_server.url + "/health").json() == {"status": "ok"}


def test_unknown_route_is_openai_json(toy_server):
    r = httpx.get(toy_server.url + "/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
