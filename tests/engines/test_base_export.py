"""engines.base_export in isolation (no vLLM): the processor-side writer and the adapter-side
reader of exported base log-probs."""

from __future__ import annotations

import math
import os

import pytest
import torch

from engines.base_export import ExportDir, ExportWriter


def test_export_records_survive_holes_and_a_full_disk(tmp_path, monkeypatch):
    """ExportWriter/ExportDir in isolation: values read back where written, holes and a failed
    write read as NaN (the adapter then scores), nothing raises inside the engine."""
    path = str(tmp_path / "r")
    w = ExportWriter(path, stops=[2], last=2)
    rows = [torch.log_softmax(torch.randn(5), -1) for _ in range(3)]
    qs = [torch.randn(4) for _ in range(3)]
    w.step(0, None, rows[0], qs[0])
    w.step(1, 3, rows[1], qs[1])
    w.step(2, 1, rows[2], qs[2])  # last step: rows for the token drawn now
    w.close()
    base, q, _ = ExportDir.read(path, [3, 1, 4], [2], max_tokens=3)
    want = [rows[0][3], rows[1][1], rows[2][4]]
    assert base == pytest.approx([float(x) for x in want], abs=1e-6)
    assert q[:2] == pytest.approx([float(qs[0][3]), float(qs[1][1])], abs=1e-6)
    assert math.isnan(q[2])  # token 4 is outside the value model's 4-token vocabulary
    assert not os.path.exists(path)
    w = ExportWriter(path, stops=[2], last=5)
    w.step(0, None, rows[0], None)
    w.step(2, 1, rows[2], None)  # step 1 never written: a hole
    w.close()
    base, _, _ = ExportDir.read(path, [3, 1], [2], max_tokens=6)
    assert all(math.isnan(b) for b in base)
    w = ExportWriter(path, stops=[], last=5)

    def full(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    w.step(0, None, rows[0], None)  # no exception: the export stops
    assert w.fd < 0
