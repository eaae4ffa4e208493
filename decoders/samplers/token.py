"""``token``: the token-level tilt, logits l_ref + Q/beta (then temperature, top-k, top-p).

With exact Q* at temperature 1 this samples pi* exactly (docs/math.md). Engines that apply
a named value model inside their sampler (``value.native_name``) do it natively via
``lm.sample_blocks(..., guidance=Guidance(native_name, beta))``; otherwise a token loop
over ``lm.logprobs`` and ``value.q_values``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from decoders import blocks as blk
from decoders.protocols import Context, LanguageModel, OnTokens, Reward, ValueModel
from decoders.results import Sample
from decoders.samplers.base import make_generator, params_of, samples_from_blocks, score

if TYPE_CHECKING:  # annotations only: decoders.spec reads the method registry
    from decoders.spec import GuidanceSpec


async def sample(lm: LanguageModel, prompt: Context, spec: GuidanceSpec, *, value: ValueModel,
                 reward: Reward | None = None, on_tokens: OnTokens | None = None) -> list[Sample]:
    """n samples from the guided policy softmax((l_ref + Q/beta) / temperature)."""
    g = make_generator(spec.seed)
    if not blk.can_sample_natively(lm, value):
        root = await value.q_values([list(prompt)], spec.beta)
        if bool(torch.isneginf(torch.as_tensor(root)).all()):
            raise ValueError("the tilted distribution is empty: every completion has value -inf "
                             "(all continuations violate a hard constraint)")
    blocks = await blk.sample_blocks(lm, [list(prompt)] * spec.n, spec.max_tokens, g,
                                     params_of(spec), value=value, beta=spec.beta,
                                     on_tokens=on_tokens)
    rewards = await score(reward, prompt, [b.tokens for b in blocks])
    return samples_from_blocks(blocks, rewards, spec.beta)

