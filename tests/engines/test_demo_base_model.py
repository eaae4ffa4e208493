"""Cheap checks of the committed demo base model (tilt/assets/demo-base), transformers only.

Built by scripts/build_demo_base.py; see tilt/assets/demo-base/MODEL_CARD.md.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch

MODEL_DIR = Path(__file__).resolve().parents[2] / "tilt" / "assets" / "demo-base"
MAX_BYTES = 20_000_000
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A friend in need is a friend indeed!",
    "He joined the Communist Party as a young man",
    "Don't panic: it's only 42, isn't it?",
]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(MODEL_DIR, local_files_only=True,
                                             dtype=torch.float32)
    return m.eval()


@pytest.fixture(scope="module")
def corpus_words() -> set[str]:
    with gzip.open(MODEL_DIR / "corpus_words.txt.gz", "rt") as f:
        return set(f.read().split())


def test_directory_is_small():
    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"{MODEL_DIR} is {size / 1e6:.1f} MB > 20 MB"


def test_llama_with_head_dim_64():
    cfg = json.loads((MODEL_DIR / "config.json").read_text())
    assert cfg["model_type"] == "llama"
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["hidden_size"] // cfg["num_attention_heads"] == 64  # vLLM CPU attention
    assert cfg.get("head_dim", 64) == 64
    assert cfg["tie_word_embeddings"] is True
    assert cfg["torch_dtype" if "torch_dtype" in cfg else "dtype"] == "float32"


def test_eos_id_consistent(tokenizer, model):
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    gen = json.loads((MODEL_DIR / "generation_config.json").read_text())
    assert eos == tokenizer.eos_token_id == tokenizer.bos_token_id == tokenizer.pad_token_id
    assert eos == model.config.eos_token_id == model.config.bos_token_id == gen["eos_token_id"]
    assert len(tokenizer) == model.config.vocab_size


@pytest.mark.parametrize("text", ENGLISH)
def test_tokenizer_round_trips_english(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2  # BPE merges, not bytes
    with_bos = tokenizer(text).input_ids
    assert with_bos == [tokenizer.bos_token_id] + ids


def test_chat_template(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|endoftext|>User: Hi\nAssistant:"


def _mean_nll(model, tokenizer, text: str) -> float:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(input_ids=ids, labels=ids).loss.item()


def test_prefers_english_to_scrambled(model, tokenizer):
    text = "the cat sat on the mat and the dog slept by the fire"
    scrambled = "mat the fire on sat dog the cat by slept the and the"
    assert _mean_nll(model, tokenizer, text) < _mean_nll(model, tokenizer, scrambled) - 0.25


def test_generation_is_mostly_english_words(model, tokenizer, corpus_words):
    """>= 70% of the alphabetic words generated (greedy + seeded sampling) are corpus words."""
    torch.manual_seed(0)
    words = []
    for prompt in ["The", "Life is", "A good friend"]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        for kwargs in ({"do_sample": False}, {"do_sample": True, "temperature": 0.8}):
            out = model.generate(ids, max_new_tokens=30, pad_token_id=0, **kwargs)
            text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            words += re.findall(r"[a-z]+", text.lower())
    assert len(words) >= 30
    frac = sum(w in corpus_words for w in words) / len(words)
    assert frac >= 0.7, f"only {frac:.0%} corpus words: {' '.join(words)}"
