"""Learned soft-value guidance for vLLM's Model Runner V2 (the GPU default since ~0.30).

Same maths and value-model state as ``engines.vllm_guidance`` (shared code in
``engines.guidance_state``); only the bookkeeping differs:

- state is keyed by the persistent request *slot*; ``add_request(slot, params)`` (re)initialises
  it (slots are recycled: the previous occupant's value-model cache slot is released);
- ``apply(logits, ctx)`` sees rows in this step's order: row r belongs to slot
  ``ctx.expanded_idx_mapping[r]``, sits at sequence position ``ctx.pos[r]`` and was fed token
  ``ctx.input_ids[r]``. The context of row r is
  ``all_token_ids[slot, :pos] + [input_ids[r]]``; only the part after what the value model
  already holds (``GuidedSeq.fed``) is fed, then ``logits[r] += Q/beta``.

Speculative decoding (several rows per request) is not supported with guidance: the
constructor refuses a speculative config.

Tested here on CPU with small fakes of ``req_states`` / ``ctx`` (tests/engines/test_mrv2.py):
state handling, slot recycling, row reordering. The GPU path itself (real ``StagedWriteTensor``
buffers, CUDA tensors, ``.tolist()`` syncs once per step) is untested on this machine.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

from engines.guidance_state import GuidanceRuntime, GuidedSeq, parse_guidance


class TiltGuidanceLogitsProcessorV2(LogitsProcessor):
    """Adds Q_theta/beta to the rows of guided requests (Model Runner V2 interface)."""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        parse_guidance(sampling_params)

    def __init__(self, vllm_config: Any, req_states: Any):
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError("Tilt guidance does not support speculative decoding")
        self.req_states = req_states
        self.runtime = GuidanceRuntime.from_vllm_config(vllm_config, req_states.device)
        self.slots: dict[int, GuidedSeq] = {}

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        old = self.slots.pop(req_idx, None)
        if old is not None:
            self.runtime.stop(old)
        g = parse_guidance(sampling_params)
        if g is None:
            return False
        seq = self.runtime.start(*g)
        if seq is None:
            return False
        self.slots[req_idx] = seq
        return True

    def apply(self, logits: torch.Tensor, ctx: Any) -> torch.Tensor:
        if not self.slots:
            return logits
        mapping = ctx.expanded_idx_mapping.tolist()
        rows = [r for r, slot in enumerate(mapping) if slot in self.slots]
        if not rows:
            return logits
        pos, inp = ctx.pos.tolist(), ctx.input_ids.tolist()  # one device sync each
        tokens = self.req_states.all_token_ids.gpu
        seqs, news = [], []
        for r in rows:
            seq = self.slots[mapping[r]]
            p = int(pos[r])
            if p + 1 < seq.fed:  # rewound (e.g. resumed after preemption): recompute
                seq.fed, seq.last = 0, None
            if p + 1 == seq.fed:  # same position as last step: reuse the row
                new: list[int] = []
            else:  # committed history the value model lacks (only on prefill), then this token
                hist = tokens[mapping[r], seq.fed:p].tolist() if seq.fed < p else []
                new = hist + [int(inp[r])]
            seqs.append(seq)
            news.append(new)
        corr = self.runtime.corrections(seqs, news).to(device=logits.device, dtype=logits.dtype)
        idx = torch.tensor(rows, device=logits.device)
        logits[idx, : corr.shape[1]] += corr
        return logits
