"""``tilt value-model screen`` (training.tools.screen): the vLLM-free screen of demo value
models (lean guided sampler + VADER) prints one JSON line per model, beta and prompt set; bad
input exits 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TILT = str(Path(sys.executable).parent / "tilt")  # the installed console script


def screen(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([TILT, "value-model", "screen", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_screen_of_bundled_model_reports_reward_and_kl_on_eval_prompts():
    out = screen("tilt/assets/demo-value", "--betas", "0.2", "--sets", "eval", "--max-tokens", "3")
    assert out.returncode == 0, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["model"] == "tilt/assets/demo-value" and row["beta"] == 0.2 and row["set"] == "eval"
    assert row["samples"] == 16 * 128
    assert -1 <= row["R"] <= 1 and row["KL"] > 0 and row["se_KL"] > 0
    assert row["J16"] == pytest.approx(row["R"] - 0.16 * row["KL"], abs=2e-4)


def test_screen_defaults_resolve_outside_the_checkout(tmp_path):
    """Base model and prompt file defaults are found from any working directory."""
    vm = str(ROOT / "tilt" / "assets" / "demo-value")
    out = screen(vm, "--betas", "0.2", "--sets", "eval", "--max-tokens", "1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (row,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert row["model"] == vm and row["samples"] == 16 * 128


@pytest.mark.parametrize("args, message", [
    (["tilt/assets/demo-value", "--betas", "x"], "--betas"),
    (["tilt/assets/demo-value", "--betas", "-1"], "--betas"),
    (["tilt/assets/demo-value", "--sets", "test"], "--sets"),
    (["no/such/value-model", "--sets", "eval"], "error"),
    (["tilt/assets/demo-value", "--sets", "eval", "--eval-prompts", "no/such.txt"], "no/such.txt"),
])
def test_screen_bad_input_exits_2_with_a_message(args, message):
    out = screen(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
