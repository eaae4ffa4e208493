"""decoders.generate: dispatch, requirements, binding, streaming, native delegation, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from decoders import blocks
from decoders.exact import ExactValue
from decoders.generate import generate
from decoders.protocols import Guidance, SamplingParams
from decoders.spec import METHODS, GuidanceSpec
from decoders.toy import ToyLM, ToyReward

LM, RW, PROMPT = ToyLM(6, 4, seed=3), ToyReward(5), [1, 2]


def spec(method, **kw):
    base = dict(method=method, n=5, max_tokens=4, seed=123, particles=6, block_size=2, candidates=3)
    base.update(kw)
    return GuidanceSpec(**base)


@pytest.mark.parametrize("method,value,reward,missing", [
    ("token", None, RW, "value model"),
    ("smc", None, None, "reward"),
    ("importance", None, None, "reward"),
    ("best_of_n", None, None, "reward"),
    ("blockwise", ExactValue(LM), None, "reward"),
    ("blockwise", None, RW, "value model"),
])
async def test_missing_requirements_are_clear(method, value, reward, missing):
    with pytest.raises(ValueError, match=f"{method}.*needs a {missing}"):
        await generate(LM, PROMPT, spec(method), value=value, reward=reward)


@pytest.mark.parametrize("method", METHODS)
async def test_every_method_runs_and_is_reproducible(method):
    a = await generate(LM, PROMPT, spec(method), value=ExactValue(LM), reward=RW)
    b = await generate(LM, PROMPT, spec(method), value=ExactValue(LM), reward=RW)
    assert [s.tokens for s in a] == [s.tokens for s in b]
    assert len(a) == 5
    for s in a:
        assert len(s.tokens) <= 4 and all(0 <= t < 5 for t in s.tokens)
        assert s.finished or len(s.tokens) == 4
        assert s.reward == RW.value(PROMPT, s.tokens)  # rewards are always scored when given
        assert s.kl_to_base is None or (math.isfinite(s.kl_to_base) and s.kl_to_base >= -1e-12)
        assert len(s.token_logprobs) == len(s.tokens)
    if method in ("smc", "importance"):
        assert all(s.particle.particles == 6 and math.isfinite(s.particle.log_z_hat) for s in a)


async def test_binding_passes_prompt_max_tokens_and_reward():
    calls = []

    class Bindable:
        def bind(self, prompt_ids, max_tokens, reward=None):
            calls.append((prompt_ids, max_tokens, reward))
            return ExactValue(LM).bind(prompt_ids, max_tokens, reward=reward)

    await generate(LM, PROMPT, spec("token", n=2), value=Bindable(), reward=RW)
    assert calls == [(PROMPT, 4, RW)]


async def test_token_log_weight_is_log_z_with_exact_q():
    """With exact Q, log pi_ref(y) + R/beta - log q(y) = log Z for every y (zero-variance weights)."""
    bound = ExactValue(LM).bind(PROMPT, 4, reward=RW)
    log_z = (await bound.solution(0.5)).log_z
    samples = await generate(LM, PROMPT, spec("token", n=20, beta=0.5), value=bound, reward=RW)
    assert all(abs(s.log_weight - log_z) < 1e-9 for s in samples)
    smc = await generate(LM, PROMPT, spec("smc", n=5, beta=0.5), value=bound, reward=RW)
    assert all(abs(s.particle.log_z_hat - log_z) < 1e-9 and s.particle.resamples == 0 for s in smc)


async def test_streaming_hook_none_and_token():
    for method in ("none", "token"):
        got: dict[int, list[int]] = {}

        async def on_tokens(i, toks, got=got):
            got.setdefault(i, []).extend(toks)

        samples = await generate(LM, PROMPT, spec(method), value=ExactValue(LM), reward=RW, on_tokens=on_tokens)
        assert [got.get(i, []) for i in range(len(samples))] == [s.tokens for s in samples]
    with pytest.raises(ValueError, match="streaming"):
        await generate(LM, PROMPT, spec("smc"), reward=RW, on_tokens=on_tokens)


class NativeLM:
    """Unit-test fake of a BlockSampler engine: native guidance by value-model name."""

    def __init__(self, lm, values):
        self.lm, self.values, self.calls = lm, values, []
        self.vocab_size, self.eos_token_id = lm.vocab_size, lm.eos_token_id

    async def logprobs(self, contexts):
        return await self.lm.logprobs(contexts)

    async def sample_blocks(self, contexts, max_tokens, params, seeds, guidance=None, on_tokens=None):
        self.calls.append((len(contexts), max_tokens, params, guidance))
        value = None if guidance is None else self.values[guidance.value_model]
        g = torch.Generator().manual_seed(seeds[0])
        beta = 1.0 if guidance is None else guidance.beta
        return await blocks.token_loop(self.lm, contexts, max_tokens, g, params, value, beta, on_tokens)


async def test_token_delegates_to_native_guidance_when_value_is_native():
    bound = ExactValue(LM).bind(PROMPT, 4, reward=RW)

    class Native:
        native_name = "pos"

        async def q_values(self, contexts, beta):
            return await bound.q_values(contexts, beta)

    lm = NativeLM(LM, {"pos": bound})
    samples = await generate(lm, PROMPT, spec("token", beta=0.7, temperature=0.9), value=Native(), reward=RW)
    assert lm.calls == [(5, 4, SamplingParams(0.9, 0, 1.0), Guidance("pos", 0.7))]
    assert all(s.reward == RW.value(PROMPT, s.tokens) for s in samples)
    # a non-native value model on the same engine goes through the token loop instead
    lm.calls.clear()
    await generate(lm, PROMPT, spec("token"), value=bound, reward=RW)
    assert lm.calls == []
    await generate(lm, PROMPT, spec("none"), reward=RW)  # base sampling is native too
    assert lm.calls[-1][3] is None


def test_shape_logits_temperature_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64))
    greedy = blocks.step_policy(logits, None, 1.0, SamplingParams(top_k=1))
    assert greedy.exp().tolist() == [[1.0, 0.0, 0.0, 0.0]]
    nucleus = blocks.step_policy(logits, None, 1.0, SamplingParams(top_p=0.75))  # 0.5 + 0.3 >= 0.75
    assert torch.allclose(nucleus.exp(), torch.tensor([[0.625, 0.375, 0.0, 0.0]], dtype=torch.float64))
    hot = blocks.step_policy(logits, None, 1.0, SamplingParams(temperature=2.0))
    expected = torch.softmax(logits / 2.0, dim=-1)
    assert torch.allclose(hot.exp(), expected)
    assert float(blocks.step_kl(hot, logits)[0]) > 0.0
    # all -inf guided row falls back to the base row, never NaN
    dead = torch.full((1, 4), float("-inf"), dtype=torch.float64)
    assert torch.allclose(blocks.step_policy(logits, dead, 1.0).exp(), logits.exp())


async def test_base_kl_is_zero_at_temperature_one_and_positive_when_shaped():
    plain = await generate(LM, PROMPT, spec("none"), reward=RW)
    assert all(abs(s.kl_to_base) < 1e-12 and abs(s.log_weight - s.reward) < 1e-9 for s in plain)
    hot = await generate(LM, PROMPT, spec("none", temperature=0.5), reward=RW)
    assert all(s.kl_to_base > 0 for s in hot)


async def test_smc_batches_all_runs_and_particles_per_step():
    """One lm.logprobs and one q_values call per step for all n x N particles."""

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, []
            self.vocab_size, self.eos_token_id = inner.vocab_size, inner.eos_token_id

        async def logprobs(self, contexts):
            self.calls.append(len(contexts))
            return await self.inner.logprobs(contexts)

    lm = Counting(LM)
    bound = ExactValue(LM).bind(PROMPT, 4, reward=RW)
    q_calls = []

    class CountingValue:
        async def q_values(self, contexts, beta):
            q_calls.append(len(contexts))
            return await bound.q_values(contexts, beta)

    await generate(lm, PROMPT, spec("smc", n=10, particles=8), value=CountingValue(), reward=RW)
    assert len(lm.calls) <= 4 and lm.calls[0] == 80 and q_calls == lm.calls


async def test_blockwise_sample_selection_and_block_sizes():
    for block_size in (1, 3):
        samples = await generate(LM, PROMPT, spec("blockwise", block_size=block_size, block_select="sample"),
                                 value=ExactValue(LM), reward=RW)
        for s in samples:
            assert s.reward == RW.value(PROMPT, s.tokens) and len(s.tokens) <= 4
            assert s.kl_to_base <= math.ceil(5 / block_size) * math.log(3) + 1e-12
