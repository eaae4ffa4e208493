"""Cheap checks of the throughput benchmark (tilt.benchmarks.throughput; the full run is
`tilt bench throughput`)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from engines.hf_codec import count_parameters
from engines.value_model import TorchValueModel, check_value_model
from tilt.benchmarks.throughput import build_bench_value_model, llama_parameters


def test_bench_value_model_is_at_most_a_quarter(tmp_path, engine_models):
    base = engine_models.base
    vm_dir = build_bench_value_model(base, tmp_path / "vm", fraction=0.25)
    check_value_model(vm_dir, base)
    m, big_m = count_parameters(vm_dir), count_parameters(base)
    assert m <= 0.25 * big_m
    cfg = json.loads((vm_dir / "config.json").read_text())
    assert m == llama_parameters(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"],
                                 cfg["intermediate_size"])
    assert TorchValueModel(vm_dir, base).num_parameters == m


def test_cli_rejects_unknown_engine():
    from tilt.cli import app

    result = CliRunner().invoke(app, ["bench", "throughput", "--engine", "tgi", "--json"])
    assert result.exit_code == 2
    assert "unknown engine" in result.output
