"""training.config: YAML and flags become a strict TrainConfig; every bad key is named in one line."""

from __future__ import annotations

import pytest

from training.config import ConfigError, TrainConfig, load_config


@pytest.mark.parametrize("overrides, message", [
    ({"what": 1, "zz": 2}, "unknown config key(s): what, zz"),
    ({"steps": 0}, "invalid config value(s): steps=0 (must be >= 1)"),
    ({"steps": 0, "lr": -1.0}, "invalid config value(s): steps=0 (must be >= 1), lr=-1.0 (must be > 0.0)"),
    ({"steps": 3.0}, "steps must be an integer, got 3.0"),
    ({"steps": True}, "steps must be an integer, got True"),
    ({"lr": "3e-3"}, "lr must be a number, got '3e-3'"),   # YAML 1.1 reads 3e-3 as a string
    ({"objective": "nope"}, "objective must be one of soft_q, iw_fkl, reverse_kl, got 'nope'"),
    ({"q_loss": "l1"}, "q_loss must be mse or exp, got 'l1'"),
    ({"prompts": ["<0>", 1]}, "prompts[1] must be a string, got 1"),
    ({"hidden": 30, "heads": 4}, "hidden (30) must be divisible by heads (4)"),
    ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N (--device), got 'tpu'"),
    ({"device": "cuda:x"}, "device must be auto, cpu, cuda or cuda:N (--device), got 'cuda:x'"),
    ({"device": 0}, "device must be a string, got 0"),
])
def test_bad_values_raise_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value) == message and "\n" not in str(err.value)


def test_yaml_numbers_take_the_declared_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("beta: 1\nweight_decay: 0\nsteps: 10\nprompts: ['<0>']\n")
    cfg = load_config(path, {"lr": 0.01, "seed": None})   # None overrides are ignored
    assert isinstance(cfg.beta, float) and cfg.beta == 1.0 and isinstance(cfg.weight_decay, float)
    assert cfg.steps == 10 and cfg.lr == 0.01 and cfg.seed == 0
    assert cfg.to_dict() == {**TrainConfig().to_dict(), "beta": 1.0, "weight_decay": 0.0,
                             "steps": 10, "lr": 0.01, "prompts": ["<0>"]}


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_names_validate(device):
    assert load_config(None, {"device": device}).device == device


def test_device_resolves_to_cpu_or_fails_naming_the_flag_without_cuda(monkeypatch):
    import torch

    from training.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=f"--device {name}: no CUDA device"):
            resolve_device(name)
