"""The reference engine: a Hugging Face causal LM in plain transformers (fp32, CPU or GPU).

Used for exactness checks against vLLM and where vLLM cannot run.

- ``logprobs(contexts)`` = log_softmax(l_ref(s, .)) in fp32, returned as float64 [B, V].
  Batched and KV-cached: the key/value tensors of every context evaluated recently are kept
  (LRU, ``cache_entries``); a context whose parent (context minus its last token) is cached
  is computed from that cache with one new token. Contexts that share a cached-prefix length
  and a number of new tokens run as one batch (no padding needed).
- ``sample_blocks`` = ``decoders.blocks.token_loop`` over ``logprobs`` and the value model
  (guided logits l_ref + Q/beta, then temperature/top-k/top-p), so it samples exactly what the
  decoders' generic loop samples; one generator seeded from the call's seeds.
- ``guided_logprobs(contexts, guidance)`` = log_softmax(l_ref + Q/beta) rows (for checks).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from decoders.protocols import Block, Guidance, OnTokens, SamplingParams
from engines.base import find_value_model
from engines.hf_codec import HFCodec, read_hf_config
from engines.value_model import TorchValueModel, check_value_model

KV = tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer (keys, values) [1, kv, L, hd]


class TransformersLM:
    """``LanguageModel`` + ``BlockSampler`` over a transformers causal LM with a prefix KV cache."""

    def __init__(self, model_dir: str | Path, eos_token_id: int, value_models: dict[str, Any],
                 device: str = "cpu", cache_entries: int = 1024, max_model_len: int = 1024):
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32).to(self.device).eval()
        self.vocab_size = int(self.model.config.vocab_size)
        self.eos_token_id = eos_token_id
        self.value_models = value_models
        self.max_model_len = max_model_len
        self.cache_entries = cache_entries
        self._cache: OrderedDict[tuple[int, ...], tuple[KV, torch.Tensor]] = OrderedDict()
        self._lock = asyncio.Lock()
        self.num_running = 0

    # ---- next-token log-probs -----------------------------------------------------------
    def _forward(self, past: list[KV] | None, new: list[list[int]]) -> tuple[torch.Tensor, list[KV]]:
        """One batched forward of ``new`` tokens after (equal-length) ``past`` caches."""
        from transformers import DynamicCache

        cache = DynamicCache()
        if past is not None:
            for layer in range(len(past[0])):
                cache.update(torch.cat([p[layer][0] for p in past]),
                             torch.cat([p[layer][1] for p in past]), layer)
        ids = torch.tensor(new, device=self.device)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True)
        logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        layers = out.past_key_values.layers
        kvs = [tuple((lay.keys[b: b + 1], lay.values[b: b + 1]) for lay in layers)
               for b in range(ids.shape[0])]
        return logp, kvs

    @torch.inference_mode()
    def _logprobs_sync(self, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        keys = [tuple(int(t) for t in c) for c in contexts]
        rows: dict[tuple[int, ...], torch.Tensor] = {}
        groups: dict[tuple[int, int], list[tuple[int, ...]]] = {}
        for k in dict.fromkeys(keys):  # unique, in order
            if len(k) == 0:
                raise ValueError("context must contain at least one token")
            if k in self._cache:
                self._cache.move_to_end(k)
                rows[k] = self._cache[k][1]
                continue
            start = len(k) - 1 if k[:-1] in self._cache else 0
            groups.setdefault((start, len(k) - start), []).append(k)
        for (start, _), ks in groups.items():
            past = [self._cache[k[:-1]][0] for k in ks] if start else None
            logp, kvs = self._forward(past, [list(k[start:]) for k in ks])
            for k, row, kv in zip(ks, logp, kvs, strict=True):
                rows[k] = row.cpu()
                self._cache[k] = (kv, rows[k])
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
        return torch.stack([rows[k] for k in keys]).double()

    async def logprobs(self, contexts: Sequence[Sequence[int]]) -> torch.Tensor:
        """log pi_ref(. | s) for each context: float64 [B, V]."""
        if len(contexts) == 0:
            return torch.empty(0, self.vocab_size, dtype=torch.float64)
        async with self._lock:
            self.num_running += len(contexts)
            try:
                return await asyncio.to_thread(self._logprobs_sync, contexts)
            finally:
                self.num_running -= len(contexts)

    # ---- guidance -----------------------------------------------------------------------
    def check_guidance(self, guidance: Guidance | None) -> Any:
        """The value model for ``guidance``; ValueError for an unknown one or beta <= 0."""
        if guidance is None:
            return None
        return find_value_model(self.value_models, guidance)

    async def guided_logprobs(self, contexts: Sequence[Sequence[int]],
                              guidance: Guidance | None) -> torch.Tensor:
        """log_softmax(l_ref + Q/beta) rows (plain log pi_ref rows when unguided)."""
        vm = self.check_guidance(guidance)
        base = await self.logprobs(contexts)
        if vm is None:
            return base
        q = await vm.q_values(contexts, guidance.beta)
        return torch.log_softmax(base + q / guidance.beta, dim=-1)

    async def sample_blocks(self, contexts: Sequence[Sequence[int]], max_tokens: int,
                            params: SamplingParams, seeds: Sequence[int | None],
                            guidance: Guidance | None = None,
                            on_tokens: OnTokens | None = None) -> list[Block]:
        from decoders.blocks import token_loop

        vm = self.check_guidance(guidance)
        digest = hashlib.blake2b(repr(list(seeds)).encode(), digest_size=8).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
        caps = [min(max_tokens, self.max_model_len - len(c)) for c in contexts]
        return await token_loop(self, contexts, caps, gen, params, vm,
                                1.0 if guidance is None else guidance.beta, on_tokens)


class TransformersEngine:
    """``EngineHandle`` for a Hugging Face model directory run in plain transformers."""

    kind = "transformers"

    @classmethod
    async def open(cls, model: str | Path, value_models: dict[str, str] | None = None, *,
                   name: str | None = None, device: str = "cpu", max_model_len: int | None = None,
                   max_tokens_cap: int | None = None, cache_entries: int = 1024,
                   incremental_value_models: bool = True, **unknown: Any) -> TransformersEngine:
        """Load ``model`` (a local HF directory) and value models (name -> path).

        ``incremental_value_models=False`` evaluates Q with full transformers forwards (slow,
        fully independent of the lean forward vLLM's guidance uses; tests compare against it)."""
        if unknown:
            raise ValueError(f"unknown option(s) for the transformers engine: {sorted(unknown)}")
        model_dir, cfg = read_hf_config(model)
        self = cls()
        self.model_dir = model_dir
        self.name = name or model_dir.name
        self.codec = HFCodec(model_dir)
        max_model_len = max_model_len or int(cfg.get("max_position_embeddings") or 2048)
        self.value_models = {}
        for vm_name, vm_path in (value_models or {}).items():
            check_value_model(vm_path, model_dir)
            vm = TorchValueModel(vm_path, model_dir, device=device, name=vm_name,
                                 incremental=incremental_value_models)
            vm.native_name = vm_name  # sample_blocks applies it (token loop in this engine)
            self.value_models[vm_name] = vm
        self.lm = TransformersLM(model_dir, self.codec.eos_token_id, self.value_models,
                                 device=device, cache_entries=cache_entries,
                                 max_model_len=max_model_len)
        self.max_model_len = max_model_len
        self.max_tokens_cap = max_tokens_cap or max_model_len
        self.num_parameters = sum(p.numel() for p in self.lm.model.parameters())
        self._arch = cfg.get("model_type")
        return self

    def num_running(self) -> int:
        return self.lm.num_running

    def metadata(self) -> dict[str, Any]:
        return {"engine": "transformers", "model": str(self.model_dir), "architecture": self._arch,
                "vocab_size": self.lm.vocab_size, "eos_token_id": self.lm.eos_token_id,
                "max_model_len": self.max_model_len, "parameters": self.num_parameters,
                "value_models": {k: v.metadata() for k, v in self.value_models.items()}}

    async def aclose(self) -> None:
        self.lm._cache.clear()
