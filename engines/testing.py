"""Small random models for tests and benchmarks (no downloads).

    build_tiny_tokenizer(dir)              a byte-level BPE tokenizer.json (+ chat template)
    build_random_llama(dir, tokenizer_dir) a random Llama (head_dim 64, vLLM CPU needs it)
    build_random_value_model(dir, base)    a random Llama value model in the Tilt format

Weights use a larger init scale than training would (``init``) so that next-token
distributions are far from uniform and log-prob comparisons are meaningful.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "All that glitters is not gold; all who wander are not lost.",
    "Good things come to those who wait, and better things to those who work.",
    "It was the best of times, it was the worst of times.",
    "The sun rises in the east and sets in the west every day.",
    "Knowledge is power, and time is money, said the old man happily.",
    "She sells sea shells by the sea shore on a sunny afternoon.",
]


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 384) -> Path:
    """Train a byte-level BPE on a few sentences; save as a HF fast tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return out


def build_random_llama(out_dir: str | Path, tokenizer_dir: str | Path, *, hidden: int = 128,
                       layers: int = 2, heads: int = 2, intermediate: int = 256,
                       seed: int = 0, init: float = 0.1, max_positions: int = 1024,
                       tied: bool = False) -> Path:
    """A random LlamaForCausalLM saved with the tokenizer of ``tokenizer_dir``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, head_dim=hidden // heads,
                      max_position_embeddings=max_positions, initializer_range=init,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_random_value_model(out_dir: str | Path, base_dir: str | Path, *, hidden: int = 64,
                             layers: int = 1, heads: int = 1, intermediate: int = 128,
                             seed: int = 1, init: float = 0.1, beta: float | None = 1.0,
                             atoms: list[float] | None = None, tied: bool = False,
                             arch: str = "llama") -> Path:
    """A random value model in the Tilt format for the base model at ``base_dir``; ``arch``:
    "llama" (default RoPE), "llama3" (Llama-3.x RoPE scaling), "qwen2" (qkv biases),
    "qwen3" (q/k norms) or "mistral"."""
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    from engines.value_model import save_value_model

    tok = AutoTokenizer.from_pretrained(base_dir)
    k = len(atoms) if atoms else 1
    common = dict(vocab_size=len(tok) * k, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=heads, head_dim=hidden // heads,
                  max_position_embeddings=1024, initializer_range=init,
                  tie_word_embeddings=tied and k == 1)
    llama3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}
    configs = {"llama": lambda: LlamaConfig(**common),
               "llama3": lambda: LlamaConfig(**common, rope_parameters=llama3),
               "qwen2": lambda: Qwen2Config(**common),
               "qwen3": lambda: Qwen3Config(**common),
               "mistral": lambda: MistralConfig(**common, sliding_window=None)}
    if arch not in configs:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(configs)}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(configs[arch](), dtype=torch.float32)
    if arch in ("qwen2", "qwen3"):  # biases / norms are zeros / ones at init: make them count
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or "q_norm" in name or "k_norm" in name:
                    p.add_(init * torch.randn_like(p))
    if atoms is not None:
        beta = None
    return save_value_model(model, out_dir, base_dir=base_dir, reward="random", beta=beta,
                            atoms=atoms, training={"note": "random weights (test fixture)"})


def copy_model(src: str | Path, dst: str | Path) -> Path:
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return Path(dst)
