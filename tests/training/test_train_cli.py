"""`tilt train` / `tilt eval` command lines: clear exit-2 errors, DDP launch, eval outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tilt.cli import app

REPO = Path(__file__).resolve().parents[2]
TOY = ["--model", "toy:vocab=4,len=3,seed=0", "--engine", "toy", "--prompt", "<0>",
       "--max-tokens", "3", "--quiet"]


def run(args):
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("args, message", [
    (["--reward", "no-such-reward"], "cannot load reward"),
    (["--reward", "toy:seed=0", "--model", "/no/such/model", "--engine", "transformers"],
     "cannot load model"),
    (["--reward", "toy:seed=0", "--objective", "nope"], "objective must be one of"),
    (["--reward", "toy:seed=0", "--steps", "0"], "invalid config value"),
    (["--reward", "toy:seed=0", "--branch-from", "sideways"], "branch_from must be uniform or tilted"),
    (["--reward", "toy:seed=0", "--objective", "reverse_kl", "--batch-size", "10", "--group", "4"],
     "must be a multiple of group"),
    (["--reward", "toy:seed=0", "--objective", "reverse_kl", "--group", "1"], "invalid config value"),
    (["--reward", "toy:seed=0", "--objective", "reverse_kl", "--baseline", "zero"],
     "baseline must be loo or value"),
    (["--reward", "toy:seed=0", "--rollout-policy", "guided"], "rollout_policy guided needs init_from"),
    (["--reward", "toy:seed=0", "--init-from", "/no/such/value-model"], "cannot start from"),
    (["--reward", "toy:seed=0", "--init-from", "tilt/assets/demo-value"], "cannot start from"),
    (["--reward", "toy:seed=0", "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
    (["--reward", "toy:seed=0", "--init-layers", "1"], "not with init_from, nor on a toy base"),
    (["--reward", "toy:seed=0", "--init-layers", "0"], "invalid config value"),
])
def test_train_bad_input_exits_2(tmp_path, args, message):
    res = run(["train", *TOY, "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "out").exists()   # nothing half-written


def test_train_on_cpu_records_the_device_in_the_manifest(tmp_path):
    out = tmp_path / "out"
    res = run(["train", *TOY, "--reward", "toy:seed=0", "--device", "cpu", "--rollouts", "200",
               "--steps", "3", "--eval-every", "3", "--batch-size", "16", "--hidden", "16",
               "--heads", "1", "--layers", "1", "--intermediate", "32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "tilt.json").read_text())
    assert manifest["training"]["device"] == "cpu" and manifest["training"]["steps"] == 3


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_train_device_cuda_without_cuda_exits_2(tmp_path, monkeypatch, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # also on a GPU machine
    res = run(["train", *TOY, "--reward", "toy:seed=0", "--device", device,
               "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--device" in lines[0] and "no CUDA device" in lines[0]
    assert not (tmp_path / "out").exists()


def test_train_bad_yaml_exits_2(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("steps: 10\nwhat: 1\n")
    res = run(["train", "--config", str(bad)])
    assert res.exit_code == 2 and "unknown config key" in res.output
    bad.write_text("steps: [unclosed\n")
    res = run(["train", "--config", str(bad)])
    assert res.exit_code == 2 and "not valid YAML" in res.output


def test_eval_bad_input_exits_2(tmp_path):
    res = run(["eval", "--prompts", str(tmp_path / "missing.txt")])
    assert res.exit_code == 2 and "prompt file not found" in res.output
    prompts = tmp_path / "p.txt"
    prompts.write_text("<0>\n")
    res = run(["eval", "--model", "toy:vocab=4,len=3,seed=0", "--engine", "toy", "--reward", "bogus",
               "--prompts", str(prompts), "--out", str(tmp_path / "e"), "--quiet"])
    assert res.exit_code == 2 and "cannot load reward" in res.output


def test_eval_writes_json_table_and_plots(tmp_path, toy_value):
    cfg, _ = toy_value
    prompts = tmp_path / "p.txt"
    prompts.write_text("<0>\n<1>\n")
    out = tmp_path / "eval"
    res = run(["eval", "--model", cfg.model, "--engine", "toy", "--reward", cfg.reward,
               "--value", cfg.out, "--prompts", str(prompts), "--out", str(out), "--max-tokens", "3",
               "--n", "4", "--betas", "0.5,1", "--best-of", "2,8", "--particles", "4", "--quiet"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "eval.json").read_text())
    methods = {r["method"] for r in data["methods"]}
    assert methods == {"none", "token", "best_of_n", "importance", "smc", "blockwise"}
    for name in ("reward_vs_kl.png", "reward_vs_compute.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "table.md").read_text().startswith("| method")
    bon8 = next(r for r in data["methods"] if r["label"] == "best-of-8")
    assert bon8["relative_compute"] > 4 and abs(bon8["kl_to_base"] - data["checks"]["bon8_kl_bound"]) < 1e-9


def test_ddp_two_gloo_processes(tmp_path):
    """torchrun --nproc_per_node=2 --no-python tilt train ...: both ranks train, rank 0 saves."""
    tilt = shutil.which("tilt", path=str(Path(sys.executable).parent))
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert tilt and torchrun
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "--no-python", tilt, "train",
           "--model", "toy:vocab=4,len=3,seed=0", "--engine", "toy", "--reward", "toy:seed=0",
           "--prompt", "<0>", "--max-tokens", "3", "--rollouts", "400", "--steps", "6",
           "--eval-every", "3", "--batch-size", "16", "--hidden", "16", "--heads", "1",
           "--layers", "1", "--intermediate", "32", "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # torchrun and both ranks
        proc.communicate()
        raise
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert summary["rollouts"] == 400          # 200 per rank, all-gathered
    assert (out / "model.safetensors").is_file() and (out / "tilt.json").is_file()
