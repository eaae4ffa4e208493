"""Base log-probs of natively sampled tokens, exported by the logits processor (no scoring pass).

SMC weights and KL diagnostics need log pi_ref(y_t | s_t) for every sampled token y_t, while
vLLM (``logprobs_mode="processed_logprobs"``) returns the proposal's log-probs. The processor
sees the row l_t before guidance, temperature and penalties, so it knows

    log pi_ref(y | s_t) = l_t[y] - logsumexp(l_t)

for every y; it learns which y was sampled one step later (y_t is the newest output token at
step t+1). So at step t it writes one record

    record[t] = [ 1,  log pi_ref(y_{t-1} | s_{t-1}),  Q(s_{t-1}, y_{t-1}) / beta,
                  KL(q_t || pi_ref(. | s_t)),  log pi_ref(stop_j | s_t) for each stop id j ]

(NaN where unknown, Q/beta NaN for an unguided request; the leading 1 tells a written record
from a hole) at offset t of the request's file. Q/beta of the last token is block SMC's twist
at the block's end, so the adapter reports it and no value-model forward is needed there.
The exact per-step KL is written when the request asks for it (``"kl": true``: guided at
temperature 1 without truncation or penalties, so q_t = softmax(l_t + Q/beta) is the
distribution vLLM samples); the adapter sums it over the block's steps.

No record names the last token of a request (no step follows it). At the request's last
possible step (``"last": max_tokens - 1``) the processor therefore also writes that step's
whole rows, log pi_ref(. | s_t) and Q(s_t, .)/beta (float32, after the ``max_tokens``
records of the same file), and the adapter reads the sampled token's entries from them; a
block that ends on a stop id earlier takes that token's value from the stop columns. Anything still missing (stop strings, a preempted step,
the processor not running in this process tree) is NaN, and the adapter falls back to its
scoring pass. A write that fails (``/dev/shm`` full) stops that request's export: the engine
keeps running and the adapter falls back.

Files live in a per-engine directory under /dev/shm (RAM) when there is one. A request opts in
with ``extra_args["tilt_export"] = {"path": file, "stops": [ids], "kl": bool, "last": int}``,
set only by the adapter.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from engines.guidance_state import extra_entry

EXPORT_KEY = "tilt_export"
WIDTH = 4  # columns before the stop ids


def parse_export(params: Any) -> tuple[str, list[int], bool, int] | None:
    """(file path, stop ids, whether to write the per-step KL, the last step) when the request
    asks for exported base log-probs, else None."""
    e = extra_entry(params, EXPORT_KEY, "{'path': str, 'stops': [int], 'kl': bool, 'last': int}",
                    "path")
    if e is None:
        return None
    return (e["path"], [int(s) for s in e.get("stops") or []], bool(e.get("kl")),
            int(e.get("last", -1)))


class ExportWriter:
    """Processor side: one request's record file (fixed-size float64 records, pwrite)."""

    def __init__(self, path: str, stops: Sequence[int], kl: bool = False, last: int = -1):
        self.stops, self.kl, self.last = list(stops), kl, last
        self.width = WIDTH + len(self.stops)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self.prev: torch.Tensor | None = None  # log pi_ref(. | s_{t-1})
        self.prev_q: torch.Tensor | None = None  # Q(s_{t-1}, .) / beta
        self.prev_step = -2

    def step(self, t: int, newest: int | None, row_logprobs: torch.Tensor,
             q_row: torch.Tensor | None, kl: float = math.nan) -> None:
        """Write record ``t`` from this step's base log-prob row and Q/beta row (None when
        unguided); ``newest`` is output token t-1 (None at t = 0)."""
        rec = np.full(self.width, np.nan)
        rec[0] = 1.0
        if newest is not None and self.prev is not None and self.prev_step == t - 1:
            rec[1] = float(self.prev[newest])
            if self.prev_q is not None and newest < self.prev_q.numel():
                rec[2] = float(self.prev_q[newest])
        rec[3] = kl
        if self.stops:
            rec[WIDTH:] = row_logprobs[self.stops].double().cpu().numpy()
        self._write(rec.tobytes(), t * self.width * 8)
        if t == self.last:  # the token drawn now ends the request: its rows, for the adapter
            q = np.full(row_logprobs.numel(), np.nan, dtype=np.float32)
            if q_row is not None:
                q[: q_row.numel()] = q_row.float().cpu().numpy()
            rows = np.concatenate([row_logprobs.float().cpu().numpy(), q])
            self._write(rows.tobytes(), (self.last + 1) * self.width * 8)
        self.prev, self.prev_q, self.prev_step = row_logprobs, q_row, t

    def _write(self, data: bytes, offset: int) -> None:
        if self.fd < 0:
            return
        try:
            os.pwrite(self.fd, data, offset)
        except OSError:  # no room: this request's values go missing, the adapter scores them
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ExportDir:
    """Adapter side: a directory of per-request files, read when a request has finished
    (``read``) or span by span while it runs (``read_span``, engines.vllm_stream)."""

    def __init__(self) -> None:
        shm = "/dev/shm"
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        self.path = tempfile.mkdtemp(prefix="tilt-export-", dir=base)
        self._ids = itertools.count()

    def new(self, stops: Sequence[int], kl: bool = False,
            max_tokens: int = 0) -> tuple[str, dict[str, Any]]:
        """(file path, the extra_args entry) for one request of up to ``max_tokens``."""
        path = os.path.join(self.path, str(next(self._ids)))
        return path, {EXPORT_KEY: {"path": path, "stops": list(stops), "kl": kl,
                                   "last": max_tokens - 1}}

    @staticmethod
    def read(path: str, tokens: Sequence[int], stops: Sequence[int],
             max_tokens: int) -> tuple[list[float], list[float], float]:
        """(log pi_ref, Q/beta) of each of ``tokens`` (a final EOS included; NaN where the
        processor left no value) and the KL summed over the steps that drew them (NaN when not
        written); the file is removed."""
        out = ExportDir.read_span(path, tokens, 0, stops, max_tokens)
        discard(path)
        return out

    @staticmethod
    def read_span(path: str, tokens: Sequence[int], start: int, stops: Sequence[int],
                  max_tokens: int) -> tuple[list[float], list[float], float]:
        """``read`` for ``tokens[start:]`` of a request that may still be running (then its
        file holds the records of every token before the newest one); the file is kept."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        width = WIDTH + len(stops)
        head = min(len(data), max_tokens * width * 8) // (width * 8) * width * 8
        recs = np.frombuffer(data[:head], dtype=np.float64).reshape(-1, width).copy()
        rest = data[max_tokens * width * 8:]
        tail = np.frombuffer(rest[: len(rest) // 8 * 8], dtype=np.float32)  # two rows
        recs[recs[:, 0] != 1.0, 1:] = np.nan  # holes: steps the processor did not write
        base, q = [], []
        for i in range(start, len(tokens)):
            y = tokens[i]
            v, qv = (recs[i + 1, 1], recs[i + 1, 2]) if i + 1 < len(recs) else (math.nan,) * 2
            if math.isnan(v) and y in stops and i < len(recs):
                v = recs[i, WIDTH + list(stops).index(y)]
            if math.isnan(v) and i == len(tokens) - 1 and len(tail) and i < len(recs):
                v, qv = tail[y], tail[len(tail) // 2 + y]  # the last step's rows
            base.append(float(v))
            q.append(float(qv))
        kl = float(recs[start: len(tokens), 3].sum()) if len(tokens) <= len(recs) else math.nan
        return base, q, kl

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
