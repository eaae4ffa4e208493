"""The toy engine: serves ``toy:vocab=V,len=T,seed=S`` models (pure Python, exact).

Text is rendered as ``<i>`` per token id. The value model ``exact`` is the exact soft value
Q* of (model, reward, beta) computed by enumeration (``decoders.exact.ExactValue``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from decoders.toy import ToyLM


class ToyCodec:
    def __init__(self, lm: ToyLM):
        self._lm = lm
        self.eos_token_id = lm.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self._lm.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._lm.decode(ids)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]:
        """Toy chat: the concatenated message contents, each a run of ``<id>`` tokens."""
        return [i for m in messages for i in self._lm.encode(str(m.get("content") or ""))]


class ToyEngine:
    kind = "toy"

    def __init__(self, spec: str, value_models: dict[str, Any] | None = None):
        self.lm = ToyLM.from_spec(spec)
        self.name = self.lm.name
        self.codec = ToyCodec(self.lm)
        self.value_models: dict[str, Any] = dict(value_models or {})
        self.max_tokens_cap = self.lm.max_len
        self.max_model_len = 1024

    def num_running(self) -> int:
        return 0

    def metadata(self) -> dict[str, Any]:
        return {"engine": "toy", "vocab_size": self.lm.vocab_size, "max_len": self.lm.max_len,
                "eos_token_id": self.lm.eos_token_id}

    async def aclose(self) -> None:
        return None
