"""The network ``tilt train`` trains: a small Llama whose output logits are Q_theta(s, .).

Format and serving are ``engines.value_model``'s: a HF causal-LM directory over the base
model's ids, read at the last position of a context (prompt + generated ids). One teacher-forced
forward over ``path`` = prompt + completion therefore gives Q(path[:j], .) at position j - 1
for every state length j >= 1, which is how training reads it.

Toy base models (``toy:...``) have no tokenizer: their value models record the toy spec as
``base_model`` and ``toy_fingerprint(vocab)`` as ``tokenizer_sha256`` (ids render as ``<i>``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engines.value_model import ValueModelManifest, check_value_model, save_value_model
from training.config import ConfigError, TrainConfig


def new_value_model(vocab_size: int, *, hidden: int, layers: int, heads: int, intermediate: int,
                    max_positions: int = 1024, seed: int = 0, tie: bool = False):
    """A fresh LlamaForCausalLM with vocab ``vocab_size`` and a zero output head (Q = 0 at the
    start, i.e. the guided policy starts at pi_ref)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=heads, head_dim=hidden // heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=tie,
                      initializer_range=0.02)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        if tie:
            model.model.norm.weight.mul_(0.01)
        else:
            model.lm_head.weight.zero_()
    return model


def load_value_model(path: str | Path, base: str, vocab_size: int):
    """A saved scalar value model of ``base`` as a trainable LlamaForCausalLM (``init_from``).
    Raises ValueError when it is not one (another tokenizer or vocabulary, atoms, not Llama)."""
    from transformers import AutoModelForCausalLM

    if base.startswith("toy:"):
        manifest = check_value_model(path)
        if manifest.tokenizer_sha256 != toy_fingerprint(vocab_size):
            raise ValueError(f"{path} is not a value model of {base}")
    else:
        from engines.loader import resolve_model_dir

        manifest = check_value_model(path, resolve_model_dir(base))
    if manifest.atoms is not None or manifest.vocab_size != vocab_size:
        raise ValueError(f"{path}: need a scalar value model over {vocab_size} ids")
    model = AutoModelForCausalLM.from_pretrained(Path(path), dtype=torch.float32)
    if model.config.model_type != "llama":
        raise ValueError(f"{path}: value models are trained as Llama, got {model.config.model_type!r}")
    return model


def lm_value_model(lm: str, base: str, vocab_size: int, layers: int | None = None):
    """A value model started from a pretrained Llama LM ``lm`` with the base's tokenizer (the
    base itself included): its embeddings, its first ``layers`` decoder layers (all when None)
    and final norm, under a new untied zero head, so Q = 0 at the start. Q♯-style: the value
    model reads the LM's features instead of learning them. Raises ValueError when ``lm`` is
    not such a model."""
    from transformers import AutoModelForCausalLM

    from engines.loader import resolve_model_dir
    from engines.value_model import tokenizer_fingerprint

    lm_dir, base_dir = resolve_model_dir(lm), resolve_model_dir(base)
    if tokenizer_fingerprint(lm_dir) != tokenizer_fingerprint(base_dir):
        raise ValueError(f"{lm_dir} has another tokenizer than the base {base_dir}")
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    c = model.config
    if c.model_type != "llama" or c.vocab_size != vocab_size:
        raise ValueError(f"{lm_dir}: need a Llama LM over {vocab_size} ids, got "
                         f"{c.model_type!r} over {c.vocab_size}")
    n = c.num_hidden_layers
    k = n if layers is None else layers
    if not 1 <= k <= n:
        raise ValueError(f"init_layers must be between 1 and {n} (the LM's layers), got {k}")
    model.model.layers = model.model.layers[:k]
    c.num_hidden_layers = k
    if getattr(c, "layer_types", None):
        c.layer_types = c.layer_types[:k]
    c.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(c.hidden_size, vocab_size, bias=False)
    torch.nn.init.zeros_(model.lm_head.weight)
    return model


def initial_model(cfg: TrainConfig, vocab: int, max_positions: int) -> torch.nn.Module:
    """The value model training starts from: ``init_from`` (an existing value model of this
    base, Q scaled by ``init_scale``), a pretrained LM's layers (``init_from_lm`` /
    ``init_layers``: ``lm_value_model``) or a fresh one of the configured architecture (zero
    head: Q = 0)."""
    if cfg.init_from_lm or cfg.init_layers:
        lm = cfg.init_from_lm or cfg.model
        try:
            return lm_value_model(lm, cfg.model, vocab, cfg.init_layers)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot start from the LM {lm!r}: {exc}") from exc
    if cfg.init_from:
        try:
            model = load_value_model(cfg.init_from, cfg.model, vocab)
        except ValueError as exc:
            raise ConfigError(f"cannot start from {cfg.init_from!r}: {exc}") from exc
        scale_q(model, cfg.init_scale)
        return model
    return new_value_model(vocab, hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                           intermediate=cfg.intermediate, seed=cfg.seed,
                           tie=cfg.tie_embeddings, max_positions=max_positions)


@torch.no_grad()
def scale_q(model: torch.nn.Module, factor: float) -> None:
    """Q_theta <- factor · Q_theta exactly: the output head reads RMSNorm(h) ⊙ w, linear in the
    final norm's weight w (tied or untied head alike)."""
    if factor != 1.0:
        model.model.norm.weight.mul_(factor)


def num_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (cpu when it has none)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16 outputs of an autocast forward as fp32 (losses are computed in fp32)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def pad_paths(paths: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] and lengths [B] (causal attention: pads never reach earlier positions)."""
    lengths = torch.tensor([len(p) for p in paths])
    ids = torch.zeros(len(paths), int(lengths.max()), dtype=torch.long)
    for i, p in enumerate(paths):
        ids[i, :len(p)] = torch.as_tensor(list(p), dtype=torch.long)
    return ids, lengths


def q_at(model: torch.nn.Module, paths: Sequence[Sequence[int]], rows: torch.Tensor,
         js: torch.Tensor) -> torch.Tensor:
    """Q_theta(path[:j], .) for entries (row, j): one forward over the batch paths, [E, V]
    (on the model's device; fp32 at least, also under autocast)."""
    dev = model_device(model)
    ids, _ = pad_paths(paths)
    logits = model(input_ids=ids.to(dev), use_cache=False).logits
    return _at_least_fp32(logits[rows.to(dev), js.to(dev) - 1])


def q_sa_at(model: torch.nn.Module, paths: Sequence[Sequence[int]], rows: torch.Tensor,
            js: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Q_theta(path[:j], a) for entries (row, j, a) only, [E]: the output head is applied to the
    entries' actions instead of the whole vocabulary (h_j · w_a, the same number as
    ``q_at(...)[e, a]`` at a fraction of the cost: soft-Q regression reads one action per entry)."""
    dev = model_device(model)
    ids, _ = pad_paths(paths)
    hidden = model.model(input_ids=ids.to(dev), use_cache=False).last_hidden_state
    hidden = _at_least_fp32(hidden[rows.to(dev), js.to(dev) - 1])
    return (hidden * model.lm_head.weight[actions.to(dev)]).sum(-1)


def toy_fingerprint(vocab_size: int) -> str:
    """Stands in for the tokenizer sha256 of toy models: ids 0..V-1 rendered as <i>."""
    return hashlib.sha256(f"tilt-toy-ids:vocab={vocab_size}".encode()).hexdigest()


def save(model: torch.nn.Module, out_dir: str | Path, *, base: str, vocab_size: int,
         reward: Any, beta: float, training: dict[str, Any]) -> Path:
    """Write the value model in the engines' format (toy bases: manifest records the spec)."""
    if not base.startswith("toy:"):
        from engines.loader import resolve_model_dir

        return save_value_model(model, out_dir, base_dir=resolve_model_dir(base), reward=reward,
                                beta=beta, training=training, base_model=base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    ValueModelManifest(base_model=base, tokenizer_sha256=toy_fingerprint(vocab_size),
                       vocab_size=vocab_size, reward=reward, beta=float(beta),
                       training=dict(training)).write(out)
    check_value_model(out)
    return out
