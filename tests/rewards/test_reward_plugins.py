"""Plugins found through a real entry point: a tiny distribution (``*.dist-info`` with
``entry_points.txt``) written to a temp dir on sys.path, discovered by importlib.metadata."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest

from rewards.loader import load_reward
from rewards.plugins import GROUP, available_plugins

MODULE = "tilt_rewards_test_plugin"

SOURCE = textwrap.dedent('''
    import torch
    from rewards.base import TextReward

    class Brevity:
        """Plain class (no Tilt base): sync score_text; -inf above max_words."""
        def __init__(self, max_words="3"):
            self.max_words = int(max_words)
        def score_text(self, prompt, completions):
            return [-float(len(c.split())) if len(c.split()) <= self.max_words else float("-inf")
                    for c in completions]

    class Shout(TextReward):
        name = "shout"
        async def score_text(self, prompt, completions):
            return [float(sum(ch.isupper() for ch in c)) for c in completions]

    class TokenCount:
        async def score(self, prompt, completions):
            return torch.tensor([float(len(y)) for y in completions], dtype=torch.float64)

    def make_token_count():
        return TokenCount()

    length = Brevity(max_words="100")  # an instance

    class NotAReward:
        pass
''')

ENTRY_POINTS = textwrap.dedent(f'''
    [{GROUP}]
    brevity = {MODULE}:Brevity
    shout = {MODULE}:Shout
    token_count = {MODULE}:make_token_count
    length = {MODULE}:length
    not_a_reward = {MODULE}:NotAReward
    broken = {MODULE}_missing:Thing
''')


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    info = tmp_path / "tilt_rewards_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tilt-rewards-test-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(MODULE, None)


async def test_plugin_discovered_and_scores_text(plugin_dist, toy_codec):
    assert available_plugins()["brevity"] == f"{MODULE}:Brevity"
    r = load_reward("plugin:brevity:max_words=2", codec=toy_codec)
    assert await r.score_text("", ["one", "one two", "one two three"]) == [-1.0, -2.0, -math.inf]
    assert (await r.score([1], [[2], [2, 3]])).tolist() == [-1.0, -1.0]  # "<2><3>" is one word
    assert await load_reward("plugin:length").score_text("", ["a b c d"]) == [-4.0]


async def test_plugin_text_reward_subclass_and_token_reward(plugin_dist, toy_codec):
    shout = load_reward("plugin:shout", codec=toy_codec)
    assert shout.codec is toy_codec and await shout.score_text("", ["HeLLo"]) == [3.0]
    tok = load_reward("plugin:token_count")
    assert (await tok.score([0], [[1, 2, 3], []])).tolist() == [3.0, 0.0]


def test_plugin_errors(plugin_dist):
    with pytest.raises(ValueError, match="no reward plugin 'nope'"):
        load_reward("plugin:nope")
    with pytest.raises(ValueError, match="failed to import"):
        load_reward("plugin:broken")
    with pytest.raises(ValueError, match="neither score_text nor score"):
        load_reward("plugin:not_a_reward")
    with pytest.raises(ValueError, match="rejected options"):
        load_reward("plugin:brevity:colour=red")
    with pytest.raises(ValueError, match="takes no options"):
        load_reward("plugin:length:x=1")
