"""The reference engine: exact log-probs (vs a plain transformers forward), KV cache,
native guided blocks, codec, rejections."""

from __future__ import annotations

import math

import pytest
import torch

from decoders.protocols import Guidance, SamplingParams
from engines.loader import open_engine
from engines.value_model import ValueModelError


def _hf_logprobs(model_dir, contexts):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.stack([torch.log_softmax(m(torch.tensor([c])).logits[0, -1].double(), -1)
                            for c in contexts])


async def test_logprobs_exact_and_cached(transformers_demo_engine, engine_models):
    h = transformers_demo_engine
    ids = h.codec.encode("The quick brown fox")
    contexts = [ids, ids[:2], ids + [h.codec.encode(" jumps")[-1]]]
    ref = _hf_logprobs(engine_models.base, contexts)
    got = await h.lm.logprobs(contexts)  # the third context extends the first via the cache
    assert got.dtype == torch.float64 and got.shape == (3, h.lm.vocab_size)
    assert (got - ref).abs().max() < 1e-4
    longer = [c + [7] for c in contexts]  # every context extends a cached parent
    assert (await h.lm.logprobs(longer) - _hf_logprobs(engine_models.base, longer)).abs().max() < 1e-4


async def test_guided_blocks_report_consistent_logprobs(transformers_demo_engine, engine_models):
    h = transformers_demo_engine
    ids = h.codec.encode("It was the best")
    g = Guidance(engine_models.vm_name, 0.5)
    streamed: dict[int, list[int]] = {0: [], 1: []}

    async def on_tokens(i, toks):
        streamed[i].extend(toks)

    blocks = await h.lm.sample_blocks([ids, ids], 4, SamplingParams(), [1, 2], g, on_tokens)
    guided = await h.lm.guided_logprobs([ids], g)
    base = await h.lm.logprobs([ids])
    for i, b in enumerate(blocks):
        assert streamed[i] == b.tokens
        first = b.tokens[0] if b.tokens else h.lm.eos_token_id
        lp = b.proposal_logprobs[0] if b.tokens else b.eos_proposal_logprob
        bl = b.base_logprobs[0] if b.tokens else b.eos_base_logprob
        assert math.isclose(lp, guided[0, first].item(), abs_tol=1e-6)
        assert math.isclose(bl, base[0, first].item(), abs_tol=1e-6)


async def test_protocols(transformers_demo_engine, engine_models):
    from decoders.protocols import BlockSampler, LanguageModel, ValueModel
    from engines.base import EngineHandle, TextCodec

    h = transformers_demo_engine
    assert isinstance(h, EngineHandle) and isinstance(h.codec, TextCodec)
    assert isinstance(h.lm, LanguageModel) and isinstance(h.lm, BlockSampler)
    assert isinstance(h.value_models[engine_models.vm_name], ValueModel)
    assert h.metadata()["engine"] == "transformers"


async def test_codec(transformers_demo_engine):
    c = transformers_demo_engine.codec
    assert c.decode(c.encode("The sun rises")).strip() == "The sun rises"
    ids = c.apply_chat_template([{"role": "user", "content": "hello"}])
    assert ids and all(isinstance(i, int) for i in ids)


async def test_rejections(transformers_demo_engine, engine_models):
    lm = transformers_demo_engine.lm
    ids = transformers_demo_engine.codec.encode("Hello")
    with pytest.raises(ValueError, match="unknown value model 'nope'"):
        await lm.sample_blocks([ids], 2, SamplingParams(), [0], Guidance("nope", 1.0))
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="beta must be"):
            await lm.sample_blocks([ids], 2, SamplingParams(), [0],
                                   Guidance(engine_models.vm_name, beta))
    with pytest.raises(ValueModelError, match="different tokenizer"):
        await open_engine(str(engine_models.base), engine="transformers",
                          value_models={"other": str(engine_models.other_vm)})
    with pytest.raises(ValueError, match="not found"):
        await open_engine("/no/such/model", engine="transformers")
    with pytest.raises(ValueError, match="unknown engine"):
        await open_engine(str(engine_models.base), engine="tgi")


async def test_cancellation_stops_the_loop(transformers_demo_engine, engine_models):
    import asyncio

    h = transformers_demo_engine
    ids = h.codec.encode("A journey")
    seen = asyncio.Event()

    async def on_tokens(i, toks):
        seen.set()

    task = asyncio.create_task(h.lm.sample_blocks([ids] * 2, 300, SamplingParams(), [0, 1],
                                                  None, on_tokens))
    await asyncio.wait_for(seen.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert h.num_running() == 0
