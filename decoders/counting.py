"""Count the tokens a sampler makes an engine generate (every particle, draw and candidate).

    lm = counting(engine_lm)          # same interface (a BlockSampler stays one)
    await generate(lm, ...); lm.positions   # next-token distributions computed

One position is one next-token distribution the sampler asked for: a context of an
``lm.logprobs`` call, or a token of an ``lm.sample_blocks`` block (its final EOS included), or
a token a stream (``lm.open_stream``) sampled, read or not (a stream aborted at a block end may
have sampled ahead; its count is taken when it is closed).
``tilt eval`` reports it as compute and the server as ``usage.generated_tokens``.
"""

from __future__ import annotations

from typing import Any


class CountingLM:
    """Wraps a ``LanguageModel`` and counts the decode positions it computes; other
    attributes are the wrapped model's."""

    def __init__(self, lm: Any):
        self.inner = lm
        self.vocab_size = lm.vocab_size
        self.eos_token_id = lm.eos_token_id
        self.positions = 0

    def __getattr__(self, name: str) -> Any:  # only for names not set here
        return getattr(self.inner, name)

    async def logprobs(self, contexts):
        self.positions += len(contexts)
        return await self.inner.logprobs(contexts)


class CountingBlockLM(CountingLM):
    """``CountingLM`` for engines that also sample blocks natively (``BlockSampler``)."""

    async def sample_blocks(self, contexts, max_tokens, params, seeds, guidance=None,
                            on_tokens=None):
        blocks = await self.inner.sample_blocks(contexts, max_tokens, params, seeds,
                                                guidance=guidance, on_tokens=on_tokens)
        self.positions += sum(len(b.tokens) + int(b.finished) for b in blocks)
        return blocks


class CountingStreamLM(CountingBlockLM):
    """``CountingBlockLM`` for engines that also open streams (``StreamSampler``)."""

    def open_stream(self, context, max_tokens, seed, guidance=None):
        return _CountedStream(self, self.inner.open_stream(context, max_tokens, seed, guidance))


class _CountedStream:
    def __init__(self, owner: CountingLM, inner: Any):
        self.owner, self.inner, self.counted = owner, inner, False

    @property
    def generated(self) -> int:
        return self.inner.generated

    async def next_block(self, k: int):
        return await self.inner.next_block(k)

    def close(self) -> None:
        self.inner.close()
        if not self.counted:
            self.owner.positions += self.inner.generated
            self.counted = True


def counting(lm: Any) -> CountingLM:
    if hasattr(lm, "open_stream"):
        return CountingStreamLM(lm)
    return CountingBlockLM(lm) if hasattr(lm, "sample_blocks") else CountingLM(lm)
