"""Guided requests over HTTP sample the same distribution as the sampler called directly.

1. Same seed -> the very same samples as ``decoders.generate`` on the same toy model, value
   model and reward (token, smc, importance, best_of_n, blockwise).
2. Statistical: 3,000 HTTP samples of ``token`` guidance (beta = 0.5) against the exact
   tilted target pi* of the toy model (by enumeration): chi-square goodness of fit of the
   first-token (8 cells) and length (5 cells) marginals at alpha = 0.001. Power: against a
   deviation of Cohen's w = 0.1 the tests reject with probability 0.87 (first token, df 7)
   and 0.93 (length, df 4); seeds are fixed, so the test is deterministic.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from scipy.stats import chisquare

from decoders.exact import ExactValue, exact_solution, marginal
from decoders.generate import generate
from decoders.spec import GuidanceSpec
from decoders.toy import ToyLM, ToyReward

PROMPT = [1, 2]


def http_samples(url: str, body: dict) -> list[list[int]]:
    r = httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "return_token_ids": True,
                                                  **body}, timeout=120)
    assert r.status_code == 200, r.text
    return [c["token_ids"] for c in r.json()["choices"]]


def direct_samples(spec: GuidanceSpec) -> list[list[int]]:
    lm, reward = ToyLM(8, 4, 0), ToyReward(0)
    out = asyncio.run(generate(lm, PROMPT, spec, value=ExactValue(lm), reward=reward))
    return [s.tokens for s in out]


@pytest.mark.parametrize("method", ["token", "smc", "importance", "best_of_n", "blockwise"])
def test_same_seed_same_samples_as_the_sampler(toy_server, method):
    guidance = {"method": method, "beta": 0.5, "particles": 6, "block_size": 2, "candidates": 3}
    for seed in (0, 1, 2):
        over_http = http_samples(toy_server.url, {"n": 4, "max_tokens": 4, "seed": seed,
                                                  "guidance": guidance})
        spec = GuidanceSpec(method=method, n=4, max_tokens=4, seed=seed, beta=0.5, particles=6,
                            block_size=2, candidates=3)
        assert over_http == direct_samples(spec)


def test_token_guidance_over_http_matches_exact_target(toy_server):
    beta, per_request, requests = 0.5, 500, 6
    samples: list[list[int]] = []
    for seed in range(requests):
        samples += http_samples(toy_server.url, {
            "n": per_request, "max_tokens": 4, "seed": 1000 + seed,
            "guidance": {"method": "token", "beta": beta}})
    sol = asyncio.run(exact_solution(ToyLM(8, 4, 0), ToyReward(0), PROMPT, 4, beta))
    tree = sol.tree
    eos = tree.eos
    for keys, stat in ((tree.first_tokens(), lambda y: y[0] if y else eos),
                       (tree.lengths(), len)):
        probs = marginal(sol.log_p_star, keys)
        cells = sorted(probs)
        observed = torch.tensor([sum(stat(y) == c for y in samples) for c in cells],
                                dtype=torch.float64)
        expected = torch.tensor([probs[c] for c in cells], dtype=torch.float64) * len(samples)
        assert observed.sum() == len(samples)
        p_value = chisquare(observed.numpy(), expected.numpy()).pvalue
        assert p_value > 1e-3, (cells, observed.tolist(), expected.tolist())
