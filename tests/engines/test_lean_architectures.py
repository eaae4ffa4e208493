"""LeanLlama against transformers' own forward (fp32) for each supported architecture.

Small random models (weights, biases and norm weights all randomised, so a missing bias, norm
or RoPE scaling shows), saved with ``save_pretrained`` (safetensors) and loaded from the
directory. Tolerance: max |lean - transformers| <= 1e-4 on last-token logits of std ~1.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from engines.lean_llama import SUPPORTED_MODEL_TYPES, LeanLlama, _inv_freq, is_supported

TOL = 1e-4
SMALL = dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
# head_dim 16: with original length 64 and low/high factors 1/4 the wavelengths 2π·θ^(2i/16)
# fall in all three llama3 bands (< 16 kept, 16..64 smoothed, > 64 divided by the factor).
LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
CONFIGS = {
    "llama3_rope": LlamaConfig(**SMALL, rope_parameters=LLAMA3),
    "llama_linear_rope": LlamaConfig(**SMALL, rope_parameters={"rope_type": "linear", "factor": 2.0,
                                                               "rope_theta": 10000.0}),
    "llama_biases_tied": LlamaConfig(**SMALL, attention_bias=True, mlp_bias=True,
                                     tie_word_embeddings=True),
    "qwen2": Qwen2Config(**SMALL),
    "qwen2_tied_window": Qwen2Config(**SMALL, tie_word_embeddings=True, use_sliding_window=True,
                                     sliding_window=5, max_window_layers=1),  # layer 1 windowed
    "qwen3": Qwen3Config(**SMALL, head_dim=24),  # head_dim != hidden / heads
    "qwen3_tied": Qwen3Config(**SMALL, head_dim=16, tie_word_embeddings=True),
    "mistral": MistralConfig(**SMALL, sliding_window=None),
    "mistral_window": MistralConfig(**SMALL, sliding_window=6),
}
SEQS = [[3], [5, 9, 2, 7, 1], [(7 * i + 3) % 64 for i in range(15)]]
MAX_DIFF: dict[str, float] = {}


def _randomise(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    """(name, transformers model, LeanLlama loaded from its save_pretrained directory)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[request.param], dtype=torch.float32,
                                             attn_implementation="eager").eval()
    _randomise(model)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path, safe_serialization=True)
    return request.param, model, LeanLlama(path)


@torch.no_grad()
def _hf_last(model, seq: list[int]) -> torch.Tensor:
    return model(torch.tensor([seq])).logits[0, -1].float()


def _check(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    diff = float((got - want).abs().max())
    MAX_DIFF[name] = max(MAX_DIFF.get(name, 0.0), diff)
    assert want.std() > 0.3  # logits of a useful scale
    assert diff <= TOL, (name, diff)


def test_full_pass_matches_transformers(pair):
    name, model, lean = pair
    slots = [lean.alloc() for _ in SEQS]
    out = lean.extend(slots, [0] * len(SEQS), SEQS)  # three lengths: three groups
    for i, seq in enumerate(SEQS):
        _check(name, out[i], _hf_last(model, seq))
    for s in slots:
        lean.free(s)


def test_incremental_matches_one_full_pass(pair):
    """Extend by a prefix, then by more tokens, then by one: each equals a full forward."""
    name, model, lean = pair
    seq = SEQS[-1] + [11, 12, 13]
    slots = [lean.alloc() for _ in range(3)]
    use = [slots[2], slots[0]]  # out of order, slot 1 unused (a dummy row)
    ctxs = [seq[:4], seq[:7]]
    lean.extend(use, [0, 0], ctxs)
    for more in (5, 1, 3):
        starts = [len(c) for c in ctxs]
        news = [seq[len(c): len(c) + more] for c in ctxs]
        ctxs = [c + n for c, n in zip(ctxs, news, strict=True)]
        out = lean.extend(use, starts, news)
        for i, c in enumerate(ctxs):
            _check(name, out[i], _hf_last(model, c))
    for s in slots:
        lean.free(s)


def test_from_weights_matches(pair):
    name, model, _ = pair
    lean = LeanLlama.from_weights(model.config.to_dict(), model.state_dict())
    _check(name, lean.extend([lean.alloc()], [0], [SEQS[1]])[0], _hf_last(model, SEQS[1]))


def test_inv_freq_equals_transformers(pair):
    name, model, lean = pair
    assert torch.allclose(lean.inv_freq, model.model.rotary_emb.inv_freq, rtol=1e-6, atol=0)


def test_old_style_llama3_config_dict():
    """config.json written before transformers 5: ``rope_scaling`` and a top-level rope_theta."""
    old = {"model_type": "llama", "rope_theta": 500000.0, "max_position_embeddings": 128,
           "rope_scaling": {k: v for k, v in LLAMA3.items() if k != "rope_theta"}}
    assert is_supported(old)
    want = LlamaConfig(**SMALL, rope_theta=500000.0, rope_scaling=old["rope_scaling"])
    model = AutoModelForCausalLM.from_config(want)
    assert torch.allclose(_inv_freq(old, 16, torch.device("cpu")), model.model.rotary_emb.inv_freq,
                          rtol=1e-6, atol=0)


@pytest.mark.parametrize("model_type", ["gemma", "gpt2"])
def test_unsupported_model_type_raises(tmp_path, model_type):
    cfg = {**SMALL, "model_type": model_type}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert not is_supported(cfg)
    with pytest.raises(ValueError, match=model_type) as err:
        LeanLlama(tmp_path)
    assert all(t in str(err.value) for t in SUPPORTED_MODEL_TYPES)
    with pytest.raises(ValueError, match=model_type):
        LeanLlama.from_weights(cfg, {})


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 2.0}, {"rope_type": "dynamic"},
                                  {"rope_type": "default", "partial_rotary_factor": 0.5}])
def test_unsupported_rope_is_not_supported(tmp_path, rope):
    cfg = {**SMALL, "model_type": "llama", "rope_parameters": rope}
    assert not is_supported(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="not supported"):
        LeanLlama(tmp_path)


def test_supported_configs_are_supported():
    for name, cfg in CONFIGS.items():
        assert is_supported(cfg.to_dict()), name


def test_report_max_diffs():
    """Runs last: prints the largest difference seen per architecture (pytest -s)."""
    print({k: f"{v:.2e}" for k, v in sorted(MAX_DIFF.items())})
