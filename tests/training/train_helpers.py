"""Shared helpers of the training tests (imported as tests.training.train_helpers)."""

from __future__ import annotations

from training.config import load_config

TOY = "toy:vocab=4,len=3,seed=0"


def toy_config(out, **kw):
    """A small-toy TrainConfig (40 completions; trains in a few seconds)."""
    base = dict(model=TOY, reward="toy:seed=0", engine="toy", prompts=["<0>"], max_tokens=3,
                beta=1.0, rollouts=8000, steps=150, batch_size=64, lr=0.01, eval_every=50,
                ckpt_every=50, hidden=32, layers=1, heads=2, intermediate=64, seed=0, threads=1,
                out=str(out))
    base.update(kw)
    return load_config(None, base)
