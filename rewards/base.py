"""Text rewards and their token-level form.

A *text reward* scores decoded text:

    async score_text(prompt: str, completions: list[str]) -> list[float]   (-inf = forbidden)

``score_text`` is **async** (an HTTP reward awaits the network; heavy local models run in a
worker thread so the server's event loop keeps serving). Every ``TextReward`` is also a
token-level ``decoders.protocols.Reward`` once it knows the base model's codec:

    R(prompt_ids, y_ids) = score_text(decode(prompt_ids), [decode_completion(prompt_ids, y_ids)])

where the completion text is ``decode(prompt + y)`` minus the decoded prompt when that is a
prefix (so tokenizers that drop a leading space on a standalone decode still give the text the
user sees), and ``decode(y)`` otherwise.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Sequence
from typing import Any

import torch

from decoders.protocols import Context


def decode_completion(codec: Any, prompt: Context, completion: Context,
                      head: str | None = None) -> str:
    """Text of ``completion`` as it appears after ``prompt`` (see module docstring).

    ``head`` is ``codec.decode(prompt)`` when the caller already has it.
    """
    head = codec.decode(list(prompt)) if head is None else head
    full = codec.decode(list(prompt) + list(completion))
    if head and full.startswith(head):
        return full[len(head):]
    return codec.decode(list(completion))


def as_scores(values: Sequence[Any], n: int, who: str) -> torch.Tensor:
    """Check a list of ``n`` real numbers (``-inf`` allowed, NaN and ``+inf`` not) -> float64."""
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{who} returned {len(values)} scores for {n} completions")
    out = []
    for v in values:
        x = float(v)
        if math.isnan(x) or x == math.inf:
            raise ValueError(f"{who} returned an invalid score {v!r} (NaN/+inf)")
        out.append(x)
    return torch.tensor(out, dtype=torch.float64)


class TextReward:
    """Base class: subclasses implement ``async score_text``; ``score`` comes for free.

    ``name`` is the spec the reward was loaded from. ``codec`` (a ``engines.base.TextCodec``)
    is needed only for the token-level ``score``; ``load_reward(spec, codec)`` sets it.
    """

    name: str = "text"

    def __init__(self, codec: Any = None):
        self.codec = codec

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        raise NotImplementedError

    async def score(self, prompt: Context, completions: Sequence[Context]) -> torch.Tensor:
        """Token-level ``Reward``: decode with the codec, then ``score_text``."""
        if self.codec is None:
            raise ValueError(f"reward {self.name!r} scores text: load it with the model's codec")
        if len(completions) == 0:
            return torch.empty(0, dtype=torch.float64)
        def decode() -> tuple[str, list[str]]:  # tokenizer work, off the event loop
            prompt_text = self.codec.decode(list(prompt))
            return prompt_text, [decode_completion(self.codec, prompt, y, prompt_text)
                                 for y in completions]

        prompt_text, texts = await asyncio.to_thread(decode)
        return as_scores(await self.score_text(prompt_text, texts), len(texts), self.name)

    async def aclose(self) -> None:
        """Release resources (HTTP clients); a no-op for local rewards."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class WrappedTextReward(TextReward):
    """Adapt any object with ``score_text`` (sync or async) to a ``TextReward``.

    Used for plugins, whose authors need not inherit from ``TextReward``.
    """

    def __init__(self, inner: Any, name: str, codec: Any = None):
        super().__init__(codec)
        self.inner = inner
        self.name = name

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        out = self.inner.score_text(prompt, list(completions))
        if inspect.isawaitable(out):
            out = await out
        return [float(x) for x in as_scores(out, len(completions), self.name)]

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            out = close()
            if inspect.isawaitable(out):
                await out
