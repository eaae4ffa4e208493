"""Value-model state shared by the two vLLM guidance processors (V1 and Model Runner V2).

A guided request carries ``SamplingParams.extra_args = {"tilt_guidance": {"value_model":
name, "beta": beta}}``. The processor keeps one ``GuidedSeq`` per guided request: its value
model, beta, a slot in that model's KV cache and how many context tokens were fed so far.
Each step it feeds only the new tokens (batched over requests, ``LeanLlama.extend``) and adds

    logits[row, :V] += Q_theta(s, .) / beta

to that request's row. Value model paths reach the engine-core process through
``vllm_config.additional_config["tilt_value_models"] = {name: path}``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from engines.lean_llama import LeanLlama
from engines.value_model import ValueModelManifest, q_from_logits

EXTRA_KEY = "tilt_guidance"
CONFIG_KEY = "tilt_value_models"
DTYPE_KEY = "tilt_value_dtype"  # additional_config: the value models' dtype (VALUE_DTYPES)
VALUE_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
                "float16": torch.float16}


def check_value_dtype(name: Any) -> str:
    """``name`` when it is a key of VALUE_DTYPES, else ValueError."""
    if name not in VALUE_DTYPES:
        raise ValueError(f"value_dtype must be one of {', '.join(VALUE_DTYPES)}, got {name!r}")
    return name


def value_dtype(name: str, device: torch.device, model_dtype: torch.dtype | None) -> torch.dtype:
    """The value models' dtype: ``name`` from VALUE_DTYPES; auto = float32 on CPU (exact
    corrections), else the base model's dtype. ValueError for another name."""
    dtype = VALUE_DTYPES[check_value_dtype(name)]
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else (model_dtype or torch.float32)
    return dtype


def guidance_extra_args(value_model: str, beta: float) -> dict[str, Any]:
    """The ``extra_args`` a request needs to be guided by ``value_model`` at ``beta``."""
    return {EXTRA_KEY: {"value_model": value_model, "beta": float(beta)}}


def extra_entry(params: Any, key: str, shape: str, text_field: str) -> dict | None:
    """``params.extra_args[key]`` (a dict with a string ``text_field``), None when absent.

    Raises ValueError for a malformed entry (vLLM maps it to a validation error)."""
    entry = (getattr(params, "extra_args", None) or {}).get(key)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get(text_field), str):
        raise ValueError(f"extra_args[{key!r}] must be {shape}")
    return entry


def parse_guidance(params: Any) -> tuple[str, float] | None:
    """(value model name, beta) from a request's SamplingParams, or None when unguided."""
    g = extra_entry(params, EXTRA_KEY, "{'value_model': str, 'beta': float}", "value_model")
    if g is None:
        return None
    beta = g.get("beta")
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"guidance beta must be a finite number > 0, got {beta!r}")
    return g["value_model"], float(beta)


@dataclass
class GuidedSeq:
    model: str
    beta: float
    slot: int
    fed: int = 0  # context tokens already in the slot's KV cache
    last: torch.Tensor | None = field(default=None, repr=False)  # last Q/beta row
    tokens: list[int] = field(default_factory=list, repr=False)  # those fed tokens


class GuidanceRuntime:
    """Loaded value models (lean Llama forwards) and the per-request incremental state.

    A request's slot is fed only the tokens it gained since its last step. A request fed from
    scratch first copies the longest prefix of its context that a live request of the same
    model holds (a resampled particle's copy, the n-th sample of a prompt, the next turn of a
    chat), then feeds the rest; identical contexts fed from scratch in one step run once."""

    def __init__(self, value_models: dict[str, str], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.device = torch.device(device)
        self.models: dict[str, LeanLlama] = {}
        self.atoms: dict[str, torch.Tensor | None] = {}
        self.vocab: dict[str, int] = {}
        self.live: dict[str, dict[int, GuidedSeq]] = {}  # per model: slot -> its request
        for name, path in (value_models or {}).items():
            manifest = ValueModelManifest.read(path)
            self.models[name] = LeanLlama(path, device=self.device, dtype=dtype)
            self.vocab[name] = manifest.vocab_size
            self.atoms[name] = (None if manifest.atoms is None else
                                torch.tensor(manifest.atoms, dtype=torch.float32, device=self.device))

    @classmethod
    def from_vllm_config(cls, vllm_config: Any, device: str | torch.device) -> GuidanceRuntime:
        extra = getattr(vllm_config, "additional_config", None) or {}
        extra = extra if isinstance(extra, dict) else {}
        model_dtype = getattr(getattr(vllm_config, "model_config", None), "dtype", None)
        dtype = value_dtype(str(extra.get(DTYPE_KEY, "auto")), torch.device(device),
                            model_dtype if isinstance(model_dtype, torch.dtype) else None)
        return cls(dict(extra.get(CONFIG_KEY) or {}), device, dtype)

    def start(self, name: str, beta: float) -> GuidedSeq | None:
        """State for a new guided request; None (request left unguided) for an unknown name —
        the engine adapter rejects those before they reach the batch."""
        model = self.models.get(name)
        if model is None:
            return None
        seq = GuidedSeq(model=name, beta=beta, slot=model.alloc())
        self.live.setdefault(name, {})[seq.slot] = seq
        return seq

    def stop(self, seq: GuidedSeq) -> None:
        self.live.get(seq.model, {}).pop(seq.slot, None)
        self.models[seq.model].free(seq.slot)

    def _share_prefix(self, seq: GuidedSeq, context: list[int], fresh: set[int]) -> int:
        """For a request fed from scratch: copy the longest prefix of ``context`` that another
        live request of the same model has in its cache (not one fed from scratch in this
        step), leaving at least the last token to feed; the length copied (0: none)."""
        best, src = 0, None
        for other in self.live.get(seq.model, {}).values():
            if other is seq or other.slot in fresh or not other.tokens or \
                    other.tokens[0] != context[0]:
                continue
            n = min(len(other.tokens), len(context) - 1)
            if n <= best:
                continue
            k = len(os.path.commonprefix([other.tokens[:n], context[:n]]))
            if k > best:
                best, src = k, other
        if src is not None:
            self.models[seq.model].copy_slot(src.slot, seq.slot, best)
        return best

    def corrections(self, seqs: Sequence[GuidedSeq],
                    new_tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Q(s, .)/beta for each request after appending its ``new_tokens`` (fp32 [n, V]).

        ``new_tokens[i]`` are the context tokens from position ``seqs[i].fed`` on; empty
        means "same context as last step" (the previous row is reused)."""
        vocab = max(self.vocab[s.model] for s in seqs)
        new_tokens = [list(t) for t in new_tokens]
        for s in seqs:  # fed from scratch (new, or rewound)
            if s.fed == 0:
                s.tokens = []
        fresh = {s.slot for s in seqs if s.fed == 0}
        for i, s in enumerate(seqs):  # a prefix in another request's cache is copied
            if s.fed == 0 and len(new_tokens[i]) > 1:
                k = self._share_prefix(s, new_tokens[i], fresh)
                if k:
                    s.fed, s.tokens, new_tokens[i] = k, new_tokens[i][:k], new_tokens[i][k:]
        out = torch.zeros(len(seqs), vocab, device=self.device, dtype=torch.float32)
        by_model: dict[str, list[int]] = {}
        for i, (s, toks) in enumerate(zip(seqs, new_tokens, strict=True)):
            if len(toks) == 0 and s.last is not None:
                out[i, : s.last.numel()] = s.last
            else:
                by_model.setdefault(s.model, []).append(i)
        for name, idx in by_model.items():
            model = self.models[name]
            # Identical contexts fed from scratch in one step (n samples of a prompt, particles
            # copied by resampling) run through the value model once; the copies get its cache.
            row, uniq, first, copies = [], [], {}, []
            for i in idx:
                key = tuple(new_tokens[i]) if seqs[i].fed == 0 else None
                if key is not None and key in first:
                    row.append(first[key])
                    copies.append((uniq[first[key]], i))
                    continue
                if key is not None:
                    first[key] = len(uniq)
                row.append(len(uniq))
                uniq.append(i)
            logits = model.extend([seqs[i].slot for i in uniq], [seqs[i].fed for i in uniq],
                                  [new_tokens[i] for i in uniq])
            for lead, i in copies:
                model.copy_slot(seqs[lead].slot, seqs[i].slot, len(new_tokens[i]))
            beta = torch.tensor([seqs[i].beta for i in idx], device=self.device)
            corr = q_from_logits(logits[row], beta, self.atoms[name]) / beta[:, None]
            v = self.vocab[name]
            out[idx, :v] = corr
            for j, i in enumerate(idx):
                seqs[i].fed += len(new_tokens[i])
                seqs[i].tokens.extend(new_tokens[i])
                seqs[i].last = corr[j]
        return out


def context_tail(prompt: Sequence[int], output: Sequence[int], fed: int) -> list[int]:
    """(prompt + output)[fed:] without concatenating the whole context."""
    if fed >= len(prompt):
        return list(output[fed - len(prompt):])
    return list(prompt[fed:]) + list(output)
