"""Every endpoint through the SDK (sync, async, streaming) and the official openai package,
against the real toy-engine server on a loopback port."""

from __future__ import annotations

import httpx
import openai
import pytest
from tilt_client import AsyncTilt, Guidance, RewardTerm, Tilt

from tests.server.live import TOY_MODEL

PROMPT = "<1><2>"


@pytest.fixture(scope="module")
def client(toy_server):
    with Tilt(toy_server.url) as c:
        yield c


def test_health_ready_models(client, toy_server):
    assert client.health() and client.ready()
    models = client.models.list()
    assert [m.id for m in models.of_kind("base_model")] == [TOY_MODEL]
    assert [m.id for m in models.of_kind("value_model")] == ["exact"]
    assert sorted(m.id for m in models.of_kind("reward")) == ["down", "toy", "toy1"]
    base = models.of_kind("base_model")[0]
    assert base.metadata["vocab_size"] == 8 and base.metadata["defaults"]["reward"] == "toy"
    assert "tilt:num_requests_running" in client.metrics()


def test_completion_sync_guided(client):
    out = client.completions.create(PROMPT, max_tokens=4, n=3, seed=7,
                                    guidance=Guidance(method="token"), return_token_ids=True)
    assert out.model == TOY_MODEL and len(out.choices) == 3
    for c in out.choices:
        assert c.tilt.method == "token" and c.tilt.value_model == "exact"
        assert c.tilt.reward_name == "toy" and c.tilt.reward is not None
        assert c.tilt.kl_to_base is not None and c.tilt.beta == 1.0
        assert c.text == "".join(f"<{t}>" for t in c.token_ids)
        assert c.prompt_token_ids == [1, 2]
        assert c.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens == 2
    assert out.usage.completion_tokens == sum(len(c.token_ids) for c in out.choices)


@pytest.mark.parametrize("method", ["smc", "importance", "best_of_n", "blockwise"])
def test_particle_methods_report_diagnostics(client, method):
    out = client.completions.create(PROMPT, max_tokens=4, seed=3,
                                    guidance={"method": method, "particles": 8, "block_size": 2,
                                              "candidates": 3})
    tilt = out.choices[0].tilt
    assert tilt.method == method and tilt.reward is not None
    if method in ("smc", "importance"):
        assert tilt.particles == 8 and tilt.ess is not None and tilt.log_z_hat is not None
        assert tilt.resamples is not None
        assert tilt.survivors == 8 and tilt.all_dead is False
    else:
        assert tilt.survivors is None and tilt.all_dead is None


def test_weighted_rewards_and_logprobs(client):
    out = client.completions.create(
        [1, 2], max_tokens=3, seed=1, logprobs=8,
        guidance=Guidance(method="importance", rewards=[RewardTerm(name="toy", weight=0.5),
                                                        RewardTerm(name="toy1", weight=2.0)]))
    c = out.choices[0]
    assert c.tilt.reward_name == "0.5*toy + 2*toy1"
    assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs)
    assert all(len(top) == 8 for top in c.logprobs.top_logprobs)  # the full vocabulary


def test_completion_stream_matches_non_stream(client):
    kw = dict(max_tokens=4, n=2, seed=11, guidance=Guidance(method="token", beta=0.5),
              return_token_ids=True)
    full = client.completions.create(PROMPT, **kw)
    texts, ids, reasons, tilts = ["", ""], [[], []], [None, None], [None, None]
    chunks = list(client.completions.create(PROMPT, stream=True, include_usage=True, **kw))
    assert len(chunks) > 2
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] += c.text
            ids[c.index] += c.token_ids
            reasons[c.index] = c.finish_reason or reasons[c.index]
            tilts[c.index] = c.tilt or tilts[c.index]
    assert chunks[-1].usage.completion_tokens == sum(len(i) for i in ids)
    # the engine's work, not only what is returned, as in the non-streamed body
    assert chunks[-1].usage.generated_tokens == full.usage.generated_tokens > 0
    for i, c in enumerate(full.choices):
        assert (texts[i], ids[i], reasons[i]) == (c.text, c.token_ids, c.finish_reason)
        assert tilts[i].reward == pytest.approx(c.tilt.reward)


def test_chat_sync_and_stream(client):
    msgs = [{"role": "system", "content": "<3>"}, {"role": "user", "content": "<1>"}]
    full = client.chat.completions.create(msgs, max_completion_tokens=4, seed=5,
                                          guidance=Guidance(method="token"), logprobs=True,
                                          top_logprobs=2)
    c = full.choices[0]
    assert c.message.role == "assistant" and c.tilt.method == "token"
    assert len(c.logprobs.content) == len(c.message.content) // 3
    chunks = list(client.chat.completions.create(msgs, max_completion_tokens=4, seed=5,
                                                 guidance=Guidance(method="token"), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == c.message.content


def test_rewards_score(client):
    out = client.rewards.score(PROMPT, ["<1>", "<3><4>"], reward="toy")
    from decoders.toy import ToyReward

    r = ToyReward(0)
    assert out.scores == pytest.approx([r.value([1, 2], [1]), r.value([1, 2], [3, 4])])
    assert client.rewards.score([1, 2], [[1], [3, 4]]).scores == out.scores


async def test_async_client(toy_server):
    async with AsyncTilt(toy_server.url) as c:
        assert await c.health() and await c.ready()
        assert len((await c.models.list()).data) == 5
        full = await c.completions.create(PROMPT, max_tokens=4, seed=2,
                                          guidance={"method": "token"})
        stream = await c.completions.create(PROMPT, max_tokens=4, seed=2,
                                            guidance={"method": "token"}, stream=True)
        text = "".join([ch.choices[0].text async for ch in stream if ch.choices])
        assert text == full.choices[0].text
        chat = await c.chat.completions.create([{"role": "user", "content": "<2>"}], seed=1)
        assert chat.choices[0].message.content is not None
        chat_stream = await c.chat.completions.create([{"role": "user", "content": "<2>"}],
                                                      seed=1, stream=True)
        chunks = [ch async for ch in chat_stream]
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == \
            chat.choices[0].message.content
        scores = await c.rewards.score(PROMPT, ["<1>"])
        assert len(scores.scores) == 1


def test_openai_package(toy_server):
    oa = openai.OpenAI(base_url=toy_server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in oa.models.list()][0] == TOY_MODEL
    guided = {"guidance": {"method": "token", "beta": 0.5}}
    out = oa.completions.create(model=TOY_MODEL, prompt=PROMPT, max_tokens=4, seed=4, n=2,
                                extra_body=guided)
    assert len(out.choices) == 2 and out.choices[0].model_extra["tilt"]["method"] == "token"
    streamed = oa.completions.create(model=TOY_MODEL, prompt=PROMPT, max_tokens=4, seed=4, n=2,
                                     stream=True, extra_body=guided)
    texts = ["", ""]
    for ch in streamed:
        for c in ch.choices:
            texts[c.index] += c.text
    assert texts == [c.text for c in out.choices]
    chat = oa.chat.completions.create(model=TOY_MODEL, messages=[{"role": "user", "content": "<1>"}],
                                      max_tokens=3, seed=1, logprobs=True, top_logprobs=3,
                                      extra_body=guided)
    assert chat.choices[0].logprobs.content[0].top_logprobs
    chunks = list(oa.chat.completions.create(
        model=TOY_MODEL, messages=[{"role": "user", "content": "<1>"}], max_tokens=3, seed=1,
        stream=True, stream_options={"include_usage": True}, extra_body=guided))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        chat.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    with pytest.raises(openai.BadRequestError) as err:
        oa.completions.create(model=TOY_MODEL, prompt=PROMPT, extra_body={"guidance": {"beta": -1}})
    assert err.value.body["param"] == "guidance.beta"
    with pytest.raises(openai.NotFoundError):
        oa.completions.create(model="no-such-model", prompt=PROMPT)


def test_raw_sse_ends_with_done(toy_server):
    with httpx.stream("POST", toy_server.url + "/v1/completions",
                      json={"prompt": PROMPT, "stream": True, "seed": 0}) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]"


def test_stop_strings_cut_text_streamed_and_not(client):
    kw = dict(max_tokens=4, n=16, seed=21, return_token_ids=True)
    free = client.completions.create(PROMPT, **kw)
    cut = client.completions.create(PROMPT, stop=["<3>", "<5><"], **kw)
    streamed = {i: ["", [], None] for i in range(16)}
    for ch in client.completions.create(PROMPT, stop=["<3>", "<5><"], stream=True, **kw):
        for c in ch.choices:
            streamed[c.index][0] += c.text
            streamed[c.index][1] += c.token_ids
            streamed[c.index][2] = c.finish_reason or streamed[c.index][2]
    hits = 0
    for f, c in zip(free.choices, cut.choices, strict=True):
        stops = [i for i in (f.text.find("<3>"), f.text.find("<5><")) if i >= 0]
        if stops:
            hits += 1
            assert c.text == f.text[:min(stops)] and c.finish_reason == "stop"
            assert f.token_ids[:len(c.token_ids)] == c.token_ids
        else:
            assert (c.text, c.finish_reason) == (f.text, f.finish_reason)
        assert streamed[c.index] == [c.text, c.token_ids, c.finish_reason]
    assert 0 < hits < 16


def test_streamed_logprobs_come_with_the_final_chunk(client):
    full = client.completions.create(PROMPT, max_tokens=4, seed=8, logprobs=3)
    chunks = list(client.completions.create(PROMPT, max_tokens=4, seed=8, logprobs=3,
                                            stream=True))
    last = [c for ch in chunks for c in ch.choices if c.finish_reason][0]
    assert last.logprobs.token_logprobs == full.choices[0].logprobs.token_logprobs
    assert last.logprobs.top_logprobs == full.choices[0].logprobs.top_logprobs
