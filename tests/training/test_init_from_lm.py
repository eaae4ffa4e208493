"""Value models started from a pretrained LM's layers (``init_from_lm`` / ``init_layers``):
the base's (or another same-tokenizer LM's) embeddings and first k layers under a zero head,
so Q = 0 at the start; trained end to end by ``tilt train`` on a small random Llama base and
served by the engine's value-model loader. Bad starts exit 2 (``ConfigError``)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from engines.testing import build_random_llama, build_tiny_tokenizer
from engines.value_model import TorchValueModel, check_value_model
from training.config import ConfigError, load_config
from training.trainer import train
from training.value_net import initial_model, lm_value_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_lm")
    tok = build_tiny_tokenizer(root / "tok")
    base = build_random_llama(root / "base", tok, layers=3, tied=True, seed=1)
    other_tok = build_tiny_tokenizer(root / "tok2", vocab_size=320)
    other = build_random_llama(root / "other", other_tok, layers=2, seed=2)
    return base, other


def _cfg(base, out, **kw):
    return load_config(None, dict(model=str(base), engine="transformers", reward="vader",
                                  prompts=["Good things", "It was the best"], max_tokens=8, beta=1.0,
                                  rollouts=64, steps=3, batch_size=16, eval_every=100,
                                  ckpt_every=100, seed=0, threads=1, out=str(out), **kw))


def test_first_layers_of_the_base_under_a_zero_head(models):
    from transformers import AutoModelForCausalLM

    base, _ = models
    src = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    vm = lm_value_model(str(base), str(base), src.config.vocab_size, layers=2)
    assert len(vm.model.layers) == vm.config.num_hidden_layers == 2
    assert torch.equal(vm.model.embed_tokens.weight, src.model.embed_tokens.weight)
    assert torch.equal(vm.model.layers[1].mlp.up_proj.weight, src.model.layers[1].mlp.up_proj.weight)
    # the base ties its head to the embeddings; the value model's head is its own, and zero
    assert not vm.config.tie_word_embeddings
    assert vm.lm_head.weight.data_ptr() != vm.model.embed_tokens.weight.data_ptr()
    assert torch.count_nonzero(vm.lm_head.weight) == 0
    with torch.no_grad():
        assert torch.count_nonzero(vm(torch.tensor([[1, 5, 9]])).logits) == 0  # Q = 0


def test_bad_starts_are_config_errors(models, tmp_path):
    base, other = models
    vocab = 384
    with pytest.raises(ConfigError, match="another tokenizer"):
        initial_model(_cfg(base, tmp_path / "a", init_from_lm=str(other)), vocab, 64)
    with pytest.raises(ConfigError, match="init_layers must be between 1 and 3"):
        initial_model(_cfg(base, tmp_path / "b", init_layers=4), vocab, 64)
    with pytest.raises(ConfigError, match="cannot start from the LM"):
        initial_model(_cfg(base, tmp_path / "c", init_from_lm=str(tmp_path / "none")), vocab, 64)


def test_tilt_train_from_the_base_layers_saves_a_value_model_that_loads(models, tmp_path):
    base, _ = models
    cfg = _cfg(base, tmp_path / "vm", init_layers=1)
    summary = train(cfg, progress=False)
    assert summary["init_layers"] == 1 and summary["init_from_lm"] == str(base)
    manifest = check_value_model(cfg.out, base)
    assert manifest.vocab_size == 384
    vm = TorchValueModel(cfg.out, base)
    q = asyncio.run(vm.q_values([[1, 2, 3]], 1.0))
    assert q.shape == (1, 384) and torch.isfinite(q).all()
    assert torch.count_nonzero(q) > 0  # trained away from the zero start
    # a plain Llama: it runs inside vLLM on LeanLlama, which gives the same Q
    from engines.lean_llama import LeanLlama

    lean = LeanLlama(cfg.out)
    slot = lean.alloc()
    got = lean.extend([slot], [0], [[1, 2, 3]])[0].double()
    assert float((got - vm.last_logits([[1, 2, 3]])[0].double()).abs().max()) < 1e-4
