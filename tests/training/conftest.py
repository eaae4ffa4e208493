"""Fixtures of the training tests: one small toy value model trained once per session."""

from __future__ import annotations

import pytest

from training.config import load_config
from training.trainer import train

TOY = "toy:vocab=4,len=3,seed=0"


def toy_config(out, **kw):
    base = dict(model=TOY, reward="toy:seed=0", engine="toy", prompts=["<0>"], max_tokens=3,
                beta=1.0, rollouts=8000, steps=150, batch_size=64, lr=0.01, eval_every=50,
                ckpt_every=50, hidden=32, layers=1, heads=2, intermediate=64, seed=0, threads=1,
                out=str(out))
    base.update(kw)
    return load_config(None, base)


@pytest.fixture(scope="session")
def toy_value(tmp_path_factory):
    """(config, summary) of a soft_q value model of the small toy (about 10 s)."""
    out = tmp_path_factory.mktemp("toy-value")
    cfg = toy_config(out)
    return cfg, train(cfg, progress=False)
