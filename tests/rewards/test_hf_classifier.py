"""A real saved sequence classifier (fitted by the fixture) loaded through ``hf:PATH``."""

from __future__ import annotations

import shutil

import pytest
import torch

from rewards.loader import load_reward
from tests.rewards.helpers import NEGATIVE, POSITIVE


async def test_label_logit_and_prob(classifier_dir):
    pos = load_reward(f"hf:{classifier_dir}:label=positive")
    scores = await pos.score_text("", POSITIVE + NEGATIVE)
    n = len(POSITIVE)
    assert min(scores[:n]) > max(scores[n:])  # the fitted classifier separates its data
    prob = await load_reward(f"hf:{classifier_dir}:label=POSITIVE,score=prob").score_text("", POSITIVE + NEGATIVE)
    assert all(0 <= p <= 1 for p in prob) and min(prob[:n]) > 0.5 > max(prob[n:])
    neg = await load_reward(f"hf:{classifier_dir}:index=0,score=prob").score_text("", POSITIVE + NEGATIVE)
    assert neg == pytest.approx([1 - p for p in prob], abs=1e-9)
    logprob = await load_reward(f"hf:{classifier_dir}:label=POSITIVE,score=logprob").score_text("", POSITIVE)
    assert logprob == pytest.approx([torch.tensor(p).log().item() for p in prob[:n]], abs=1e-6)


async def test_batching_matches_one_by_one(classifier_dir):
    """Padding inside a batch does not change scores (batch_size=4 vs 1)."""
    texts = POSITIVE + NEGATIVE + ["ok", "a much longer sentence about a lovely sunny afternoon by the sea"]
    batched = await load_reward(f"hf:{classifier_dir}:label=POSITIVE,batch_size=4").score_text("", texts)
    single = await load_reward(f"hf:{classifier_dir}:label=POSITIVE,batch_size=1").score_text("", texts)
    assert batched == pytest.approx(single, abs=1e-5)


async def test_pair_input_and_token_level(classifier_dir, toy_codec):
    r = load_reward(f"hf:{classifier_dir}:label=POSITIVE,input=pair")
    a, b = await r.score_text("a question", ["good fun", "good fun"])
    assert a == b
    r2 = load_reward(f"hf:{classifier_dir}:label=POSITIVE", codec=toy_codec)
    out = await r2.score([1], [[2, 3], [4]])
    assert out.dtype == torch.float64 and out.shape == (2,)


def test_clear_errors(classifier_dir, tmp_path):
    with pytest.raises(ValueError, match="choose one with label=NAME or index=K"):
        load_reward(f"hf:{classifier_dir}")
    with pytest.raises(ValueError, match="not in the model's labels"):
        load_reward(f"hf:{classifier_dir}:label=joy")
    with pytest.raises(ValueError, match="out of range"):
        load_reward(f"hf:{classifier_dir}:index=5")
    with pytest.raises(ValueError, match="unknown option"):
        load_reward(f"hf:{classifier_dir}:colour=red")
    with pytest.raises(ValueError, match="must be an integer"):
        load_reward(f"hf:{classifier_dir}:index=one")
    with pytest.raises(ValueError, match="not found"):
        load_reward(f"hf:{tmp_path / 'nope'}:label=POSITIVE")
    broken = tmp_path / "broken"
    shutil.copytree(classifier_dir, broken)
    (broken / "config.json").unlink()
    with pytest.raises(ValueError, match="cannot load"):
        load_reward(f"hf:{broken}:label=POSITIVE")
