"""Request and response bodies (pydantic), OpenAI-compatible plus Tilt's extensions.

Requests forbid unknown fields, so a misspelt or unsupported parameter is a 400 that names
it. Extensions: ``guidance`` (how to tilt the base model) and ``return_token_ids``. Every
choice carries a ``tilt`` object with the diagnostics of the sampler that produced it.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from decoders.methods import Method


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# ----------------------------------------------------------------------------- requests


class RewardTerm(_Request):
    """One term of a weighted sum of rewards: R = sum_i weight_i R_i."""

    name: str
    weight: float = 1.0


class GuidanceRequest(_Request):
    """How to tilt: pi* ∝ pi_ref · exp(R / beta). Omitted fields take the server defaults."""

    method: Method | None = None
    value_model: str | None = None
    reward: str | None = None
    rewards: list[RewardTerm] | None = Field(None, min_length=1)
    beta: float | None = Field(None, gt=0)
    particles: int | None = Field(None, ge=1)
    ess_threshold: float | None = Field(None, ge=0, le=1)
    resampling: Literal["systematic", "multinomial"] | None = None
    block_size: int | None = Field(None, ge=1)
    candidates: int | None = Field(None, ge=1)
    block_select: Literal["argmax", "sample"] | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class _SamplingFields(_Request):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    guidance: GuidanceRequest | None = None
    return_token_ids: bool = False


class CompletionRequest(_SamplingFields):
    prompt: str | list[int]
    max_tokens: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0)


class ContentPart(_Request):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)


class RewardScoreRequest(_Request):
    model: str | None = None
    reward: str | None = None
    prompt: str | list[int]
    completions: list[str] | list[list[int]] = Field(min_length=1)


# ----------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TiltDiagnostics(_Response):
    """What the sampler reports about one choice (see decoders.results.Sample)."""

    method: str
    beta: float | None = None
    value_model: str | None = None
    reward_name: str | None = None
    reward: float | None = None
    log_weight: float | None = None
    kl_to_base: float | None = None
    base_logprob: float | None = None
    particles: int | None = None
    ess: float | None = None
    ess_trace: list[float] | None = None
    log_z_hat: float | None = None
    resamples: int | None = None


class CompletionLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(_Response):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None
    tilt: TiltDiagnostics | None = None


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(_Response):
    content: list[TokenLogprob] | None


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None
    tilt: TiltDiagnostics | None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class RewardScoreResponse(_Response):
    object: Literal["reward.scores"] = "reward.scores"
    reward: str
    scores: list[float | None]


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tilt"
    kind: Literal["base_model", "value_model", "reward"]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
