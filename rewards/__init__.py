"""Reward adapters: energies R(x, y) over whole sequences (see decoders.protocols.Reward).

Public API:
    load_reward(spec, codec=None)            spec string -> reward (see rewards.loader)
    load_weighted([(spec, w), ...], codec)   weighted sum of specs
    combine([(reward, w), ...])              weighted sum of rewards (-inf stays -inf)
    TextReward                               base: async score_text(prompt, completions)
    RewardServiceError                       a remote reward failed (server: HTTP 502)
"""

from rewards.base import TextReward
from rewards.combine import combine
from rewards.errors import RewardServiceError
from rewards.loader import load_reward, load_weighted

__all__ = ["RewardServiceError", "TextReward", "combine", "load_reward", "load_weighted"]
