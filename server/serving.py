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
from server.responses import ChatBodies, CompletionBodies, merged, model_list, usage
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
        plans = self.planner.completions(req)  # one per prompt of a prompt list
        bodies = [CompletionBodies(self.state.handle.codec, self.state.model_name, p)
                  for p in plans]
        for b in bodies[1:]:
            b.header = bodies[0].header  # one id for the whole response
        if plans[0].stream:
            return self._stream(plans, bodies)
        per_plan = await self._generate(raw, plans)
        return merged([b.response(c) for b, c in zip(bodies, per_plan, strict=True)])

    async def chat(self, req: ChatCompletionRequest,
                   raw: Request) -> ChatCompletionResponse | EventSourceResponse:
        plan = self.planner.chat(req)
        bodies = ChatBodies(self.state.handle.codec, self.state.model_name, plan)
        if plan.stream:
            return self._stream([plan], [bodies])
        [choices] = await self._generate(raw, [plan])
        return bodies.response(choices)

    async def score_rewards(self, req: RewardScoreRequest) -> RewardScoreResponse:
        plan = self.planner.score(req)
        return RewardScoreResponse(reward=plan.reward_name,
                                   scores=await generation.score(plan))

    def list_models(self) -> ModelList:
        return model_list(self.state, self.planner.effective_defaults(),
                          self.planner.max_tokens_cap)

    # ------------------------------------------------------------------ generation

    async def _generate(self, raw: Request, plans: list[Plan]) -> list[list[Choice]]:
        """Non-streamed: wait for a slot, run every prompt's plan concurrently under the time
        limit, abort on disconnect. The choices of each plan."""
        metrics = self.state.metrics
        timer = metrics.request_started(plans[0].spec.method,
                                        sum(len(p.prompt_ids) for p in plans))
        limit = self.state.config.limits.request_timeout_s
        async with self.admission.slot():
            timer.started()
            try:
                runs = asyncio.gather(*(generation.run(self.state, p, timeout_s=limit)
                                        for p in plans))
                samples = await cancel_on_disconnect(raw, runs)
            except ClientDisconnected:
                metrics.aborted()
                raise
            choices = [await finish(self.state, p, list(enumerate(s)))
                       for p, s in zip(plans, samples, strict=True)]
        timer.tokens(sum(len(c.token_ids) for cs in choices for c in cs))
        timer.finished()
        return choices

    def _stream(self, plans: list[Plan], bodies: list[Bodies]) -> EventSourceResponse:
        """The plans' events one plan after another (a prompt list streams prompt by
        prompt), then the usage chunk if asked for."""
        self.admission.check()  # 429 now, before the 200 of the stream is sent
        state, metrics, plan = self.state, self.state.metrics, plans[0]
        prompt_tokens = sum(len(p.prompt_ids) for p in plans)
        timer = metrics.request_started(plan.spec.method, prompt_tokens)
        limit = state.config.limits.request_timeout_s

        async def events() -> AsyncIterator[dict[str, str]]:
            sent_tokens = 0
            try:
                async with self.admission.slot():
                    timer.started()
                    for p, b in zip(plans, bodies, strict=True):
                        first = [True] * p.spec.n
                        # aclosing: a hang-up closes the sampler's stream now, not at GC time
                        async with aclosing(stream(state, p, limit)) as sampled:
                            async for event in sampled:
                                timer.tokens(len(event.token_ids))
                                sent_tokens += len(event.token_ids)
                                yield _event(b.chunk(event, first[event.index]))
                                first[event.index] = False
                timer.finished()
                if plan.include_usage:
                    yield _event(bodies[0].usage_chunk(usage(
                        prompt_tokens, sent_tokens, sum(p.generated_tokens for p in plans))))
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
