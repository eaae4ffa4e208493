"""VADER, regex and JSON-schema rewards on real text; the codec bridge; weighted sums."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rewards.base import TextReward, decode_completion
from rewards.combine import combine
from rewards.json_schema import JsonSchemaConstraint
from rewards.loader import load_reward, load_weighted
from rewards.regex import RegexConstraint
from rewards.vader import VaderReward

NEG_INF = -math.inf


async def test_vader_positive_beats_negative():
    r = load_reward("vader")
    pos, neg, neutral = await r.score_text("Review:", [
        "This movie was absolutely wonderful, I loved every minute of it!",
        "This movie was terrible, boring and a complete waste of time.",
        "The movie is two hours long."])
    assert pos > 0.5 and neg < -0.5 and abs(neutral) < 0.1
    assert pos > neutral > neg


async def test_vader_scores_completion_not_prompt():
    r = VaderReward()
    a, b = await r.score_text("I hate everything, awful, horrible.", ["It is great.", "It is great."])
    assert a == b == (await r.score_text("", ["It is great."]))[0] > 0


async def test_vader_other_fields():
    pos = await load_reward("vader:pos").score_text("", ["good good good"])
    assert 0 < pos[0] <= 1
    with pytest.raises(ValueError, match="unknown VADER score"):
        load_reward("vader:happiness")


async def test_regex_fullmatch_and_search():
    full = load_reward(r"regex:\d{3}-\d{4}")
    search = load_reward(r"regex_search:\d{3}-\d{4}")
    texts = ["555-1234", "call 555-1234 now", "5551234", ""]
    assert await full.score_text("", texts) == [0.0, NEG_INF, NEG_INF, NEG_INF]
    assert await search.score_text("", texts) == [0.0, 0.0, NEG_INF, NEG_INF]
    assert await load_reward("regex:(?is)yes.*").score_text("", ["YES\nsir", "no"]) == [0.0, NEG_INF]


def test_regex_bad_pattern_is_value_error():
    with pytest.raises(ValueError, match="bad regex"):
        load_reward("regex:(unclosed")
    with pytest.raises(ValueError, match="needs a pattern"):
        load_reward("regex:")
    with pytest.raises(ValueError, match="unknown regex mode"):
        RegexConstraint("a", mode="match")


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name"], "additionalProperties": False}


async def test_json_schema_inline_and_file(tmp_path):
    path = tmp_path / "person.json"
    path.write_text(json.dumps(SCHEMA))
    texts = ['{"name": "Ada", "age": 36}', ' {"name": "Bob"}\n', '{"age": 3}', '{"name": "C", "age": -1}',
             '{"name": "D", "x": 1}', "not json", '{"name": "E"', "[]"]
    want = [0.0, 0.0, NEG_INF, NEG_INF, NEG_INF, NEG_INF, NEG_INF, NEG_INF]
    for spec in (f"json_schema:{json.dumps(SCHEMA)}", f"json_schema:{path}"):
        assert await load_reward(spec).score_text("", texts) == want


def test_json_schema_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_reward(f"json_schema:{tmp_path / 'missing.json'}")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_reward('json_schema:{"type": ')
    with pytest.raises(ValueError, match="bad JSON schema"):
        load_reward('json_schema:{"type": "nonsense"}')
    with pytest.raises(ValueError, match="object or a boolean"):
        JsonSchemaConstraint([1, 2])


async def test_text_reward_through_codec(toy_codec):
    """score(ids) == score_text(decoded text), as a float64 tensor; -inf passes through."""
    r = load_reward(r"regex:(<[0-6]>)*<3>", codec=toy_codec)
    out = await r.score([1, 2], [[3], [0, 3], [3, 0], []])
    assert out.dtype == torch.float64
    assert out.tolist() == [0.0, 0.0, NEG_INF, NEG_INF]
    assert (await r.score([1], [])).shape == (0,)
    assert decode_completion(toy_codec, [1, 2], [3, 4]) == "<3><4>"


async def test_text_reward_without_codec_is_clear():
    with pytest.raises(ValueError, match="codec"):
        await load_reward("vader").score([1], [[2]])


async def test_bad_score_text_output_is_caught(toy_codec):
    class Broken(TextReward):
        name = "broken"

        async def score_text(self, prompt, completions):
            return [float("nan")] * len(completions)

    with pytest.raises(ValueError, match="invalid score"):
        await Broken(toy_codec).score([], [[1]])


async def test_combine_weighted_sum_and_hard_constraints(toy_codec):
    vader = VaderReward()
    digits = RegexConstraint(r".*\d.*", mode="fullmatch")
    texts = ["great 1", "great", "awful 2"]
    v = await vader.score_text("", texts)
    c = combine([(vader, 2.0), (digits, 1.0)])
    assert await c.score_text("", texts) == pytest.approx([2 * v[0], NEG_INF, 2 * v[2]])
    # weight 0: the constraint still forbids (0 * -inf is -inf, never NaN); finite terms vanish
    z = combine([(vader, 0.0), (digits, 0.0)])
    assert await z.score_text("", texts) == [0.0, NEG_INF, 0.0]
    # negative weights are fine for finite scores
    n = combine([(vader, -1.0)])
    assert await n.score_text("", texts) == pytest.approx([-x for x in v])


async def test_combine_token_level_mixes_text_and_token_rewards(toy_codec):
    toy = load_reward("toy:seed=3")
    rx = load_reward("regex:<1>.*", codec=toy_codec)
    c = combine([(toy, 0.5), (rx, 1.0)])
    assert not hasattr(c, "score_text")  # a token-only part: the sum is token-level only
    ys = [[1, 2], [2, 1]]
    t = await toy.score([0], ys)
    out = await c.score([0], ys)
    assert out[0].item() == pytest.approx(0.5 * t[0].item()) and out[1].item() == NEG_INF
    w = load_weighted([("regex:<1>.*", 1.0), ("vader", 3.0)], codec=toy_codec)
    assert (await w.score([0], ys))[1].item() == NEG_INF


def test_combine_rejects_bad_items():
    with pytest.raises(ValueError, match="at least one"):
        combine([])
    with pytest.raises(ValueError, match="finite"):
        combine([(VaderReward(), math.inf)])
    with pytest.raises(ValueError, match="not a reward"):
        combine([("vader", 1.0)])
