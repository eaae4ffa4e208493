"""Build a reward from a spec string: the one entry point the server and CLI use.

    load_reward("toy:seed=0")                # toy reward (token ids)
    load_reward("vader", codec=handle.codec) # text rewards need the model's codec

Text rewards also expose ``score_text(prompt: str, completions: list[str]) -> list[float]``
(used by POST /v1/rewards/score).
"""

from __future__ import annotations

from typing import Any

from decoders.protocols import Reward


def load_reward(spec: str, codec: Any = None) -> Reward:
    """Raise ValueError with a clear message for an unknown or unloadable reward."""
    if spec.startswith("toy:"):
        from decoders.toy import ToyReward

        return ToyReward.from_spec(spec)
    raise ValueError(f"unknown reward spec {spec!r}")
