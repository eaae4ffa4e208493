"""Value model format, compatibility checks, plain-torch Q and the lean Llama forward."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engines.lean_llama import LeanLlama
from engines.value_model import (
    MANIFEST,
    TorchValueModel,
    ValueModelError,
    ValueModelManifest,
    check_value_model,
    q_from_logits,
    tokenizer_fingerprint,
)

CTXS = [[5, 6, 7, 8, 9], [10, 11], [3], [12, 13, 14, 15, 16, 17, 18]]


def test_manifest_fields(engine_models):
    m = ValueModelManifest.read(engine_models.value_model)
    data = json.loads((engine_models.value_model / MANIFEST).read_text())
    assert data["format"] == "tilt-value-model" and data["version"] == 1
    for key in ("base_model", "tokenizer_sha256", "vocab_size", "reward", "beta", "atoms",
                "training"):
        assert key in data
    assert m.tokenizer_sha256 == tokenizer_fingerprint(engine_models.base)
    assert m.beta == 1.0 and m.atoms is None


def test_fingerprint_is_canonical(tmp_path, engine_models):
    src = engine_models.base / "tokenizer.json"
    data = json.loads(src.read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps(data, indent=4))
    assert tokenizer_fingerprint(tmp_path) == tokenizer_fingerprint(src)


def test_other_tokenizer_rejected(engine_models):
    with pytest.raises(ValueModelError, match="different tokenizer"):
        check_value_model(engine_models.other_vm, engine_models.base)
    assert issubclass(ValueModelError, ValueError)


def test_bad_directories_rejected(tmp_path, engine_models):
    with pytest.raises(ValueModelError, match="not a directory"):
        check_value_model(tmp_path / "nope")
    bare = tmp_path / "bare"
    shutil.copytree(engine_models.value_model, bare)
    (bare / MANIFEST).unlink()
    with pytest.raises(ValueModelError, match="no tilt.json"):
        check_value_model(bare)
    (bare / MANIFEST).write_text(json.dumps({"format": "tilt-value-model", "base_model": "x",
                                             "tokenizer_sha256": "0", "vocab_size": 7,
                                             "beta": 1.0}))
    with pytest.raises(ValueModelError, match="output size"):
        check_value_model(bare)
    good = json.loads((engine_models.value_model / MANIFEST).read_text())
    (bare / MANIFEST).write_text(json.dumps({**good, "serve_beta": -0.5}))
    with pytest.raises(ValueModelError, match="serve_beta must be null or > 0"):
        check_value_model(bare)
    (bare / MANIFEST).write_text(json.dumps({**good, "serve_beta": 0.5}))
    assert check_value_model(bare).serve_beta == 0.5


async def test_q_values_batched_equals_single(engine_models):
    vm = TorchValueModel(engine_models.value_model, engine_models.base)
    ctxs = [c for c in CTXS]
    q = await vm.q_values(ctxs, beta=1.0)
    assert q.dtype == torch.float64 and q.shape == (len(ctxs), vm.vocab_size)
    for i, c in enumerate(ctxs):
        qi = await vm.q_values([c], beta=1.0)
        assert torch.allclose(q[i], qi[0], atol=1e-5)


def test_distributional_q_formula():
    torch.manual_seed(0)
    b, v, k = 3, 5, 4
    logits = torch.randn(b, v * k)
    atoms = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    beta = 0.7
    q = q_from_logits(logits, beta, atoms)
    p = torch.softmax(logits.view(b, v, k), -1)
    ref = beta * torch.log((p * torch.exp(atoms / beta)).sum(-1))
    assert torch.allclose(q, ref, atol=1e-5)
    betas = torch.tensor([0.5, 1.0, 3.0])
    qb = q_from_logits(logits, betas, atoms)
    for i in range(b):
        assert torch.allclose(qb[i], q_from_logits(logits[i:i + 1], float(betas[i]), atoms)[0],
                              atol=1e-5)


async def test_lean_llama_matches_transformers_incrementally(engine_models):
    vm = TorchValueModel(engine_models.value_model, engine_models.base, incremental=False)
    lean = LeanLlama(engine_models.value_model)
    slots = [lean.alloc() for _ in CTXS]
    ctxs = [list(c) for c in CTXS]
    out = lean.extend(slots, [0] * len(ctxs), ctxs)
    assert (out.double() - await vm.q_values(ctxs, 1.0)).abs().max() < 1e-4
    for step in range(3):  # mixed 1- and 2-token extensions
        news = [[20 + step] if i % 2 else [30, 31 + step] for i in range(len(ctxs))]
        starts = [len(c) for c in ctxs]
        ctxs = [c + n for c, n in zip(ctxs, news, strict=True)]
        out = lean.extend(slots, starts, news)
        assert (out.double() - await vm.q_values(ctxs, 1.0)).abs().max() < 1e-4
    lean.free(slots[0])
    assert lean.alloc() == slots[0]


async def test_lean_llama_unordered_and_gapped_slots(engine_models):
    vm = TorchValueModel(engine_models.value_model, engine_models.base, incremental=False)
    lean = LeanLlama(engine_models.value_model)
    slots = [lean.alloc() for _ in range(5)]
    use = [slots[4], slots[1], slots[3]]  # out of order, with gaps (0 and 2 unused)
    ctxs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    lean.extend(use, [0, 0, 0], ctxs)
    news = [[1], [2], [3]]
    out = lean.extend(use, [len(c) for c in ctxs], news)
    want = await vm.q_values([c + n for c, n in zip(ctxs, news, strict=True)], 1.0)
    assert (out.double() - want).abs().max() < 1e-4


async def test_incremental_q_values_with_forks_match_full_forward(engine_models):
    """Particles grow by one token per call and get duplicated (resampling): the prefix-cached
    Q equals a full forward each time."""
    inc = TorchValueModel(engine_models.value_model, engine_models.base)
    full = TorchValueModel(engine_models.value_model, engine_models.base, incremental=False)
    assert inc._prefix is not None
    particles = [[5, 6, 7], [8, 9], [5, 6, 7]]
    for step in range(4):
        q = await inc.q_values(particles, 0.5)
        assert (q - await full.q_values(particles, 0.5)).abs().max() < 1e-4, step
        # resample: particle 0 duplicated into 1, then every particle grows by one token
        particles = [particles[0], list(particles[0]), particles[2]]
        particles = [p + [20 + step + i] for i, p in enumerate(particles)]
