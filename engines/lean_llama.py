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
        self.device, self.dtype = torch.device(device), dtype
        self.n_layers = int(cfg["num_hidden_layers"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.n_kv = int(cfg.get("num_key_value_heads") or self.n_heads)
        self.hidden = int(cfg["hidden_size"])
        self.head_dim = int(cfg.get("head_dim") or self.hidden // self.n_heads)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.vocab_out = int(cfg["vocab_size"])
        sd = {k: v.to(device=self.device, dtype=dtype) for k, v in _load_state_dict(path).items()}
        self.embed = sd["model.embed_tokens.weight"]
        self.norm = sd["model.norm.weight"]
        self.lm_head = sd.get("lm_head.weight", self.embed)
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            self.layers.append({
                "ln1": sd[p + "input_layernorm.weight"], "ln2": sd[p + "post_attention_layernorm.weight"],
                "q": sd[p + "self_attn.q_proj.weight"], "k": sd[p + "self_attn.k_proj.weight"],
                "v": sd[p + "self_attn.v_proj.weight"], "o": sd[p + "self_attn.o_proj.weight"],
                "qb": sd.get(p + "self_attn.q_proj.bias"), "kb": sd.get(p + "self_attn.k_proj.bias"),
                "vb": sd.get(p + "self_attn.v_proj.bias"), "ob": sd.get(p + "self_attn.o_proj.bias"),
                "gate": sd[p + "mlp.gate_proj.weight"], "up": sd[p + "mlp.up_proj.weight"],
                "down": sd[p + "mlp.down_proj.weight"],
            })
        theta = _rope_theta(cfg)
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32,
                                                      device=self.device) / self.head_dim))
        self.num_parameters = sum(t.numel() for t in sd.values())
        # Slot cache: [layers, slots, kv_heads, capacity, head_dim].
        self.k_cache = torch.zeros(self.n_layers, 0, self.n_kv, 0, self.head_dim,
                                   device=self.device, dtype=dtype)
        self.v_cache = torch.zeros_like(self.k_cache)
        self._free: list[int] = []
        self._n_slots = 0

    # ---- slots -------------------------------------------------------------------------
    def alloc(self) -> int:
        """A free cache slot (grown by doubling when none is left)."""
        if not self._free:
            old = self._n_slots
            self._grow(max(4, 2 * old), self.k_cache.shape[3])
            self._free.extend(range(self._n_slots - 1, old - 1, -1))
        return self._free.pop()

    def free(self, slot: int) -> None:
        self._free.append(slot)

    def _grow(self, n_slots: int, capacity: int) -> None:
        shape = (self.n_layers, n_slots, self.n_kv, capacity, self.head_dim)
        k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        v = torch.zeros_like(k)
        s, c = self.k_cache.shape[1], self.k_cache.shape[3]
        k[:, :s, :, :c] = self.k_cache
        v[:, :s, :, :c] = self.v_cache
        self.k_cache, self.v_cache, self._n_slots = k, v, n_slots

    def _ensure_capacity(self, length: int) -> None:
        cap = self.k_cache.shape[3]
        if length > cap:
            new_cap = max(64, cap)
            while new_cap < length:
                new_cap *= 2
            self._grow(self._n_slots, new_cap)

    # ---- forward -----------------------------------------------------------------------
    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * w

    def _rope(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x [B, heads, T, hd], pos [B, T]: x cos + rotate_half(x) sin (HF Llama convention)."""
        freqs = pos.to(torch.float32)[..., None] * self.inv_freq  # [B, T, hd/2]
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, T, hd]
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        x1, x2 = x[..., : self.head_dim // 2], x[..., self.head_dim // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    @staticmethod
    def _lin(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

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
        dev = self.device
        b = len(slots)
        slot_t = torch.tensor(slots, device=dev)
        start_t = torch.tensor(starts, device=dev)
        pos = start_t[:, None] + torch.arange(t, device=dev)[None]  # [B, T]
        lmax = max(starts) + t
        self._ensure_capacity(lmax)
        ids = torch.tensor([list(x) for x in toks], device=dev, dtype=torch.long)
        h = self.embed[ids]  # [B, T, D]
        keys_pos = torch.arange(lmax, device=dev)
        mask = (keys_pos[None, None, :] <= pos[:, :, None])[:, None]  # [B, 1, T, L]
        slot_idx = slot_t[:, None].expand(b, t)
        rep = self.n_heads // self.n_kv
        for li, L in enumerate(self.layers):
            x = self._rms(h, L["ln1"])
            q = self._lin(x, L["q"], L["qb"]).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            k = self._lin(x, L["k"], L["kb"]).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
            v = self._lin(x, L["v"], L["vb"]).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = self._rope(q, pos), self._rope(k, pos)
            self.k_cache[li][slot_idx, :, pos] = k.transpose(1, 2)
            self.v_cache[li][slot_idx, :, pos] = v.transpose(1, 2)
            kk = self.k_cache[li][slot_t, :, :lmax]  # [B, kv, L, hd]
            vv = self.v_cache[li][slot_t, :, :lmax]
            if rep > 1:
                kk, vv = kk.repeat_interleave(rep, dim=1), vv.repeat_interleave(rep, dim=1)
            a = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
            h = h + self._lin(a.transpose(1, 2).reshape(b, t, -1), L["o"], L["ob"])
            x = self._rms(h, L["ln2"])
            h = h + F.linear(F.silu(F.linear(x, L["gate"])) * F.linear(x, L["up"]), L["down"])
        last = self._rms(h[:, -1], self.norm)
        return F.linear(last, self.lm_head).float()
