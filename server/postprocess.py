"""From the sampler's ``Sample``s to the server's ``Choice``s: stop strings and stop token ids
cut the text, the diagnostics are gathered, log pi_ref of every returned token is added
when asked for.

    choices = await finish(state, plan, [(index, sample), ...])   # and counted in metrics

Log-probs are those of the base model (one batched ``lm.logprobs`` over every prefix), so
they are comparable across methods. A completion that ended because the model sampled EOS
has that EOS as its last log-prob entry (as vLLM's server does), though neither its text nor
``token_ids`` hold it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from decoders.results import Sample
from server.engine_state import EngineState
from server.plan import Plan
from server.schemas import TiltDiagnostics

TokenLogprobs = list[tuple[float, list[tuple[int, float]]]]  # (log p(token), top-k (id, lp))


@dataclass
class Choice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    tilt: TiltDiagnostics
    logprobs: TokenLogprobs | None = None
    eos_token_id: int | None = None  # set when the model sampled EOS to end the completion

    @property
    def sampled_ids(self) -> list[int]:
        """The tokens the model sampled: ``token_ids`` plus the final EOS if there was one
        (what log-probs and usage count)."""
        return self.token_ids + ([self.eos_token_id] if self.eos_token_id is not None else [])


def finite(x: float | None) -> float | None:
    """JSON has no inf/nan: non-finite numbers are reported as null."""
    return None if x is None or not math.isfinite(x) else float(x)


def truncate_at_stop(codec: Any, tokens: list[int], stops: list[str],
                     stop_ids: tuple[int, ...] = ()) -> tuple[str, int, bool]:
    """(text, kept token count, stopped): cut the text before the first stop string and
    keep the tokens up to the one that completed it. A stop token id ends the tokens there
    (kept) and its text is left out, as vLLM does."""
    at = next((i for i, t in enumerate(tokens) if t in stop_ids), None) if stop_ids else None
    if at is not None:
        text, k, stopped = truncate_at_stop(codec, tokens[:at], stops)
        return (text, k, True) if stopped else (text, at + 1, True)
    text = codec.decode(tokens)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return text, len(tokens), False
    cut = min(hits)
    k = next(k for k in range(1, len(tokens) + 1)
             if any(s in codec.decode(tokens[:k]) for s in stops))
    return text[:cut], k, True


def diagnostics(sample: Sample, plan: Plan) -> TiltDiagnostics:
    p = sample.particle
    guided = plan.spec.method != "none"
    return TiltDiagnostics(
        method=plan.spec.method, beta=plan.spec.beta if guided else None,
        value_model=plan.value_name, reward_name=plan.reward_name,
        reward=finite(sample.reward), log_weight=finite(sample.log_weight),
        kl_to_base=finite(sample.kl_to_base), base_logprob=finite(sample.base_logprob),
        particles=p.particles if p else None,
        ess=finite(p.ess_trace[-1]) if p and p.ess_trace else None,
        ess_trace=[float(x) for x in p.ess_trace] if p else None,
        log_z_hat=finite(p.log_z_hat) if p else None,
        resamples=p.resamples if p else None,
        all_dead=p.all_dead if p else None, survivors=p.survivors if p else None)


def to_choice(codec: Any, index: int, sample: Sample, plan: Plan) -> Choice:
    text, k, stopped = truncate_at_stop(codec, list(sample.tokens), plan.stop,
                                        plan.stop_token_ids)
    reason = "stop" if stopped or sample.finished else "length"
    eos = codec.eos_token_id if sample.finished and not stopped else None
    return Choice(index, text, list(sample.tokens[:k]), reason, diagnostics(sample, plan),
                  eos_token_id=eos)


def stop_at(codec: Any, plan: Plan) -> Any:
    """``tokens -> kept length`` when a stop of ``plan`` ends ``tokens`` early, else None
    (what particle samplers truncate at); None when the plan has no stops."""
    if not plan.stop and not plan.stop_token_ids:
        return None

    def at(tokens: list[int]) -> int | None:
        _, k, stopped = truncate_at_stop(codec, list(tokens), plan.stop, plan.stop_token_ids)
        return k if stopped else None

    return at


async def add_logprobs(lm: Any, prompt_ids: list[int], choices: list[Choice], k: int) -> None:
    """Per-token log pi_ref(token | prefix) and the top-k alternatives, from one batched
    ``lm.logprobs`` call over every prefix of every choice."""
    contexts = [prompt_ids + c.token_ids[:i] for c in choices for i in range(len(c.sampled_ids))]
    if not contexts:
        for c in choices:
            c.logprobs = []
        return
    rows = await lm.logprobs(contexts)
    at = 0
    for c in choices:
        entries = []
        for tok in c.sampled_ids:
            row = rows[at].to(torch.float64)
            at += 1
            top = torch.topk(row, k) if k > 0 else None
            alts = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)] \
                if top else []
            entries.append((float(row[tok]), alts))
        c.logprobs = entries


async def finish(state: EngineState, plan: Plan,
                 samples: list[tuple[int, Sample]]) -> list[Choice]:
    """The choices of (index, sample) pairs, counted in the metrics, with log-probs if the
    plan asks for them."""
    codec = state.handle.codec
    choices = [to_choice(codec, i, s, plan) for i, s in samples]
    for choice, (_, sample) in zip(choices, samples, strict=True):
        state.metrics.choice_finished(plan.spec.method, choice.finish_reason,
                                      len(choice.token_ids), sample)
    if plan.logprobs is not None:
        await add_logprobs(state.handle.lm, plan.prompt_ids, choices, plan.logprobs)
    return choices
