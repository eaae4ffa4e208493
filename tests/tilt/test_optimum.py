"""``tilt bench optimum`` (tilt.benchmarks.optimum): the self-normalised frontier and the
order-statistics best-of-n on known rewards; bad input exits 2 before any engine starts."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from tilt.benchmarks.optimum import best_of_n, frontier, optimum_report
from tilt.cli import app


def test_frontier_on_two_rewards_matches_the_closed_form():
    rewards = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    beta = 0.5
    w1 = math.exp(1 / beta) / (1 + math.exp(1 / beta))           # pi*(y = 1)
    log_z = math.log((1 + math.exp(1 / beta)) / 2)
    f = frontier(rewards, beta)
    assert f["mean_reward"] == pytest.approx(w1)
    assert f["kl_to_base"] == pytest.approx(w1 / beta - log_z)   # KL(pi* || uniform)
    assert f["min_ess"] == pytest.approx(1 / (w1 ** 2 + (1 - w1) ** 2))


def test_best_of_n_is_the_mean_for_one_and_the_max_in_the_limit():
    rewards = torch.arange(10, dtype=torch.float64).reshape(1, 10)
    assert best_of_n(rewards, 1) == pytest.approx(4.5)
    assert best_of_n(rewards, 2) == pytest.approx(sum(max(i, j) for i in range(10) for j in range(10)) / 100)
    assert best_of_n(rewards, 10_000) == pytest.approx(9.0)


def test_report_records_the_bound_and_every_beta():
    rep = optimum_report(torch.zeros(2, 8, dtype=torch.float64), seed=1, max_tokens=3, betas=(0.1, 1.0))
    assert rep["samples_per_prompt"] == 8 and rep["best_of_8_kl_bound"] == pytest.approx(math.log(8) - 7 / 8)
    assert [f["beta"] for f in rep["frontier"]] == [0.1, 1.0]


@pytest.mark.parametrize("args, message", [
    (["--n", "4"], "--n must be >= 8"),
    (["--prompts", "no/such.txt"], "prompt file not found"),
])
def test_bad_input_exits_2(args, message, tmp_path):
    out = CliRunner().invoke(app, ["bench", "optimum", *args, "--out", str(tmp_path / "o.json")])
    assert out.exit_code == 2 and message in out.stderr
    assert not (tmp_path / "o.json").exists()
