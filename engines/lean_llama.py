"""A lean decoder forward with a per-request (slot) KV cache, for value models inside vLLM.

The guidance processor must extend each guided request by the few tokens it gained since the
previous step, for many requests at once. Hugging Face's forward with a cache per request is
slow for that; this file implements the same maths (fp32 by default) over one slot-indexed
cache:

    h_0 = E[x];  per layer:  h += W_o · attn(RoPE(q), RoPE(k), v)
                             with q, k, v = W_q n(h) + b_q,  W_k n(h) + b_k,  W_v n(h) + b_v
                             h += W_down (silu(W_gate n(h)) * W_up n(h))
    logits = W_lm · n(h)          with n = RMSNorm,  attn causal over the request's cache

for the architectures in ``SUPPORTED_MODEL_TYPES``, which differ only in details:

* ``llama``: no biases by default (``attention_bias`` / ``mlp_bias`` weights are used if present);
* ``qwen2``: biases on q, k and v;
* ``qwen3``: per-head RMSNorm of q and k before RoPE (``q_norm``, ``k_norm``), explicit head_dim;
* ``mistral``: llama-like, with a sliding window.

RoPE may be default, ``linear`` or ``llama3`` scaled (``SUPPORTED_ROPE_TYPES``). Sliding
windows (Mistral's ``sliding_window``; Qwen2/Qwen3's when ``use_sliding_window``, on the layers
``layer_types`` marks ``sliding_attention``) are implemented in the attention mask: a query at
position p sees keys j with p - window < j <= p, as in Hugging Face. The cache still keeps every
position. Anything else raises ValueError at construction; ``is_supported`` says so beforehand.

``LeanLlama.extend(slots, starts, new_tokens)`` appends ``new_tokens[b]`` at positions
``starts[b]...`` of slot ``slots[b]`` and returns the logits of each request's last token.
Requests with the same number of new tokens run as one batch (padded keys, masked).
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_LAYER_TYPES = ("full_attention", "sliding_attention")


def _load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{directory}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _rope_parameters(cfg: dict) -> dict:
    """The RoPE dict in transformers 5.x form (``rope_parameters``), also from older configs
    (``rope_scaling`` plus a top-level ``rope_theta``): rope_type and rope_theta always set."""
    rp = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rp["rope_type"] = rp.get("rope_type") or rp.get("type") or "default"
    rp.setdefault("rope_theta", cfg.get("rope_theta") or 10000.0)
    return rp


def _unsupported_reason(cfg: dict) -> str | None:
    """Why this config cannot run here, or None when it can."""
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return (f"model_type {model_type!r} is not supported by the lean forward "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    rp = _rope_parameters(cfg)
    if any(isinstance(v, dict) for v in rp.values()):
        return "per-layer RoPE parameters are not supported"
    if rp["rope_type"] not in SUPPORTED_ROPE_TYPES:
        return (f"RoPE type {rp['rope_type']!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    if float(rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor") or 1.0)) != 1.0:
        return "partial rotary embeddings are not supported"
    bad = set(cfg.get("layer_types") or ()) - set(_LAYER_TYPES)
    if model_type in ("qwen2", "qwen3") and bad:
        return f"layer types {sorted(bad)} are not supported"
    return None


def is_supported(cfg: dict) -> bool:
    """Whether a Hugging Face config dict (config.json) can run on ``LeanLlama``."""
    return _unsupported_reason(cfg) is None


def _head_dim(cfg: dict) -> int:
    """``head_dim`` if given, else hidden_size / heads (Qwen3's config default is 128)."""
    default = 128 if cfg.get("model_type") == "qwen3" else cfg["hidden_size"] // cfg["num_attention_heads"]
    return int(cfg.get("head_dim") or default)


def _sliding_windows(cfg: dict) -> list[int | None]:
    """The attention window of each layer (None: full causal attention).

    Mistral: ``sliding_window`` on every layer. Qwen2/Qwen3: ``sliding_window`` only if
    ``use_sliding_window``, on the layers ``layer_types`` marks ``sliding_attention`` (by default
    those from ``max_window_layers`` on). Llama: none."""
    n, model_type = int(cfg["num_hidden_layers"]), cfg.get("model_type")
    window = cfg.get("sliding_window")
    if model_type == "mistral":
        return [window] * n
    if model_type not in ("qwen2", "qwen3") or not cfg.get("use_sliding_window") or window is None:
        return [None] * n
    types = cfg.get("layer_types") or ["sliding_attention" if i >= int(cfg.get("max_window_layers", 28))
                                       else "full_attention" for i in range(n)]
    return [int(window) if t == "sliding_attention" else None for t in types]


def _inv_freq(cfg: dict, head_dim: int, device: torch.device) -> torch.Tensor:
    """RoPE inverse frequencies [head_dim / 2]: f_i = theta^(-2i / head_dim), then scaled.

    linear: f_i / factor. llama3: ``_llama3_scaling``."""
    rp = _rope_parameters(cfg)
    exps = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim
    inv_freq = 1.0 / (float(rp["rope_theta"]) ** exps)
    if rp["rope_type"] == "linear":
        return inv_freq / float(rp["factor"])
    if rp["rope_type"] == "llama3":
        return _llama3_scaling(inv_freq, rp, cfg)
    return inv_freq


def _llama3_scaling(inv_freq: torch.Tensor, rp: dict, cfg: dict) -> torch.Tensor:
    """Llama 3.1 RoPE (transformers' ``_compute_llama3_parameters``). With wavelength
    w = 2π / f, L = original_max_position_embeddings, s = factor, lo/hi = low/high_freq_factor:

        w < L / hi:   f                                    (high frequencies kept)
        w > L / lo:   f / s                                (low frequencies interpolated)
        otherwise:    (1 - a) f / s + a f,   a = (L / w - lo) / (hi - lo)   (smooth between)
    """
    factor, lo, hi = float(rp["factor"]), float(rp["low_freq_factor"]), float(rp["high_freq_factor"])
    old_len = float(cfg.get("original_max_position_embeddings")
                    or rp.get("original_max_position_embeddings") or cfg["max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / hi) & (wavelen <= old_len / lo)
    return torch.where(medium, smoothed, scaled)


def _check_supported(cfg: dict, source: str) -> None:
    reason = _unsupported_reason(cfg)
    if reason is not None:
        raise ValueError(f"{source}: {reason}")


class LeanLlama:
    """Llama-family causal LM (weights of a HF directory) with a slot KV cache: Llama, Qwen2,
    Qwen3 and Mistral (``SUPPORTED_MODEL_TYPES``)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        path = Path(path)
        cfg = json.loads((path / "config.json").read_text())
        _check_supported(cfg, str(path))
        self._setup(cfg, _load_state_dict(path), device, dtype)

    @classmethod
    def from_weights(cls, cfg: dict, state_dict: dict[str, torch.Tensor],
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LeanLlama:
        """From an in-memory config dict and state dict (e.g. a model being trained)."""
        _check_supported(cfg, "lean forward")
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
        self.head_dim = _head_dim(cfg)
        self.windows = _sliding_windows(cfg)
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
            mlp_bias = [sd.get(p + f"mlp.{n}_proj.bias") for n in ("gate", "up")]
            self.layers.append({
                "ln1": sd[p + "input_layernorm.weight"], "ln2": sd[p + "post_attention_layernorm.weight"],
                # fused projections: one matmul for q,k,v and one for gate,up
                "qkv": torch.cat([sd[a + f"{n}_proj.weight"] for n in "qkv"]),
                "qkv_b": None if bias[0] is None else torch.cat(bias),
                "o": sd[a + "o_proj.weight"], "o_b": sd.get(a + "o_proj.bias"),
                "q_norm": sd.get(a + "q_norm.weight"), "k_norm": sd.get(a + "k_norm.weight"),  # Qwen3
                "gate_up": torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]),
                "gate_up_b": None if mlp_bias[0] is None else torch.cat(mlp_bias),
                "down": sd[p + "mlp.down_proj.weight"], "down_b": sd.get(p + "mlp.down_proj.bias"),
            })
        self.ff = sd["model.layers.0.mlp.gate_proj.weight"].shape[0] if self.n_layers else 0
        self.inv_freq = _inv_freq(cfg, self.head_dim, self.device)
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

    def _masks(self, width: int, rows: torch.Tensor, pos: torch.Tensor,
               lmax: int) -> dict[int | None, torch.Tensor]:
        """Additive masks [W, 1, T, lmax] per distinct window w: 0 where the query at position p
        may see key j (j <= p, and p - w < j when windowed), -inf elsewhere. Rows of the slot
        range not in the group (dummy queries) see key 0 only (never NaN)."""
        keys = torch.arange(lmax, device=self.device)[None, None, :]
        causal = keys <= pos[:, :, None]  # [B, T, lmax]
        masks: dict[int | None, torch.Tensor] = {}
        for w in set(self.windows):
            allowed = torch.zeros(width, 1, pos.shape[1], lmax, dtype=torch.bool, device=self.device)
            allowed[..., 0] = True
            allowed[rows] = (causal if w is None else causal & (keys > pos[:, :, None] - w))[:, None]
            masks[w] = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(
                ~allowed, float("-inf"))  # additive mask (faster than boolean on CPU)
        return masks

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
        masks = self._masks(width, rows, pos, lmax)
        h = self.embed[torch.tensor([list(x) for x in toks], device=dev)]  # [B, T, D]
        nq, nk = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        for li, L in enumerate(self.layers):
            x = self._rms(h, L["ln1"])
            q, k, v = F.linear(x, L["qkv"], L["qkv_b"]).split([nq, nk, nk], dim=-1)
            q, k = q.view(b, t, self.n_heads, self.head_dim), k.view(b, t, self.n_kv, self.head_dim)
            if L["q_norm"] is not None:  # Qwen3: RMSNorm over each head, before RoPE
                q, k = self._rms(q, L["q_norm"]), self._rms(k, L["k_norm"])
            q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
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
            a = F.scaled_dot_product_attention(qf, kk, vv, attn_mask=masks[self.windows[li]],
                                               enable_gqa=self.n_heads != self.n_kv)
            if not in_order:
                a = a[rows]
            h = h + F.linear(a.transpose(1, 2).reshape(b, t, nq), L["o"], L["o_b"])
            x = self._rms(h, L["ln2"])
            gate, up = F.linear(x, L["gate_up"], L["gate_up_b"]).split([self.ff, self.ff], dim=-1)
            h = h + F.linear(F.silu(gate) * up, L["down"], L["down_b"])
        last = self._rms(h[:, -1], self.norm)
        return F.linear(last, self.lm_head).float()
