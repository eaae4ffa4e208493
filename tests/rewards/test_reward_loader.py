"""Spec parsing of load_reward: every kind resolves, and bad specs are clear ValueErrors."""

from __future__ import annotations

import pytest

from decoders.toy import ToyReward
from rewards.arm import ARMReward
from rewards.combine import CombinedTextReward
from rewards.http_client import HTTPReward
from rewards.json_schema import JsonSchemaConstraint
from rewards.loader import KINDS, load_reward, load_weighted, split_options
from rewards.regex import RegexConstraint
from rewards.vader import VaderReward


def test_kinds_resolve():
    assert isinstance(load_reward("vader"), VaderReward)
    assert load_reward("vader").name == "vader"
    assert isinstance(load_reward("toy:seed=2"), ToyReward)
    rx = load_reward("regex:a:b")  # the pattern keeps its colons
    assert isinstance(rx, RegexConstraint) and rx.regex.pattern == "a:b" and rx.mode == "fullmatch"
    assert load_reward("regex_search:x").mode == "search"
    assert isinstance(load_reward('json_schema:{"type":"string"}'), JsonSchemaConstraint)
    h = load_reward("http:https://rewards.example/score#timeout=1.5,retries=0,backoff=0,batch_size=8")
    assert isinstance(h, HTTPReward) and (h.timeout, h.retries, h.backoff, h.batch_size) == (1.5, 0, 0.0, 8)
    assert isinstance(load_reward("arm:toy:vocab=4,len=2,seed=0"), ARMReward)
    assert set(KINDS) >= {"vader", "regex", "json_schema", "hf", "http", "plugin", "arm", "toy"}


def test_split_options():
    assert split_options("/m/clf:label=POS,score=prob", {"label", "score"}) == (
        "/m/clf", {"label": "POS", "score": "prob"})
    assert split_options("/m/clf", {"label"}) == ("/m/clf", {})
    assert split_options("C:\\models\\clf", {"label"}) == ("C:\\models\\clf", {})


@pytest.mark.parametrize("spec,match", [
    ("", "empty reward spec"),
    ("sentiment", "unknown reward spec 'sentiment'"),
    ("bogus:1", "unknown reward spec"),
    ("toy:seed=x", "bad toy spec"),
    ("toy:temperature=1", "unknown toy reward keys"),
    ("json_schema:", "needs a schema"),
    ("hf:", "needs a model directory"),
    ("plugin:", "needs a plugin name"),
    ("arm:", "needs a model directory"),
    ("http:", "http:// or https://"),
    ("plugin:x:novalue", "expected key=value"),
])
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        load_reward(spec)


async def test_load_weighted():
    r = load_weighted([("vader", 1.0), (r"regex_search:\d", 0.0)])
    assert isinstance(r, CombinedTextReward)
    assert await r.score_text("", ["good 1", "good"]) == [pytest.approx(0.4404), float("-inf")]
