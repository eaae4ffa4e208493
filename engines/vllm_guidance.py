"""Learned soft-value guidance inside vLLM's sampler: the V1 logits-processor interface.

For every batch row whose request asks for guidance (``extra_args["tilt_guidance"]``),

    logits[row] += Q_theta(s, .) / beta          (before temperature and top-k/top-p)

so vLLM samples from softmax((l_ref + Q/beta) / T) and, with
``logprobs_mode="processed_logprobs"``, returns exactly those log-probs. Unguided rows in the
same batch are untouched. The value model runs batched over the guided rows with one KV-cache
slot per request (``engines.guidance_state``): each step feeds only the tokens gained since
the previous step.

Requests that ask for it (``extra_args["tilt_export"]``, guided or not) also get the base
log-probs of their sampled tokens written out from the row before guidance
(``engines.base_export``), so the adapter needs no scoring pass.

This is the processor of vLLM's V1 model runner (the CPU build's runner); the Model Runner V2
one (the GPU default) is ``engines.vllm_guidance_mrv2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from engines.base_export import ExportWriter, parse_export
from engines.guidance_state import GuidanceRuntime, GuidedSeq, context_tail, parse_guidance


@dataclass
class _Entry:
    seq: GuidedSeq | None  # None: not guided (only exported)
    prompt: list[int]
    output: list[int]  # live reference to the request's output tokens
    export: ExportWriter | None = None


class TiltGuidanceLogitsProcessor(LogitsProcessor):
    """Adds Q_theta/beta to the rows of guided requests (V1 interface)."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_guidance(sampling_params)
        parse_export(sampling_params)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self.runtime = GuidanceRuntime.from_vllm_config(vllm_config, device)
        self.entries: dict[int, _Entry] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def _drop(self, index: int) -> None:
        entry = self.entries.pop(index, None)
        if entry is not None:
            self._release(entry)

    def _release(self, entry: _Entry) -> None:
        if entry.seq is not None:
            self.runtime.stop(entry.seq)
        if entry.export is not None:
            entry.export.close()

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Apply removals, additions, then moves (the order vLLM specifies)."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._drop(index)
        for index, params, prompt_ids, output_ids in batch_update.added:
            self._drop(index)
            g, x = parse_guidance(params), parse_export(params)
            if (g is None and x is None) or prompt_ids is None:
                continue
            seq = None if g is None else self.runtime.start(*g)
            if seq is not None or x is not None:
                self.entries[index] = _Entry(seq, list(prompt_ids), output_ids,
                                             None if x is None else ExportWriter(*x))
        for a, b, direction in batch_update.moved:
            ea, eb = self.entries.pop(a, None), self.entries.pop(b, None)
            if direction == MoveDirectionality.SWAP:
                if ea is not None:
                    self.entries[b] = ea
                if eb is not None:
                    self.entries[a] = eb
            else:
                if eb is not None:
                    self._release(eb)
                if ea is not None:
                    self.entries[b] = ea

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.entries:
            return logits
        live = {i: e for i, e in self.entries.items() if i < logits.shape[0]}
        exported = [i for i, e in live.items() if e.export is not None]
        # log pi_ref from the rows before guidance; written once this step's Q/beta is known
        base = torch.log_softmax(logits[exported].float(), dim=-1) if exported else None
        self._guide(logits, live)
        kls = self._step_kl(logits, base, [live[i] for i in exported], exported)
        for j, i in enumerate(exported):
            e = live[i]
            t = len(e.output)
            newest = int(e.output[-1]) if t else -1
            e.export.step(t, newest if newest >= 0 else None, base[j],
                          None if e.seq is None else e.seq.last, kls[j])
        return logits

    @staticmethod
    def _step_kl(logits: torch.Tensor, base: torch.Tensor | None, entries: list[_Entry],
                 rows: list[int]) -> list[float]:
        """KL(q || pi_ref) of this step, q = softmax(guided row), where the entry asks."""
        out = [math.nan] * len(rows)
        want = [j for j, e in enumerate(entries) if e.export.kl]
        if want:
            lq = torch.log_softmax(logits[[rows[j] for j in want]].float(), dim=-1)
            kl = (lq.exp() * (lq - base[want])).nan_to_num(0.0).sum(-1).clamp_min(0.0)
            for j, v in zip(want, kl.tolist(), strict=True):
                out[j] = v
        return out

    def _guide(self, logits: torch.Tensor, live: dict[int, _Entry]) -> torch.Tensor:
        rows, seqs, news = [], [], []
        for index, e in live.items():
            if e.seq is None:
                continue
            total = len(e.prompt) + len(e.output)
            if total < e.seq.fed:  # context rewound (should not happen): recompute
                e.seq.fed, e.seq.last = 0, None
            rows.append(index)
            seqs.append(e.seq)
            news.append(context_tail(e.prompt, e.output, e.seq.fed))
        if not rows:
            return logits
        corr = self.runtime.corrections(seqs, news).to(logits.dtype)
        idx = torch.tensor(rows, device=logits.device)
        logits[idx, : corr.shape[1]] += corr.to(logits.device)
        return logits
