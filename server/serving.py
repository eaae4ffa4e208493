"""``Serving``: one method per endpoint, each request -> plan -> run -> typed response.

    completions(req, raw)   POST /v1/completions        CompletionResponse or an SSE stream
    chat(req, raw)          POST /v1/chat/completions   ChatCompletionResponse or an SSE stream
    score_rewards(req)      POST /v1/rewards/score      RewardScoreResponse
    list_models()           GET /v1/models              ModelList

A generation waits for an admission slot, runs under the time limit and is cancelled when
the client hangs up. Streams are SSE events of JSON chunks ending with ``data: [DONE]``; an
error after the 200 has been sent is reported in-band (OpenAI's error JSON) before it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request

from server import generation
from server.engine_state import EngineState
from server.errors import ClientDisconnected, TiltError
from server.http_errors import internal_error_body, tilt_error_body
from server.limits import Admission, cancel_on_disconnect
from server.plan import Plan, Planner
from server.postprocess import Choice, finish
from server.responses import ChatBodies, CompletionBodies, model_list, usage
from server.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelList,
    RewardScoreRequest,
    RewardScoreResponse,
)
from server.streaming import stream

log = logging.getLogger("tilt.server")

Bodies = CompletionBodies | ChatBodies


def _event(data: BaseModel | dict) -> dict[str, str]:
    body = data.model_dump() if isinstance(data, BaseModel) else data
    return {"data": json.dumps(body)}


class Serving:
    """The endpoints of one served model."""

    def __init__(self, state: EngineState, planner: Planner, admission: Admission):
        self.state, self.planner, self.admission = state, planner, admission

    # ------------------------------------------------------------------ endpoints

    async def completions(self, req: CompletionRequest,
                          raw: Request) -> CompletionResponse | EventSourceResponse:
        plan = self.planner.completion(req)
        bodies = CompletionBodies(self.state.handle.codec, self.state.model_name, plan)
        return await self._respond(raw, plan, bodies)

    async def chat(self, req: ChatCompletionRequest,
                   raw: Request) -> ChatCompletionResponse | EventSourceResponse:
        plan = self.planner.chat(req)
        bodies = ChatBodies(self.state.handle.codec, self.state.model_name, plan)
        return await self._respond(raw, plan, bodies)

    async def score_rewards(self, req: RewardScoreRequest) -> RewardScoreResponse:
        plan = self.planner.score(req)
        return RewardScoreResponse(reward=plan.reward_name,
                                   scores=await generation.score(plan))

    def list_models(self) -> ModelList:
        return model_list(self.state, self.planner.effective_defaults(),
                          self.planner.max_tokens_cap)

    # ------------------------------------------------------------------ generation

    async def _respond(self, raw: Request, plan: Plan,
                       bodies: Bodies) -> BaseModel | EventSourceResponse:
        if plan.stream:
            return self._stream(plan, bodies)
        return bodies.response(await self._generate(raw, plan))

    async def _generate(self, raw: Request, plan: Plan) -> list[Choice]:
        """Non-streamed: wait for a slot, run under the time limit, abort on disconnect."""
        metrics = self.state.metrics
        timer = metrics.request_started(plan.spec.method, len(plan.prompt_ids))
        limit = self.state.config.limits.request_timeout_s
        async with self.admission.slot():
            timer.started()
            try:
                samples = await cancel_on_disconnect(
                    raw, generation.run(self.state, plan, timeout_s=limit))
            except ClientDisconnected:
                metrics.aborted()
                raise
            choices = await finish(self.state, plan, list(enumerate(samples)))
        timer.tokens(sum(len(c.token_ids) for c in choices))
        timer.finished()
        return choices

    def _stream(self, plan: Plan, bodies: Bodies) -> EventSourceResponse:
        self.admission.check()  # 429 now, before the 200 of the stream is sent
        state, metrics = self.state, self.state.metrics
        timer = metrics.request_started(plan.spec.method, len(plan.prompt_ids))
        limit = state.config.limits.request_timeout_s

        async def events() -> AsyncIterator[dict[str, str]]:
            sent_tokens, first = 0, [True] * plan.spec.n
            try:
                async with self.admission.slot():
                    timer.started()
                    # aclosing: a hang-up closes the sampler's stream now, not at GC time
                    async with aclosing(stream(state, plan, limit)) as sampled:
                        async for event in sampled:
                            timer.tokens(len(event.token_ids))
                            sent_tokens += len(event.token_ids)
                            yield _event(bodies.chunk(event, first[event.index]))
                            first[event.index] = False
                timer.finished()
                if plan.include_usage:
                    yield _event(bodies.usage_chunk(usage(len(plan.prompt_ids), sent_tokens)))
            except TiltError as exc:
                yield _event(tilt_error_body(exc))
            except (asyncio.CancelledError, GeneratorExit):  # the client hung up
                metrics.aborted()
                raise
            except Exception as exc:  # noqa: BLE001 - reported in the stream, then [DONE]
                log.exception("stream failed")
                yield _event(internal_error_body(exc))
            yield {"data": "[DONE]"}

        return EventSourceResponse(events(), ping=15)
