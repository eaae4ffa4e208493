"""Typed request pieces and responses of the Tilt API (pydantic; unknown response fields
are kept, so newer servers stay readable)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["none", "token", "smc", "importance", "best_of_n", "blockwise"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------- request pieces


class RewardTerm(BaseModel):
    """One term of R = sum_i weight_i R_i."""

    model_config = ConfigDict(extra="forbid")
    name: str
    weight: float = 1.0


class Guidance(BaseModel):
    """How to tilt pi_ref: pi* ∝ pi_ref · exp(R / beta). Omitted fields take the server's
    defaults (``Guidance(method="token")`` uses the default value model, reward and beta)."""

    model_config = ConfigDict(extra="forbid")
    method: Method | None = None
    value_model: str | None = None
    reward: str | None = None
    rewards: list[RewardTerm] | None = None
    beta: float | None = Field(None, gt=0)
    particles: int | None = Field(None, ge=1)
    ess_threshold: float | None = Field(None, ge=0, le=1)
    resampling: Literal["systematic", "multinomial"] | None = None
    resample_every: int | None = Field(None, ge=1)  # smc: tokens per step (default 1)
    block_size: int | None = Field(None, ge=1)
    candidates: int | None = Field(None, ge=1)
    block_select: Literal["argmax", "sample"] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str


# ---------------------------------------------------------------- responses


class Usage(_Model):
    """OpenAI's counts (``completion_tokens``: the tokens returned) plus
    ``generated_tokens``: every token the method made the engine generate (all particles,
    draws and candidates, EOS steps included); None from servers that do not report it."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    generated_tokens: int | None = None


class TiltDiagnostics(_Model):
    """Per-choice diagnostics: reward, log-weight, KL-to-base estimate; ESS, log Z-hat,
    resamples, ``all_dead`` (no particle survived a hard constraint: the choice is not a
    draw from the target) and ``survivors`` (particles with non-zero final weight) for
    particle methods (smc, importance)."""

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


class CompletionLogprobs(_Model):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Model):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None
    tilt: TiltDiagnostics | None = None


class Completion(_Model):
    id: str
    object: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class CompletionChunk(Completion):
    """One SSE event of a streamed completion (``choices`` may be empty: the usage chunk)."""


class TopLogprob(_Model):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(_Model):
    content: list[TokenLogprob] | None = None


class AssistantMessage(_Model):
    role: str = "assistant"
    content: str | None = None


class ChatChoice(_Model):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None
    tilt: TiltDiagnostics | None = None


class ChatCompletion(_Model):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class ChatDelta(_Model):
    role: str | None = None
    content: str | None = None


class ChatChunkChoice(_Model):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    tilt: TiltDiagnostics | None = None


class ChatCompletionChunk(_Model):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(_Model):
    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(_Model):
    object: str = "list"
    data: list[ModelCard]

    def of_kind(self, kind: str) -> list[ModelCard]:
        """Cards of one kind: "base_model", "value_model" or "reward"."""
        return [m for m in self.data if m.kind == kind]


class RewardScores(_Model):
    object: str = "reward.scores"
    reward: str
    scores: list[float | None]
