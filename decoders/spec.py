"""The typed guidance spec: what a request asks a sampler to do.

The server turns a request body into a ``GuidanceSpec``; ``decoders.generate`` dispatches it
through the method registry (``decoders.methods``). Nothing here knows about HTTP or engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from decoders.methods import METHODS, Method, method_info

__all__ = ["GuidanceSpec", "METHODS", "Method"]


@dataclass
class GuidanceSpec:
    """One guided generation request for a single prompt.

    method       none (= base ancestral sampling) | token | smc | importance | best_of_n | blockwise
    n            independent samples to return (each particle method runs n independent times)
    max_tokens   T: at most T non-EOS tokens; at position T only EOS is allowed
    beta         temperature of the tilt  pi* ∝ pi_ref · exp(R / beta)
    particles    N of smc, importance and best_of_n
    ess_threshold  smc resamples when ESS < ess_threshold · N
    resample_every smc: tokens per step (1: twist and resampling after every token; k > 1:
                 particles advance k tokens at a time, sampled natively by the engine)
    resampling   systematic | multinomial
    block_size, candidates, block_select   blockwise: K=candidates blocks of M=block_size tokens,
                 chosen by argmax of value or sampled ∝ exp(V / beta)
    temperature, top_k, top_p   proposal shaping of ``none`` (and of ``token``'s guided logits,
                 ``best_of_n``'s draws and ``blockwise``'s candidates); ``smc`` and ``importance``
                 always propose untruncated at temperature 1 (their weights need full support)
    seed         makes the whole call reproducible
    min_p, repetition_penalty, presence_penalty, frequency_penalty, logit_bias, min_tokens,
    ignore_eos   vLLM's sampler fields (``SamplingParams``), for ``none`` and ``token`` on
                 engines that apply them natively; particle methods reject them (the server
                 says why) because they change the proposal without a weight correction
    stop, stop_token_ids   a sequence ends at the token that completes a stop string or is a
                 stop id (kept as its last token). ``none``/``token``: the engine stops there.
                 Particle methods: the target is over sequences truncated at the first stop
                 (R scores the truncated completion; its base log-prob is that of the prefix)
    """

    method: Method = "none"
    n: int = 1
    max_tokens: int = 16
    beta: float = 1.0
    particles: int = 8
    ess_threshold: float = 0.5
    resample_every: int = 1
    resampling: Literal["systematic", "multinomial"] = "systematic"
    block_size: int = 4
    candidates: int = 4
    block_select: Literal["argmax", "sample"] = "argmax"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = field(default=())
    stop_token_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        method_info(self.method)  # ValueError naming the methods when unknown
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        for name in ("n", "max_tokens", "particles", "block_size", "candidates",
                     "resample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold must be in [0, 1], got {self.ess_threshold}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens={self.max_tokens}], "
                             f"got {self.min_tokens}")
