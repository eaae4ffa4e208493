"""Reading vLLM's per-request containers, and building its ``SamplingParams``: the small
translations the vLLM adapter (``engines.vllm_engine``) needs.

    sampling_params(SamplingParams, **kw)  vLLM's client errors (out of range) -> ValueError
    row_from_flat(flat, position, V)       full-vocabulary log-prob row, float64 [V]
                                           (-inf where absent)
    token_logprob(flat, position, y)       one token's log-prob at a position
    make_block(tokens, prop, base, eos)    a ``Block``, a final EOS moved to its eos_* fields
    sampler_fields(params, cap, eos)       vLLM ``SamplingParams`` keywords of Tilt's params
"""

from __future__ import annotations

from typing import Any

import torch

from decoders.protocols import Block, SamplingParams


def sampling_params(cls: Any, **kw: Any) -> Any:
    """vLLM ``SamplingParams(**kw)``; what vLLM rejects as the client's error (a value out of
    its range) is a ValueError, which the server answers with 400."""
    from vllm.exceptions import VLLMClientError

    try:
        return cls(**kw)
    except VLLMClientError as exc:
        raise ValueError(f"vLLM rejected the sampling parameters: {exc}") from exc


def row_from_flat(flat: Any, position: int, vocab: int) -> torch.Tensor:
    """Full-vocabulary log-prob row at ``position`` of a (Flat)Logprobs container."""
    row = torch.full((vocab,), float("-inf"), dtype=torch.float64)
    if hasattr(flat, "start_indices"):
        s, e = flat.start_indices[position], flat.end_indices[position]
        row[torch.tensor(flat.token_ids[s:e])] = torch.tensor(flat.logprobs[s:e],
                                                              dtype=torch.float64)
    else:
        d = flat[position]
        row[torch.tensor(list(d.keys()))] = torch.tensor([lp.logprob for lp in d.values()],
                                                         dtype=torch.float64)
    return row


def token_logprob(flat: Any, position: int, token: int) -> float:
    """log-prob of ``token`` at ``position`` of a (Flat)Logprobs container."""
    if hasattr(flat, "start_indices"):
        s, e = flat.start_indices[position], flat.end_indices[position]
        for t, lp in zip(flat.token_ids[s:e], flat.logprobs[s:e], strict=True):
            if t == token:
                return float(lp)
        raise KeyError(f"token {token} missing from logprobs at position {position}")
    return float(flat[position][token].logprob)


def make_block(toks: list[int], prop: list[float], base: list[float], eos: int | None) -> Block:
    """A Block; a final EOS leaves ``tokens`` and its log-probs go to the eos_* fields
    (``eos=None``: EOS does not end a sequence, it stays in ``tokens``)."""
    base = base + [float("nan")] * (len(toks) - len(base))
    if toks and eos is not None and toks[-1] == eos:
        return Block(tokens=toks[:-1], proposal_logprobs=prop[:-1], base_logprobs=base[:-1],
                     finished=True, eos_proposal_logprob=prop[-1], eos_base_logprob=base[-1])
    return Block(tokens=toks, proposal_logprobs=prop, base_logprobs=base, finished=False)


def stop_ids(params: SamplingParams, eos: int) -> list[int]:
    """The ids that end a sequence: the stop ids, and EOS unless ``ignore_eos``."""
    return list(params.stop_token_ids) + ([] if params.ignore_eos else [eos])


def sampler_fields(params: SamplingParams, cap: int, eos: int) -> dict[str, Any]:
    """vLLM ``SamplingParams`` keywords of ``params``: shaping, penalties, bias, stops.
    EOS stops a sequence unless ``ignore_eos``; vLLM then keeps sampling past an EOS."""
    return dict(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                min_p=params.min_p, repetition_penalty=params.repetition_penalty,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                logit_bias=dict(params.logit_bias) if params.logit_bias else None,
                min_tokens=min(params.min_tokens, cap), ignore_eos=params.ignore_eos,
                stop=list(params.stop) or None, stop_token_ids=stop_ids(params, eos),
                detokenize=bool(params.stop))
