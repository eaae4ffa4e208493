"""Request and response bodies (pydantic), OpenAI-compatible plus Tilt's extensions.

Requests forbid unknown fields, so a misspelt or unsupported parameter is a 400 that names
it. vLLM's sampler fields (``min_p``, the penalties, ``logit_bias``, ``min_tokens``,
``ignore_eos``, ``stop_token_ids``) are accepted here; ``server.sampling_fields`` says per
method what they mean or why they are refused. Extensions: ``guidance`` (how to tilt the
base model) and ``return_token_ids``. Every choice carries a ``tilt`` object with the
diagnostics of the sampler that produced it.

Responses: ``CompletionResponse`` / ``ChatCompletionResponse`` (every field present, null
when unset) and the stream chunks ``CompletionChunk`` / ``ChatCompletionChunk``, whose
optional fields (``token_ids``, ``tilt``, ``delta.role``, ``usage``) are left out when unset.
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
    resample_every: int | None = Field(None, ge=1)  # smc: tokens per step (default 1)
    block_size: int | None = Field(None, ge=1)
    candidates: int | None = Field(None, ge=1)
    block_select: Literal["argmax", "sample"] | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class _SamplingFields(_Request):
    """Fields shared by completions and chat completions."""

    model: str | None = None
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # OpenAI's and vLLM's range
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None  # token id (as a string) -> bias in [-100, 100]
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    guidance: GuidanceRequest | None = None
    return_token_ids: bool = False


class CompletionRequest(_SamplingFields):
    """``prompt``: one text or token-id list, or a list of them (choice index = prompt * n + j);
    ``echo``: the prompt's text comes before each choice's text."""

    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
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
    """OpenAI's counts: ``completion_tokens`` are the returned choices' tokens (``token_ids``;
    a final EOS is not one, in streams and the metrics alike). Tilt's extension
    ``generated_tokens``: every token the method made the engine generate, EOS steps included
    (all particles of ``smc``/``importance``, all N draws of ``best_of_n``, all candidates of
    ``blockwise``); left out where not counted (streams)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    generated_tokens: int | None = Field(None, exclude_if=lambda v: v is None)


class TiltDiagnostics(_Response):
    """What the sampler reports about one choice (see decoders.results.Sample).

    Particle methods (smc, importance) also report, for the run that produced the choice:
    ``all_dead``   true when no particle survived (every final weight is 0, e.g. each hit a
                   hard constraint's -inf reward): log_z_hat is then null and the choice is
                   NOT a draw from the target
    ``survivors``  how many of the ``particles`` ended with a non-zero weight (0 exactly when
                   all_dead; ``particles`` when no constraint killed any)
    Both are null for the other methods.
    """

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
    all_dead: bool | None = None
    survivors: int | None = None


def _absent_if_none(value: Any) -> bool:
    return value is None


def _optional() -> Any:
    """A field left out of the JSON when None (stream chunks carry only what they have)."""
    return Field(None, exclude_if=_absent_if_none)


class _Envelope(_Response):
    """What every completion body and chunk starts with."""

    id: str
    object: str
    created: int
    model: str


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


class CompletionResponse(_Envelope):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class _StreamFields(_Response):
    """How a stream chunk's choice differs from a full one: no ``finish_reason`` until its
    last chunk, ``token_ids`` and ``tilt`` only where it has them, no ``prompt_token_ids``."""

    finish_reason: Literal["stop", "length"] | None = None
    token_ids: list[int] | None = _optional()
    prompt_token_ids: list[int] | None = Field(None, exclude=True)
    tilt: TiltDiagnostics | None = _optional()


class CompletionStreamChoice(_StreamFields, CompletionChoice):
    """New text of one choice; ``tilt`` (and ``logprobs``, if asked for) on its last chunk."""


class CompletionChunk(CompletionResponse):
    """One SSE event of a streamed completion; the usage chunk has no choices."""

    choices: list[CompletionStreamChoice]  # type: ignore[assignment]
    usage: Usage | None = _optional()


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


class ChatCompletionResponse(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(_Response):
    """``role`` only on a choice's first chunk."""

    role: Literal["assistant"] | None = _optional()
    content: str | None = None


class ChatStreamChoice(_Response):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None = None
    token_ids: list[int] | None = _optional()
    tilt: TiltDiagnostics | None = _optional()


class ChatCompletionChunk(ChatCompletionResponse):
    """One SSE event of a streamed chat completion; the usage chunk has no choices."""

    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"  # type: ignore[assignment]
    choices: list[ChatStreamChoice]  # type: ignore[assignment]
    usage: Usage | None = _optional()


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


class ErrorDetail(_Response):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Response):
    """OpenAI's error body, for every 4xx/5xx answer (``server.http_errors``)."""

    error: ErrorDetail


_ERRORS = {400: "invalid request (the message and ``param`` name the field)",
           401: "missing or wrong API key", 404: "unknown model, value model or reward",
           413: "request body too large", 429: "queue full (Retry-After)",
           500: "internal error", 502: "a reward service failed",
           503: "shutting down or not ready", 504: "request time limit"}
# The error answers a generation endpoint can give, declared in the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERRORS.items()}
