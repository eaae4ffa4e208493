"""``TextCodec`` over a Hugging Face tokenizer directory (shared by the transformers and vLLM
engines).

    encode(text)                 ids exactly as vLLM tokenizes a text prompt (the tokenizer's
                                 own special-token convention, e.g. a BOS if it adds one)
    decode(ids)                  text, special tokens skipped
    apply_chat_template(msgs)    the tokenizer's chat template with the generation prompt; a
                                 tokenizer without one gets "role: content" lines + "assistant:"
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def read_hf_config(model: str | Path) -> tuple[Path, dict[str, Any]]:
    """(directory, parsed config.json) of a Hugging Face model directory; ValueError if not one."""
    model_dir = Path(model)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model {str(model)!r} is not a Hugging Face model directory")
    return model_dir, json.loads((model_dir / "config.json").read_text())


class HFCodec:
    def __init__(self, tokenizer_dir: str | Path):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"tokenizer at {tokenizer_dir} has no EOS token")
        self.eos_token_id = int(eos)
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        msgs = [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")}
                for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            out = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                     tokenize=True)
            if hasattr(out, "keys") and "input_ids" in out:
                out = out["input_ids"]
            return [int(i) for i in out]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
        return self.encode(text)


def count_parameters(model_dir: Path) -> int:
    """Parameter count from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():  # noqa: SIM118
                total += math.prod(st.get_slice(k).get_shape())
    return total
