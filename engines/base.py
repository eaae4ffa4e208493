"""What the server holds per served base model: an ``EngineHandle``.

An engine adapter translates between an inference engine and the protocols of
``decoders.protocols``; it holds no algorithm. The server only ever sees this contract:

    handle.name            served model name (OpenAI ``model`` field)
    handle.kind            "toy" | "transformers" | "vllm"
    handle.lm              a ``LanguageModel`` (and, for vLLM, also a ``BlockSampler``)
    handle.codec           text <-> ids (``TextCodec``)
    handle.value_models    name -> ``ValueModel`` (vLLM-native ones carry ``native_name``)
    handle.max_model_len   prompt + completion token cap of the engine
    handle.max_tokens_cap  largest allowed completion length (toy models: their ``len``)
    handle.num_running()   engine requests in flight (for metrics and cancellation tests)
    await handle.aclose()  shut the engine down

Value models may also expose ``bind(prompt_ids, max_tokens) -> ValueModel`` when their Q
depends on the prompt split (the exact toy source does); ``decoders.generate`` calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from decoders.protocols import Guidance, LanguageModel, ValueModel


@runtime_checkable
class TextCodec(Protocol):
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> list[int]: ...


@runtime_checkable
class EngineHandle(Protocol):
    name: str
    kind: str
    lm: LanguageModel
    codec: TextCodec
    value_models: dict[str, ValueModel]
    max_model_len: int
    max_tokens_cap: int

    def num_running(self) -> int: ...

    def metadata(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


def find_value_model(value_models: dict[str, Any], guidance: Guidance) -> Any:
    """The value model a guided request names; ValueError for an unknown one or beta <= 0.

    Engines call this before a request reaches the batch."""
    beta = guidance.beta
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    vm = value_models.get(guidance.value_model)
    if vm is None:
        known = ", ".join(sorted(value_models)) or "none"
        raise ValueError(f"unknown value model {guidance.value_model!r} (this engine serves: {known})")
    return vm
