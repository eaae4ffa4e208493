"""vLLM's sampler fields in a request: their values checked, and what each method does.

    kwargs = sampling_fields(req, method, max_tokens, lm, value)   # -> GuidanceSpec kwargs

    field                 none / token                      smc, importance, best_of_n, blockwise
    stop, stop_token_ids  the engine stops there (vLLM);    the target is over sequences
                          other engines cut afterwards      truncated at the first stop
    min_p, repetition_penalty, presence_penalty, frequency_penalty, logit_bias
                          vLLM's own meaning (native)       400: they change the proposal
    min_tokens, ignore_eos
                          vLLM's own meaning (native)       400: they change the target

A stop ends a sequence at the token that completes a stop string or is a stop id; the text
is cut before the stop (as OpenAI and vLLM do), the token ids keep that token, and
``finish_reason`` is "stop". For particle methods that truncated sequence is the completion
y the reward scores and the weights see (log pi_ref(y) is that of the prefix), so the target
is pi*(y) ∝ pi_ref(y) exp(R(x, y) / beta) over sequences that end at EOS, a stop, or
max_tokens. The fields marked native need an engine that applies them in its sampler (the
engine's ``lm.sampling_fields``; for ``token``, a value model that runs inside it).
"""

from __future__ import annotations

import math
from typing import Any

from decoders.methods import method_info
from server.errors import BadRequest

PROPOSAL = ("min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
            "logit_bias")
LENGTH = ("min_tokens", "ignore_eos")
_DEFAULTS: dict[str, Any] = {"min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                             "frequency_penalty": 0.0, "logit_bias": None, "min_tokens": 0,
                             "ignore_eos": False}

_WHY = {
    "smc": "smc proposes from softmax(l_ref + Q/beta) at temperature 1 so that its weights "
           "pi_ref/q are exact",
    "importance": "importance proposes from the untruncated base so that its weights are "
                  "exp(R/beta)",
    "best_of_n": "best_of_n's draws and its kl_to_base bound are those of the base model",
    "blockwise": "blockwise's candidates and its kl_to_base bound are those of the base model",
}


def _refuse(field: str, method: str, why: str) -> BadRequest:
    return BadRequest(f"field {field!r} is not supported with method {method}: {why}", field)


def _logit_bias(raw: dict[str, float] | None, vocab: int) -> dict[int, float] | None:
    if not raw:
        return None
    out: dict[int, float] = {}
    for key, bias in raw.items():
        try:
            tok = int(key)
        except ValueError:
            raise BadRequest(f"'logit_bias' keys must be token ids (integers as strings), "
                             f"got {key!r}", "logit_bias") from None
        if not 0 <= tok < vocab:
            raise BadRequest(f"'logit_bias' token id {tok} is outside [0, {vocab})",
                             "logit_bias")
        if not (math.isfinite(bias) and -100 <= bias <= 100):
            raise BadRequest(f"'logit_bias' of token {tok} is {bias}; biases must lie in "
                             "[-100, 100]", "logit_bias")
        out[tok] = float(bias)
    return out


def _stop_token_ids(ids: list[int] | None, vocab: int) -> tuple[int, ...]:
    bad = [t for t in ids or [] if not 0 <= t < vocab]
    if bad:
        raise BadRequest(f"'stop_token_ids' holds ids outside [0, {vocab}): {bad[:5]}",
                         "stop_token_ids")
    return tuple(dict.fromkeys(ids or []))


def sampling_fields(req: Any, method: str, max_tokens: int, lm: Any,
                    value: Any = None) -> dict[str, Any]:
    """The GuidanceSpec keywords of ``req``'s sampler fields; BadRequest naming the field for
    a bad value or a field ``method`` (or this engine) cannot honour, saying why."""
    vocab = int(lm.vocab_size)
    given = {f: getattr(req, f) for f in (*PROPOSAL, *LENGTH)
             if getattr(req, f) is not None and getattr(req, f) != _DEFAULTS[f]
             and not (f == "logit_bias" and not req.logit_bias)}
    if req.min_tokens > max_tokens:
        raise BadRequest(f"'min_tokens' is {req.min_tokens}, over max_tokens={max_tokens}",
                         "min_tokens")
    bias = _logit_bias(req.logit_bias, vocab)
    stop_ids = _stop_token_ids(req.stop_token_ids, vocab)
    info = method_info(method)
    if info.particles or info.needs_reward:  # the particle and selection methods
        for f in given:
            why = _WHY.get(method, "it changes the proposal")
            if f in PROPOSAL:
                why += f"; {f} would change the proposal without a weight correction"
            else:
                why += (f"; {f} would change which lengths the target covers (EOS ends a "
                        "sequence of pi*)")
            raise _refuse(f, method, why)
    else:
        native = getattr(lm, "sampling_fields", frozenset())
        if method == "token" and value is not None and not hasattr(value, "native_name"):
            native = frozenset()
        for f in given:
            if f not in native:
                raise _refuse(f, method, "it needs an engine that applies it in its own "
                              "sampler (vLLM, with a value model that runs inside it)")
    kw: dict[str, Any] = {f: getattr(req, f) for f in given if f != "logit_bias"}
    return {**kw, "logit_bias": bias, "stop_token_ids": stop_ids}
