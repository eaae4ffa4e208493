"""A running vLLM request read block by block (``decoders.protocols.ParticleStream``).

Block SMC keeps each particle's request running across block ends (``decoders.streams``).
One stream is one ``AsyncLLM.generate`` call at temperature 1, guided when asked, with
``output_kind=DELTA``: its consumer runs on the engine's loop and only appends the new
tokens and their proposal log-probs (``processed_logprobs``: the guided distribution
sampled) to two lists, then wakes the reader on its own loop. The engine samples ahead of
the reader; nothing waits for it.

``next_block(k)`` hands out the next k tokens once the engine has sampled one more (or the
request ended): the logits processor writes log pi_ref(y_t | s_t) and Q(s_t, y_t)/beta of
token t in the record of step t+1 (``engines.base_export``), so the record of the block's
last token is on disk by then, and the block carries its base log-probs and its end's twist
without a scoring pass. Where the export is missing (no exporting processor: MRV2) the
adapter's scoring pass fills them in. ``close()`` cancels the consumer, which makes
``generate`` abort the request.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Any

from decoders.protocols import Block, SamplingParams
from engines.base_export import ExportDir, discard
from engines.vllm_rows import make_block, sampling_params, token_logprob

_ids = itertools.count()


class VllmStream:
    """One request of up to ``max_tokens`` after ``context`` on a ``VllmLM``."""

    def __init__(self, lm: Any, context: Sequence[int], max_tokens: int, seed: int | None,
                 extra: dict | None):
        from vllm import SamplingParams as VSP
        from vllm.sampling_params import RequestOutputKind

        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        lm._check_context(context, 1)
        self.lm, self.context = lm, list(context)
        self.cap = min(max_tokens, lm.max_model_len - len(self.context))
        self.stops = [lm.eos_token_id]
        self.path, more = (lm._export_for(SamplingParams(), self.cap, self.stops, False)
                           if extra is not None else (None, {}))
        sp = sampling_params(VSP, max_tokens=self.cap, seed=seed, logprobs=0, flat_logprobs=True,
                             temperature=1.0, stop_token_ids=self.stops, detokenize=False,
                             extra_args={**(extra or {}), **more} or None,
                             output_kind=RequestOutputKind.DELTA)
        self.guided = extra is not None
        self.tokens: list[int] = []  # appended by the consumer only
        self.prop: list[float] = []
        self.done, self.error, self.read = False, None, 0
        self._changed = asyncio.Event()
        reader = asyncio.get_running_loop()

        def wake() -> None:
            try:
                reader.call_soon_threadsafe(self._changed.set)
            except RuntimeError:  # the reader's loop has closed
                pass

        consume = self._consume(sp, wake)
        self._job = (asyncio.ensure_future(consume) if lm.loop is None
                     else lm.loop.submit(consume))

    @property
    def generated(self) -> int:
        return len(self.tokens)

    async def _consume(self, sp: Any, wake: Any) -> None:
        from vllm.inputs import TokensPrompt

        try:
            async for out in self.lm.engine.generate(TokensPrompt(prompt_token_ids=self.context),
                                                     sp, request_id=f"tilt-s{next(_ids)}"):
                o = out.outputs[0]
                new = list(o.token_ids)
                self.prop.extend(token_logprob(o.logprobs, j, t) for j, t in enumerate(new))
                self.tokens.extend(new)
                wake()
        except Exception as exc:  # noqa: BLE001 - re-raised to the reader
            self.error = exc
        finally:
            self.done = True
            wake()

    async def next_block(self, k: int) -> Block:
        a = self.read
        want = min(a + k, self.cap)
        while not (self.done or len(self.tokens) > want):
            self._changed.clear()
            await self._changed.wait()
        if self.error is not None:
            raise self.error
        b = min(want, len(self.tokens))
        toks, prop = self.tokens[a:b], self.prop[a:b]
        self.read = b
        base, q = list(prop), None
        if self.guided:
            base, q, _ = await exported_logprobs(self.lm, self.context, self.tokens[:b], a,
                                                 self.path, self.stops, self.cap)
        if self.done and b == len(self.tokens) and self.path:
            discard(self.path)
        block = make_block(toks, prop, base, self.lm.eos_token_id)
        if q is not None:
            block.extra["q_over_beta"] = q[: len(block.tokens)]
        return block

    def close(self) -> None:
        """Abort the request if it is still running; its record file goes."""
        if not self.done:
            self._job.cancel()
        if self.path:
            discard(self.path)


async def exported_logprobs(lm: Any, context: Sequence[int], tokens: list[int], start: int,
                            path: str | None, stops: Sequence[int],
                            cap: int) -> tuple[list[float], list[float] | None, float]:
    """(log pi_ref, Q/beta, summed KL) of ``tokens[start:]`` sampled after ``context`` +
    ``tokens[:start]``: from the processor's export file ``path`` (None: no export), with the
    adapter's scoring pass for the base log-probs where the export has none."""
    base, q, kl = (ExportDir.read_span(path, tokens, start, stops, cap) if path
                   else ([math.nan], None, math.nan))
    if any(math.isnan(v) for v in base):
        base = await lm._base_logprobs(list(context) + tokens[:start], tokens[start:])
    return base, q, kl
