"""Fixtures of the training tests: one small toy value model trained once per session."""

from __future__ import annotations

import pytest

from tests.training.train_helpers import toy_config
from training.trainer import train


@pytest.fixture(scope="session")
def toy_value(tmp_path_factory):
    """(config, summary) of a soft_q value model of the small toy (a few seconds)."""
    out = tmp_path_factory.mktemp("toy-value")
    cfg = toy_config(out)
    return cfg, train(cfg, progress=False)
