"""Step policies and multi-token sampling: native ``BlockSampler`` or a token loop.

The step policy of every sampler here is

    log q(. | s) = log_softmax( shape( l_ref(s, .) + Q(s, .) / beta ) )

with Q = 0 when there is no value model, and ``shape`` = temperature, then top-k, then top-p
(OpenAI semantics). A row whose guided logits are all -inf (a dead end of an approximate
value model) falls back to the base row, so sampling never produces NaNs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence

import torch

from decoders.protocols import (
    Block,
    Context,
    Guidance,
    LanguageModel,
    OnTokens,
    SamplingParams,
    StopAt,
    ValueModel,
)

NEG_INF = float("-inf")
PLAIN = SamplingParams()


def guided_logits(base: torch.Tensor, q: torch.Tensor | None, beta: float) -> torch.Tensor:
    """l_ref + Q / beta (just l_ref without Q); -inf stays -inf."""
    if q is None:
        return base
    q = q.to(base.dtype)
    return torch.where(torch.isneginf(base) | torch.isneginf(q), torch.full_like(base, NEG_INF),
                       base + q / beta)


def shape_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then keep the top_k largest, then the smallest nucleus of mass >= top_p."""
    out = logits / params.temperature
    if params.top_k and params.top_k < out.shape[-1]:
        kth = torch.topk(out, params.top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, NEG_INF)
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, NEG_INF)
    return out


def log_normalise(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax that maps an all -inf row to all -inf (not NaN)."""
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    return torch.where(torch.isneginf(lse), torch.full_like(logits, NEG_INF), logits - lse)


def step_policy(base: torch.Tensor, q: torch.Tensor | None, beta: float,
                params: SamplingParams = PLAIN) -> torch.Tensor:
    """log q(. | s) of the guided, shaped policy; dead guided rows fall back to the base row."""
    guided = shape_logits(guided_logits(base, q, beta), params)
    dead = torch.isneginf(torch.logsumexp(guided, dim=-1, keepdim=True))
    if bool(dead.any()):
        guided = torch.where(dead, shape_logits(base, params), guided)
    return log_normalise(guided)


def step_kl(log_q: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Exact per-step KL(q || pi_ref) = sum_a q(a) (log q(a) - log pi_ref(a)) per row."""
    live = ~torch.isneginf(log_q)
    diff = torch.where(live, log_q - base, torch.zeros_like(log_q))
    return (log_q.exp() * diff).sum(-1)


def draw(log_q: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from log-normalised rows."""
    return torch.multinomial(log_q.exp(), 1, generator=generator).squeeze(1)


def seeds_from(generator: torch.Generator, n: int) -> list[int]:
    """Per-context integer seeds for an engine, derived from the call's generator."""
    return [int(s) for s in torch.randint(0, 2**31 - 1, (n,), generator=generator)]


Step = Callable[[list[int], list[list[int]]], Awaitable[Sequence[int]]]


async def sample_tokens(step: Step, caps: Sequence[int], eos: int) -> tuple[list[list[int]], list[bool]]:
    """The token loop every sampler shares (``token_loop`` here; training's rollouts and
    on-policy episodes). Rows with a cap > 0 start live; each round ``await step(live, tokens)``
    draws one token for every live row, in ``live`` order, given the tokens so far. EOS ends a
    row as finished (it is not appended); another token is appended, and a row stops at ``cap``
    tokens (EOS is forced there, not sampled). Returns (tokens, finished) per row."""
    tokens: list[list[int]] = [[] for _ in caps]
    finished = [False] * len(caps)
    live = [i for i, cap in enumerate(caps) if cap > 0]
    while live:
        still = []
        for i, a in zip(live, await step(live, tokens), strict=True):
            if a == eos:
                finished[i] = True
            else:
                tokens[i].append(int(a))
                if len(tokens[i]) < caps[i]:
                    still.append(i)
        live = still
    return tokens, finished


async def token_loop(lm: LanguageModel, contexts: Sequence[Context], max_tokens: int | Sequence[int],
                     generator: torch.Generator, params: SamplingParams = PLAIN,
                     value: ValueModel | None = None, beta: float = 1.0,
                     on_tokens: OnTokens | None = None) -> list[Block]:
    """Sample up to max_tokens after each context with one batched lm call per step."""
    unsupported = [f for f in params.extended() if f not in ("stop", "stop_token_ids")]
    if unsupported:  # stops are cut afterwards (server.postprocess, the particle samplers)
        raise ValueError(f"the token loop does not apply {', '.join(unsupported)}")
    n = len(contexts)
    caps = [int(max_tokens)] * n if isinstance(max_tokens, int) else [int(m) for m in max_tokens]
    ctx = [list(map(int, c)) for c in contexts]
    blocks = [Block([], [], [], False, {"kl": 0.0, "q_over_beta": []}) for _ in range(n)]
    eos = int(lm.eos_token_id)

    async def step(live: list[int], _tokens: list[list[int]]) -> list[int]:
        states = [ctx[i] for i in live]
        base = (await lm.logprobs(states)).to(torch.float64)
        q = None if value is None else await value.q_values(states, beta)
        log_q = step_policy(base, q, beta, params)
        tok = draw(log_q, generator)
        kl = step_kl(log_q, base)
        rows = torch.arange(len(live))
        drawn, lq_tok, lb_tok = tok.tolist(), log_q[rows, tok].tolist(), base[rows, tok].tolist()
        q_tok = [math.nan] * len(live) if q is None else (
            torch.as_tensor(q, dtype=torch.float64)[rows, tok] / beta).tolist()
        emitted: list[tuple[int, list[int]]] = []
        for i, a, lq, lb, k, qt in zip(live, drawn, lq_tok, lb_tok, kl.tolist(), q_tok,
                                        strict=True):
            b = blocks[i]
            b.extra["kl"] += k
            if a == eos:
                b.eos_proposal_logprob, b.eos_base_logprob = lq, lb
                continue
            b.proposal_logprobs.append(lq)
            b.base_logprobs.append(lb)
            b.extra["q_over_beta"].append(qt)
            ctx[i].append(a)
            emitted.append((i, [a]))
        if on_tokens is not None and emitted:
            await asyncio.gather(*(on_tokens(i, toks) for i, toks in emitted))
        return drawn

    tokens, finished = await sample_tokens(step, caps, eos)
    for b, toks, fin in zip(blocks, tokens, finished, strict=True):
        b.tokens, b.finished = toks, fin
    return blocks


def can_sample_natively(lm: LanguageModel, value: ValueModel | None) -> bool:
    """Native when the engine samples blocks and the guidance (if any) is engine-native."""
    return hasattr(lm, "sample_blocks") and (value is None or hasattr(value, "native_name"))


async def sample_blocks(lm: LanguageModel, contexts: Sequence[Context], max_tokens: int | Sequence[int],
                        generator: torch.Generator, params: SamplingParams = PLAIN,
                        value: ValueModel | None = None, beta: float = 1.0,
                        on_tokens: OnTokens | None = None) -> list[Block]:
    """``lm.sample_blocks`` when possible (guidance by ``value.native_name``), else ``token_loop``."""
    if not can_sample_natively(lm, value):
        return await token_loop(lm, contexts, max_tokens, generator, params, value, beta, on_tokens)
    guidance = None if value is None else Guidance(value.native_name, beta)  # type: ignore[attr-defined]
    caps = [int(max_tokens)] * len(contexts) if isinstance(max_tokens, int) else list(max_tokens)
    seeds = seeds_from(generator, len(contexts))
    out: list[Block | None] = [None] * len(contexts)

    async def run(cap: int, idx: list[int]) -> None:
        hook = None
        if on_tokens is not None:
            async def hook(j: int, toks: list[int]) -> None:
                await on_tokens(idx[j], toks)
        if cap <= 0:
            blocks = [Block([], [], [], False) for _ in idx]
        else:
            blocks = await lm.sample_blocks([contexts[i] for i in idx], cap, params,  # type: ignore[attr-defined]
                                            [seeds[i] for i in idx], guidance, hook)
        for i, b in zip(idx, blocks, strict=True):
            out[i] = b

    groups: dict[int, list[int]] = {}
    for i, cap in enumerate(caps):
        groups.setdefault(cap, []).append(i)
    await asyncio.gather(*(run(cap, idx) for cap, idx in groups.items()))
    return out  # type: ignore[return-value]


def stop_blocks(blocks: Sequence[Block], stop_at: StopAt | None,
                before: Sequence[Sequence[int]] | None = None) -> tuple[list[Block], list[bool]]:
    """Each block cut where ``stop_at`` says a stop ends ``before[i] + block`` (the stop's
    last token kept; the block is then not finished by EOS), and whether it stopped."""
    if stop_at is None:
        return list(blocks), [False] * len(blocks)
    out, stopped = [], []
    for i, b in enumerate(blocks):
        pre = list(before[i]) if before is not None else []
        k = stop_at(pre + list(b.tokens))
        if k is None:
            out.append(b)
            stopped.append(False)
            continue
        j = max(k - len(pre), 0)
        q = b.extra.get("q_over_beta")
        out.append(Block(list(b.tokens[:j]), list(b.proposal_logprobs[:j]),
                         list(b.base_logprobs[:j]), finished=False,
                         extra={} if q is None else {"q_over_beta": list(q[:j])}))
        stopped.append(True)
    return out, stopped


def stop_params(params: SamplingParams, stop: Sequence[str],
                stop_ids: Sequence[int]) -> SamplingParams:
    """``params`` with the stops added (so an engine that stops natively ends early)."""
    from dataclasses import replace

    return replace(params, stop=tuple(stop), stop_token_ids=tuple(stop_ids))
