"""``tilt value-model grow`` (training.tools.grow): one more layer, the same Q(s, .) to float
precision."""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from tilt.cli import app

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "tilt" / "assets" / "demo-value"


def grow(*args: str):
    return CliRunner().invoke(app, ["value-model", "grow", *args])


def test_grown_value_model_has_one_more_layer_and_the_same_q(tmp_path):
    out = grow(str(BUNDLED), str(tmp_path / "g"))
    assert out.exit_code == 0, out.output
    old = AutoModelForCausalLM.from_pretrained(BUNDLED, dtype=torch.float32)
    new = AutoModelForCausalLM.from_pretrained(tmp_path / "g", dtype=torch.float32)
    assert new.config.num_hidden_layers == old.config.num_hidden_layers + 1
    assert (tmp_path / "g" / "tilt.json").is_file()
    ids = torch.randint(0, old.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(old(input_ids=ids).logits, new(input_ids=ids).logits, atol=1e-5)


def test_grow_without_a_model_directory_exits_2(tmp_path):
    out = grow(str(tmp_path), str(tmp_path / "g"))
    assert out.exit_code == 2 and "config.json" in out.stderr
