"""``tilt.all_dead`` and ``tilt.survivors`` of particle methods over HTTP: every particle
survives the toy reward; a hard constraint (a regex reward: 0 or -inf) kills some or all."""

from __future__ import annotations

import httpx
import pytest

from tests.server.live import TOY_MODEL, start_server, toy_config

PARTICLES = 8


@pytest.fixture(scope="module")
def constrained_server():
    """The toy server with two hard constraints over the toy text ("<3><5>..."): ``has3``
    (token 3 somewhere, else -inf) and ``never`` (a pattern that matches nothing)."""
    live = start_server(toy_config(rewards={"toy": "toy:seed=0", "has3": "regex_search:<3>",
                                            "never": "regex:(?!)"}))
    yield live
    live.stop()


def tilts(url: str, method: str, reward: str | None = None, n: int = 1, seed: int = 3) -> list[dict]:
    guidance = {"method": method, "particles": PARTICLES}
    if reward is not None:
        guidance["reward"] = reward
    r = httpx.post(url + "/v1/completions", timeout=60, json={
        "model": TOY_MODEL, "prompt": "<1><2>", "max_tokens": 4, "n": n, "seed": seed,
        "guidance": guidance})
    assert r.status_code == 200, r.text
    return [c["tilt"] for c in r.json()["choices"]]


@pytest.mark.parametrize("method", ["smc", "importance"])
def test_no_constraint_every_particle_survives(toy_server, method):
    for t in tilts(toy_server.url, method, n=2):
        assert t["particles"] == PARTICLES
        assert t["survivors"] == PARTICLES and t["all_dead"] is False


@pytest.mark.parametrize("method", ["none", "token", "best_of_n", "blockwise"])
def test_other_methods_report_null(toy_server, method):
    t = tilts(toy_server.url, method)[0]
    assert "all_dead" in t and t["all_dead"] is None and t["survivors"] is None


def test_importance_hard_constraint_kills_some(constrained_server):
    """Base proposals of 4 tokens of 8 miss token 3 often: across runs some particles die."""
    runs = tilts(constrained_server.url, "importance", reward="has3", n=16)
    survivors = [t["survivors"] for t in runs]
    assert all(0 <= s <= PARTICLES for s in survivors)
    assert min(survivors) < PARTICLES
    for t in runs:
        assert t["all_dead"] is (t["survivors"] == 0)
        assert (t["log_z_hat"] is None) is t["all_dead"]


@pytest.mark.parametrize("method", ["smc", "importance"])
def test_hard_constraint_kills_all(constrained_server, method):
    for t in tilts(constrained_server.url, method, reward="never", n=2):
        assert t["all_dead"] is True and t["survivors"] == 0
        assert t["log_z_hat"] is None and t["kl_to_base"] is None and t["reward"] is None


def test_twisted_smc_spares_the_constrained(constrained_server):
    """The exact value model as twist knows the constraint: no smc particle dies."""
    for t in tilts(constrained_server.url, "smc", reward="has3", n=4):
        assert t["value_model"] == "exact"
        assert t["survivors"] == PARTICLES and t["all_dead"] is False
