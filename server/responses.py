"""OpenAI response bodies, typed (``server.schemas``), built from the server's ``Choice``s.

    bodies = CompletionBodies(codec, model_name, plan)   # or ChatBodies; one per request
    bodies.response(choices)          # CompletionResponse / ChatCompletionResponse
    bodies.chunk(event, first)        # one stream chunk (CompletionChunk / ChatCompletionChunk)
    bodies.usage_chunk(usage)         # the last chunk when stream_options.include_usage
    merged(responses)                 # one completion body for a list of prompts
    model_list(state, defaults, max_tokens)   # GET /v1/models

Log-probs are rendered as OpenAI does for each endpoint: parallel lists with text offsets for
completions, one entry per token with its bytes for chat. A final sampled EOS is the last entry,
shown as the tokenizer writes it (``<|endoftext|>``), as vLLM's server does.
"""

from __future__ import annotations

from typing import Any

from server.config import Defaults
from server.engine_state import EngineState
from server.plan import Plan
from server.postprocess import Choice
from server.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatStreamChoice,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionResponse,
    CompletionStreamChoice,
    ModelCard,
    ModelList,
    TokenLogprob,
    TopLogprob,
    Usage,
    new_id,
    now,
)
from server.streaming import StreamEvent


def usage(prompt_tokens: int, completion_tokens: int,
          generated_tokens: int | None = None) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens,
                 generated_tokens=generated_tokens)


class _Bodies:
    """What every body of one request shares: id, creation time, model, the plan."""

    id_prefix = ""

    def __init__(self, codec: Any, model: str, plan: Plan):
        self.codec, self.plan = codec, plan
        self.header = {"id": new_id(self.id_prefix), "created": now(), "model": model}

    def _token(self, token_id: int) -> str:
        text = self.codec.decode([token_id])
        if not text and token_id == self.codec.eos_token_id:  # decode skips special tokens
            tokenizer = getattr(self.codec, "tokenizer", None)
            text = str(getattr(tokenizer, "eos_token", None) or "")
        return text

    def _ids(self, ids: list[int]) -> list[int] | None:
        return ids if self.plan.return_token_ids else None

    def _usage(self, choices: list[Choice]) -> Usage:
        return usage(len(self.plan.prompt_ids), sum(len(c.token_ids) for c in choices),
                     self.plan.generated_tokens)


class CompletionBodies(_Bodies):
    id_prefix = "cmpl"

    def _logprobs(self, c: Choice | None) -> CompletionLogprobs | None:
        if c is None or c.logprobs is None:
            return None
        tokens = [self._token(t) for t in c.sampled_ids]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return CompletionLogprobs(
            tokens=tokens, token_logprobs=[lp for lp, _ in c.logprobs],
            top_logprobs=[{self._token(i): v for i, v in alts} for _, alts in c.logprobs],
            text_offset=offsets)

    def _text(self, text: str, first: bool = True) -> str:
        """``echo``: the prompt's text before the choice's (on a stream's first chunk)."""
        return (self.plan.echo or "") + text if first else text

    def response(self, choices: list[Choice]) -> CompletionResponse:
        at = self.plan.first_index
        return CompletionResponse(**self.header, choices=[CompletionChoice(
            index=at + c.index, text=self._text(c.text), logprobs=self._logprobs(c),
            finish_reason=c.finish_reason, token_ids=self._ids(c.token_ids),
            prompt_token_ids=self._ids(self.plan.prompt_ids), tilt=c.tilt)
            for c in choices], usage=self._usage(choices))

    def chunk(self, event: StreamEvent, first: bool) -> CompletionChunk:
        c = event.choice
        return CompletionChunk(**self.header, choices=[CompletionStreamChoice(
            index=self.plan.first_index + event.index, text=self._text(event.text, first),
            logprobs=self._logprobs(c),
            finish_reason=c.finish_reason if c else None, token_ids=self._ids(event.token_ids),
            tilt=c.tilt if c else None)])

    def usage_chunk(self, u: Usage) -> CompletionChunk:
        return CompletionChunk(**self.header, choices=[], usage=u)


class ChatBodies(_Bodies):
    id_prefix = "chatcmpl"

    def _entry(self, token_id: int, lp: float) -> dict[str, Any]:
        s = self._token(token_id)
        return {"token": s, "logprob": lp, "bytes": list(s.encode())}

    def _logprobs(self, c: Choice | None) -> ChatLogprobs | None:
        if c is None or c.logprobs is None:
            return None
        return ChatLogprobs(content=[
            TokenLogprob(**self._entry(t, lp),
                         top_logprobs=[TopLogprob(**self._entry(i, v)) for i, v in alts])
            for t, (lp, alts) in zip(c.sampled_ids, c.logprobs, strict=True)])

    def response(self, choices: list[Choice]) -> ChatCompletionResponse:
        return ChatCompletionResponse(**self.header, choices=[ChatChoice(
            index=c.index, message=AssistantMessage(content=c.text),
            logprobs=self._logprobs(c), finish_reason=c.finish_reason,
            token_ids=self._ids(c.token_ids), prompt_token_ids=self._ids(self.plan.prompt_ids),
            tilt=c.tilt) for c in choices], usage=self._usage(choices))

    def chunk(self, event: StreamEvent, first: bool) -> ChatCompletionChunk:
        c = event.choice
        delta = ChatDelta(content=event.text, role="assistant" if first else None)
        return ChatCompletionChunk(**self.header, choices=[ChatStreamChoice(
            index=event.index, delta=delta, logprobs=self._logprobs(c),
            finish_reason=c.finish_reason if c else None, token_ids=self._ids(event.token_ids),
            tilt=c.tilt if c else None)])

    def usage_chunk(self, u: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(**self.header, choices=[], usage=u)


def merged(responses: list[CompletionResponse]) -> CompletionResponse:
    """One completion body for a list of prompts: every prompt's choices (already indexed
    prompt-major), usage summed over the prompts."""
    first = responses[0]
    if len(responses) == 1:
        return first
    us = [r.usage for r in responses if r.usage is not None]
    gen = [u.generated_tokens for u in us if u.generated_tokens is not None]
    return first.model_copy(update={
        "choices": [c for r in responses for c in r.choices],
        "usage": usage(sum(u.prompt_tokens for u in us), sum(u.completion_tokens for u in us),
                       sum(gen) if gen else None)})


def model_list(state: EngineState, defaults: Defaults, max_tokens: int) -> ModelList:
    """The base model, its value models and the rewards, with metadata; ``defaults`` are the
    effective ones (value model and reward resolved)."""
    created, handle = state.created, state.handle
    cards = [ModelCard(id=state.model_name, created=created, kind="base_model", metadata={
        **handle.metadata(), "engine_kind": handle.kind, "max_model_len": handle.max_model_len,
        "max_tokens": max_tokens, "defaults": defaults.model_dump()})]
    for name, vm in handle.value_models.items():
        meta = vm.metadata() if hasattr(vm, "metadata") else {}
        cards.append(ModelCard(id=name, created=created, kind="value_model",
                               root=state.model_name,
                               metadata={"type": type(vm).__name__,
                                         "default": name == defaults.value_model, **meta}))
    for name, spec in state.config.rewards.items():
        reward = state.rewards[name]
        cards.append(ModelCard(id=name, created=created, kind="reward", metadata={
            "spec": spec, "type": type(reward).__name__, "text": hasattr(reward, "score_text"),
            "default": name == defaults.reward}))
    return ModelList(data=cards)
