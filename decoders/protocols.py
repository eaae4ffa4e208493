"""The three things a sampler talks to, as small async protocols.

Every call is batched over *contexts*. A context is the full token-id sequence the model
conditions on: prompt ids followed by the ids generated so far (EOS never appears inside a
context). All tensors are float64 on CPU unless an adapter documents otherwise; the
vocabulary axis has ``vocab_size`` entries and includes the EOS id.

- ``LanguageModel.logprobs(contexts)``       -> [B, V]  log pi_ref(a | s)  (rows log-normalised)
- ``ValueModel.q_values(contexts, beta)``    -> [B, V]  Q(s, a) in reward units; guided logits
                                                         are  l_ref(s, .) + Q(s, .) / beta
- ``Reward.score(prompt, completions)``      -> [B]     R(x, y); -inf marks a hard constraint

The methods are ``async`` because the production engine (vLLM's ``AsyncLLM``) is: a particle
method issues all its particles' work in one call (or concurrently), and a server interleaves
many requests on one event loop.

Optional capability: an engine may also implement ``BlockSampler.sample_blocks`` — native
sampling of several tokens per call (vLLM does it inside its batched sampler, guidance
included). Samplers in ``decoders`` use it when present and fall back to a token loop over
``logprobs`` otherwise (see ``decoders.blocks``). An engine may also implement
``StreamSampler.open_stream``: one running request per context, handed out a block at a
time, so a particle method's survivors keep their request across block ends
(``decoders.streams``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

Context = Sequence[int]
# Streaming hook: called with (context index, newly sampled token ids) as tokens arrive.
OnTokens = Callable[[int, list[int]], Awaitable[None]]
# Where a stop ends a completion: its kept length (the stop's last token included), or None.
StopAt = Callable[[Sequence[int]], "int | None"]


@runtime_checkable
class LanguageModel(Protocol):
    """A reference (base) autoregressive model pi_ref over ``vocab_size`` ids."""

    vocab_size: int
    eos_token_id: int

    async def logprobs(self, contexts: Sequence[Context]) -> torch.Tensor:
        """Next-token log-probabilities, shape [len(contexts), vocab_size]."""
        ...


@runtime_checkable
class ValueModel(Protocol):
    """Soft value corrections Q(s, .) for every next token of each context.

    Q is in reward units: Q(s, a) = beta * log E_{pi_ref}[exp(R / beta) | s, a]. A learned
    model trained at one beta may ignore ``beta``; an exact source uses it.
    """

    async def q_values(self, contexts: Sequence[Context], beta: float) -> torch.Tensor:
        """Q(s, .), shape [len(contexts), vocab_size]; -inf where a token is never allowed."""
        ...


@runtime_checkable
class Reward(Protocol):
    """The energy: a sequence-level reward R(x, y) of complete completions (EOS excluded)."""

    async def score(self, prompt: Context, completions: Sequence[Context]) -> torch.Tensor:
        """R(prompt, y) for each completion y, shape [len(completions)], float64."""
        ...


@dataclass
class SamplingParams:
    """Proposal shaping shared by samplers and engines (OpenAI / vLLM names and meanings).

    temperature, top_k, top_p are applied by every engine. The rest are vLLM's sampler
    fields, applied by engines that name them in ``sampling_fields`` (vLLM); ``stop`` and
    ``stop_token_ids`` end a sequence at the token that completes a stop string or is a stop
    id (that token is kept in ``Block.tokens``; EOS still ends it unless ``ignore_eos``).
    """

    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()

    def shapes_proposal(self) -> bool:
        """True when the sampled distribution differs from pi_ref (before any guidance)."""
        return (self.temperature != 1.0 or self.top_k > 0 or self.top_p < 1.0
                or self.min_p > 0.0 or self.repetition_penalty != 1.0
                or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
                or bool(self.logit_bias) or self.min_tokens > 0)

    def extended(self) -> list[str]:
        """The fields beyond temperature / top_k / top_p set to a non-default value."""
        plain = SamplingParams()
        return [f for f in EXTENDED_FIELDS if getattr(self, f) != getattr(plain, f)
                and not (f == "logit_bias" and not self.logit_bias)]


EXTENDED_FIELDS = ("min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
                   "logit_bias", "min_tokens", "ignore_eos", "stop", "stop_token_ids")


@dataclass
class Guidance:
    """Native token-level guidance an engine applies inside its sampler."""

    value_model: str
    beta: float


@dataclass
class Block:
    """Tokens an engine sampled natively for one context.

    ``proposal_logprobs[i]`` is log q(token_i | s_i) under the distribution actually sampled
    from (guided and temperature-shaped); ``base_logprobs[i]`` is log pi_ref(token_i | s_i).
    ``finished`` is True when the block ended with EOS (EOS is not in ``tokens``); then
    ``eos_proposal_logprob`` / ``eos_base_logprob`` are log q(EOS | s) and log pi_ref(EOS | s)
    of that final step (needed for exact importance weights; None = not reported).
    ``extra`` may carry ``"kl"``: sum over steps of the exact per-step KL(q || pi_ref), and
    ``"q_over_beta"``: per token, the guidance Q(s_i, token_i)/beta the engine added (NaN where
    unknown; block SMC's twist at a block's end).
    """

    tokens: list[int]
    proposal_logprobs: list[float]
    base_logprobs: list[float]
    finished: bool
    extra: dict = field(default_factory=dict)
    eos_proposal_logprob: float | None = None
    eos_base_logprob: float | None = None


@runtime_checkable
class BlockSampler(Protocol):
    """Optional native multi-token sampling (engines such as vLLM)."""

    async def sample_blocks(
        self,
        contexts: Sequence[Context],
        max_tokens: int,
        params: SamplingParams,
        seeds: Sequence[int | None],
        guidance: Guidance | None = None,
        on_tokens: OnTokens | None = None,
    ) -> list[Block]:
        """Sample up to ``max_tokens`` tokens after each context (stopping at EOS).

        ``on_tokens`` (optional) is awaited with each context's new tokens as they are
        sampled, for streaming. Cancelling the awaiting task aborts the engine work.
        """
        ...


@runtime_checkable
class ParticleStream(Protocol):
    """One running native request after a fixed context, read a block at a time.

    The engine may sample ahead of what has been read; tokens not yet read are draws from the
    same proposal q(. | context + tokens read so far), whatever the reader decided meanwhile.
    """

    generated: int  # tokens the engine has sampled so far (read or not)

    async def next_block(self, k: int) -> Block:
        """The next up to ``k`` tokens (fewer when the request ends: EOS, ``max_tokens``)."""
        ...

    def close(self) -> None:
        """Abort the request (no-op when it has ended); tokens not read are dropped."""
        ...


@runtime_checkable
class StreamSampler(Protocol):
    """Optional: native requests that keep running across block ends (vLLM)."""

    def open_stream(self, context: Context, max_tokens: int, seed: int | None,
                    guidance: Guidance | None = None) -> ParticleStream:
        """Start sampling up to ``max_tokens`` tokens at temperature 1 (guided when asked)."""
        ...
