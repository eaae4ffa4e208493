"""Pieces of ``tilt bench quality`` (tilt.benchmarks.quality) on the toy server: one method over
every prompt (each prompt once, its seed fixed, every choice's reward collected per prompt,
token's kl_to_base and beta read back), and the command's bad input (exit 2 before starting
anything). The full benchmark on SmolLM2 is a command (README), not a test."""

from __future__ import annotations

import asyncio

import pytest

from tests.server.live import start_server, toy_config
from tilt.benchmarks.quality import _method


@pytest.fixture(scope="module")
def bench_toy():
    live = start_server(toy_config(served_model_name="bench"))
    yield live
    live.stop()


def test_each_method_scores_every_prompt_once(bench_toy):
    prompts = ["<1>", "<2>", "<3>", "<1><2>", "<4>"]
    rows = {}
    for name, g in {"none": {"method": "none", "reward": "toy"},
                    "token": {"method": "token", "reward": "toy"},
                    "best_of_n": {"method": "best_of_n", "particles": 4, "reward": "toy"}}.items():
        rows[name] = asyncio.run(_method(bench_toy.url, prompts, 3, 2, 0, g, clients=2))
        assert rows[name]["errors"] == 0 and rows[name]["prompts"] == len(prompts)
        assert rows[name]["se"] > 0
    assert rows["token"]["beta"] == [1.0] and rows["token"]["kl_to_base"] is not None
    again = asyncio.run(_method(bench_toy.url, prompts, 3, 2, 0,
                                {"method": "token", "reward": "toy"}, clients=3))
    assert again["mean_reward"] == rows["token"]["mean_reward"]  # seeds fixed per prompt


@pytest.mark.parametrize("args, message", [
    (["--prompts", "/no/such/file"], "prompt file not found"),
    (["--n", "0"], ""), (["--best-of", "1"], ""), (["--beta", "0"], ""),
])
def test_bad_options_exit_2_before_starting_anything(tmp_path, args, message):
    from typer.testing import CliRunner

    from tilt.cli import app

    result = CliRunner().invoke(app, ["bench", "quality", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    result = CliRunner().invoke(app, ["bench", "quality", "--prompts", str(empty)])
    assert result.exit_code == 2 and "no prompts" in result.output
