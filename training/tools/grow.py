"""Grow a Llama value model by one layer without changing its function: the new last layer's
attention output and MLP down projections start at zero, so its residual branch adds nothing
and Q(s, .) is unchanged until training moves them (used for the 3-layer round in
docs/eval/demo_objectives/objectives.md).

    tilt value-model grow runs/demo-value-spi2 runs/demo-value-grown
    tilt train --config ... --init-from runs/demo-value-grown ...
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def grow(src: Path, dst: Path, seed: int = 0) -> int:
    """Write ``src`` with one more layer to ``dst``; returns the new parameter count.
    Raises ValueError when ``src`` is not a model directory."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise ValueError(f"{src} is not a model directory (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    cfg = model.config
    cfg.num_hidden_layers += 1
    torch.manual_seed(seed)
    grown = LlamaForCausalLM(cfg)
    grown.load_state_dict(model.state_dict(), strict=False)   # the new layer keeps its init
    new = grown.model.layers[-1]
    with torch.no_grad():
        new.self_attn.o_proj.weight.zero_()
        new.mlp.down_proj.weight.zero_()
    grown.save_pretrained(dst, safe_serialization=True)
    for name in ("tilt.json", "tokenizer.json", "tokenizer_config.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return sum(p.numel() for p in grown.parameters())
