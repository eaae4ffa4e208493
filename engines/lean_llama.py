"""A lean Llama forward with a per-request (slot) KV cache, for value models inside vLLM.

The guidance processor must extend each guided request by the few tokens it gained since the
previous step, for many requests at once. Hugging Face's forward with a cache per request is
slow for that; this file implements the same maths (fp32 by default) over one slot-indexed
cache:

    h_0 = E[x];  per layer:  h += W_o · attn(RoPE(W_q n(h)), RoPE(W_k n(h)), W_v n(h))
                             h += W_down (silu(W_gate n(h)) * W_up n(h))
    logits = W_lm · n(h)          with n = RMSNorm,  attn causal over the request's cache

``LeanLlama.extend(slots, starts, new_tokens)`` appends ``new_tokens[b]`` at positions
``starts[b]...`` of slot ``slots[b]`` and returns the logits of each request's last token.
Requests with the same number of new tokens run as one batch (padded keys, masked).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F


def _load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _rope_theta(cfg: dict) -> float:
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rp.get("rope_type", rp.get("type", "default"))
    if rope_type not in ("default", None):
        raise ValueError(f"lean Llama supports only default RoPE, got {rope_type!r}")
    return float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))


class LeanLlama:
    """Llama-architecture causal LM (weights of a HF directory) with a slot KV cache."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("model_type") != "llama":
            raise ValueError(f"{path}: value models inside vLLM must be Llama architecture, "
                             f"got model_type {cfg.get('model_type')!r}")
        self._setup(cfg, _load_state_dict(path), device, dtype)

    @classmethod
    def from_weights(cls, cfg: dict, state_dict: dict[str, torch.Tensor],
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LeanLlama:
        """From an in-memory config dict and state dict (e.g. a model being trained)."""
        self = cls.__new__(cls)
        state = {k: v.detach() for k, v in state_dict.items()}
        if cfg.get("tie_word_embeddings"):
            state.pop("lm_head.weight", None)  # the embedding (counted once)
        self._setup(cfg, state, device, dtype)
        return self

    def _setup(self, cfg: dict, state: dict[str, torch.Tensor], device: str | torch.device,
               dtype: torch.dtype) -> None:
        self.device, self.dtype = torch.device(device), dtype
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.n_kv = int(cfg.get("num_key_value_heads") or self.n_heads)
        self.hidden = int(cfg["hidden_size"])
        self.head_dim = int(cfg.get("head_dim") or self.hidden // self.n_heads)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.vocab_out = int(cfg["vocab_size"])
        sd = {k: v.to(device=self.device, dtype=dtype) for k, v in state.items()}
        self.embed = sd["model.embed_tokens.weight"]
        self.norm = sd["model.norm.weight"]
        self.lm_head = sd.get("lm_head.weight", self.embed)
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            bias = [sd.get(a + f"{n}_proj.bias") for n in "qkv"]
            self.layers.append({
                "ln1": sd[p + "input_layernorm.weight"], "ln2": sd[p + "post_attention_layernorm.weight"],
                # fused projections: one matmul for q,k,v and one for gate,up
                "qkv": torch.cat([sd[a + f"{n}_proj.weight"] for n in "qkv"]),
                "qkv_b": None if bias[0] is None else torch.cat(bias),
                "o": sd[a + "o_proj.weight"], "o_b": sd.get(a + "o_proj.bias"),
                "gate_up": torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]),
                "down": sd[p + "mlp.down_proj.weight"],
            })
        self.ff = sd["model.layers.0.mlp.gate_proj.weight"].shape[0] if self.n_layers else 0
        theta = _rope_theta(cfg)
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32,
                                                      device=self.device) / self.head_dim))
        self.num_parameters = sum(t.numel() for t in sd.values())
        # Slot cache: [layers, slots, capacity, kv_heads, head_dim].
        self.k_cache = torch.zeros(self.n_layers, 0, 0, self.n_kv, self.head_dim,
                                   device=self.device, dtype=dtype)
        self.v_cache = torch.zeros_like(self.k_cache)
        self._free: list[int] = []  # a min-heap: low slots first keeps active slots dense
        self._n_slots = 0

    # ---- slots -------------------------------------------------------------------------
    def alloc(self) -> int:
        """A free cache slot (grown by doubling when none is left)."""
        if not self._free:
            old = self._n_slots
            self._grow(max(4, 2 * old), self.k_cache.shape[2])
            for s in range(old, self._n_slots):
                heapq.heappush(self._free, s)
        return heapq.heappop(self._free)

    def reserve(self, n_slots: int) -> None:
        """Make slots 0..n_slots-1 usable directly (callers that own the whole cache)."""
        while self._n_slots < n_slots:
            self.alloc()

    def free(self, slot: int) -> None:
        heapq.heappush(self._free, slot)

    @torch.inference_mode()
    def copy_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` cached positions of slot ``src`` into slot ``dst``."""
        self.k_cache[:, dst, :length] = self.k_cache[:, src, :length]
        self.v_cache[:, dst, :length] = self.v_cache[:, src, :length]

    @torch.inference_mode()
    def _grow(self, n_slots: int, capacity: int) -> None:
        shape = (self.n_layers, n_slots, capacity, self.n_kv, self.head_dim)
        k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        v = torch.zeros_like(k)
        s, c = self.k_cache.shape[1], self.k_cache.shape[2]
        k[:, :s, :c] = self.k_cache
        v[:, :s, :c] = self.v_cache
        self.k_cache, self.v_cache, self._n_slots = k, v, n_slots

    def _ensure_capacity(self, length: int) -> None:
        cap = self.k_cache.shape[2]
        if length > cap:
            new_cap = max(64, cap)
            while new_cap < length:
                new_cap *= 2
            self._grow(self._n_slots, new_cap)

    # ---- forward -----------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * w

    def _rope_tables(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, T, 1, hd] for positions pos [B, T] (HF Llama convention)."""
        freqs = pos.to(torch.float32)[..., None] * self.inv_freq  # [B, T, hd/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, :, None]
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, heads, hd]: x cos + rotate_half(x) sin."""
        half = self.head_dim // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    @torch.inference_mode()
    def extend(self, slots: Sequence[int], starts: Sequence[int],
               new_tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append tokens to each slot and return last-token logits [B, vocab_out] (fp32).

        Tokens already in a slot beyond ``starts[b]`` are overwritten."""
        out = torch.empty(len(slots), self.vocab_out, device=self.device, dtype=torch.float32)
        groups: dict[int, list[int]] = {}
        for i, toks in enumerate(new_tokens):
            if len(toks) == 0:
                raise ValueError("extend needs at least one new token per request")
            groups.setdefault(len(toks), []).append(i)
        for n, idx in groups.items():
            out[idx] = self._extend_group([slots[i] for i in idx], [starts[i] for i in idx],
                                          [new_tokens[i] for i in idx], n)
        return out

    def _extend_group(self, slots: list[int], starts: list[int], toks: list[Sequence[int]],
                      t: int) -> torch.Tensor:
        """Requests with ``t`` new tokens each. Attention runs over the slot range
        [min slot, max slot] as views of the cache (no gather); slots in that range that are
        not in the group get a dummy query (masked to key 0) and are dropped."""
        dev, b = self.device, len(slots)
        lo = min(slots)
        width = max(slots) + 1 - lo
        rows = torch.tensor([s - lo for s in slots], device=dev)
        in_order = width == b and all(s - lo == i for i, s in enumerate(slots))
        start_t = torch.tensor(starts, device=dev)
        pos = start_t[:, None] + torch.arange(t, device=dev)[None]  # [B, T]
        lmax = max(starts) + t
        self._ensure_capacity(lmax)
        cap = self.k_cache.shape[2]
        flat_idx = ((rows + lo)[:, None] * cap + pos).reshape(-1)  # into [slots * cap]
        cos, sin = self._rope_tables(pos)
        keys_pos = torch.arange(lmax, device=dev)
        allowed = torch.zeros(width, 1, t, lmax, dtype=torch.bool, device=dev)
        allowed[..., 0] = True  # dummy rows: attend to key 0 only (never NaN)
        allowed[rows] = (keys_pos[None, None, :] <= pos[:, :, None])[:, None]
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=dev).masked_fill_(
            ~allowed, float("-inf"))  # additive mask (faster than boolean on CPU)
        h = self.embed[torch.tensor([list(x) for x in toks], device=dev)]  # [B, T, D]
        nq, nk = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        for li, L in enumerate(self.layers):
            x = self._rms(h, L["ln1"])
            q, k, v = F.linear(x, L["qkv"], L["qkv_b"]).split([nq, nk, nk], dim=-1)
            q = self._rope(q.view(b, t, self.n_heads, self.head_dim), cos, sin)
            k = self._rope(k.view(b, t, self.n_kv, self.head_dim), cos, sin)
            kc = self.k_cache[li].view(-1, self.n_kv, self.head_dim)
            vc = self.v_cache[li].view(-1, self.n_kv, self.head_dim)
            kc.index_copy_(0, flat_idx, k.reshape(-1, self.n_kv, self.head_dim))
            vc.index_copy_(0, flat_idx, v.reshape(-1, self.n_kv, self.head_dim))
            kk = self.k_cache[li, lo: lo + width, :lmax].transpose(1, 2)  # [W, kv, L, hd]
            vv = self.v_cache[li, lo: lo + width, :lmax].transpose(1, 2)
            qf = q.transpose(1, 2)
            if not in_order:
                qf = torch.zeros(width, *qf.shape[1:], device=dev, dtype=q.dtype).index_copy_(
                    0, rows, qf)
            a = F.scaled_dot_product_attention(qf, kk, vv, attn_mask=mask,
                                               enable_gqa=self.n_heads != self.n_kv)
            if not in_order:
                a = a[rows]
            h = h + F.linear(a.transpose(1, 2).reshape(b, t, nq), L["o"], L["o_b"])
            x = self._rms(h, L["ln2"])
            gate, up = F.linear(x, L["gate_up"]).split([self.ff, self.ff], dim=-1)
            h = h + F.linear(F.silu(gate) * up, L["down"])
        last = self._rms(h[:, -1], self.norm)
        return F.linear(last, self.lm_head).float()
