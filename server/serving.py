"""OpenAI response shapes for /v1/completions and /v1/chat/completions (streamed or not).

The routes call ``Serving.completions`` / ``Serving.chat``; the sampling itself is
``TiltService``. Streams are SSE events of JSON chunks ending with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request

from server.errors import TiltHTTPError, error_body
from server.limits import Admission, ClientDisconnected, cancel_on_disconnect
from server.metrics import RequestTimer
from server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    Usage,
    new_id,
    now,
)
from server.service import Choice, Plan, StreamEvent, TiltService

log = logging.getLogger("tilt.server")
ChunkFn = Callable[[StreamEvent, bool], dict[str, Any]]


class Serving:
    def __init__(self, service: TiltService, admission: Admission):
        self.service, self.admission = service, admission

    # ------------------------------------------------------------------ shared pipeline

    def _plan(self, req: CompletionRequest | ChatCompletionRequest, max_tokens: int | None,
              logprobs: int | None, max_tokens_param: str, logprobs_param: str) -> Plan:
        return self.service.plan(
            req.guidance, n=req.n, max_tokens=max_tokens, temperature=req.temperature,
            top_p=req.top_p, top_k=req.top_k, seed=req.seed, stop=req.stop, logprobs=logprobs,
            max_tokens_param=max_tokens_param, logprobs_param=logprobs_param)

    def _count_request(self, prompt_ids: list[int], plan: Plan) -> RequestTimer:
        m, name = self.service.metrics, self.service.model_name
        m.requests.labels(name, plan.spec.method).inc()
        m.prompt_tokens.labels(name).inc(len(prompt_ids))
        m.prompt_len.labels(name).observe(len(prompt_ids))
        return RequestTimer(m)

    async def _generate(self, raw: Request, prompt_ids: list[int], plan: Plan) -> list[Choice]:
        """Non-streamed: wait for a slot, run under the time limit, abort on disconnect."""
        timer = self._count_request(prompt_ids, plan)
        limit = self.service.config.limits.request_timeout_s
        async with self.admission.slot():
            timer.started()
            try:
                samples = await cancel_on_disconnect(
                    raw, asyncio.wait_for(self.service.run(prompt_ids, plan), limit))
            except asyncio.TimeoutError as exc:
                raise TiltHTTPError(504, f"request ran past the server's limit of {limit} s",
                                    code="timeout") from exc
            except ClientDisconnected:
                self.service.metrics.aborted.labels(self.service.model_name).inc()
                raise
            choices = [self.service.finalize(i, s, plan) for i, s in enumerate(samples)]
            if plan.logprobs is not None:
                await self.service.add_logprobs(prompt_ids, choices, plan.logprobs)
        timer.tokens(sum(len(c.token_ids) for c in choices))
        timer.finished(plan.spec.method)
        return choices

    def _stream(self, prompt_ids: list[int], plan: Plan, chunk: ChunkFn,
                usage_chunk: Callable[[Usage], dict[str, Any]] | None) -> EventSourceResponse:
        self.admission.check()  # 429 now, before the 200 of the stream is sent
        timer = self._count_request(prompt_ids, plan)
        service, limit = self.service, self.service.config.limits.request_timeout_s

        async def events() -> AsyncIterator[dict[str, str]]:
            sent_tokens, first = 0, [True] * plan.spec.n
            try:
                async with self.admission.slot():
                    timer.started()
                    # aclosing: a hang-up closes the sampler's stream now, not at GC time
                    async with aclosing(service.stream(prompt_ids, plan, limit)) as stream:
                        async for event in stream:
                            timer.tokens(len(event.token_ids))
                            sent_tokens += len(event.token_ids)
                            yield {"data": json.dumps(chunk(event, first[event.index]))}
                            first[event.index] = False
                timer.finished(plan.spec.method)
                if usage_chunk is not None:
                    usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=sent_tokens,
                                  total_tokens=len(prompt_ids) + sent_tokens)
                    yield {"data": json.dumps(usage_chunk(usage))}
            except TiltHTTPError as exc:
                yield {"data": json.dumps(error_body(exc.status, exc.message, exc.param,
                                                     exc.code))}
            except asyncio.TimeoutError:
                yield {"data": json.dumps(error_body(
                    504, f"request ran past the server's limit of {limit} s", code="timeout"))}
            except (asyncio.CancelledError, GeneratorExit):  # the client hung up
                service.metrics.aborted.labels(service.model_name).inc()
                raise
            except Exception as exc:  # noqa: BLE001 - reported in the stream, then [DONE]
                log.exception("stream failed")
                yield {"data": json.dumps(error_body(500, f"internal error: {type(exc).__name__}"))}
            yield {"data": "[DONE]"}

        return EventSourceResponse(events(), ping=15)

    @staticmethod
    def _usage(prompt_ids: list[int], choices: list[Choice]) -> Usage:
        completion = sum(len(c.token_ids) for c in choices)
        return Usage(prompt_tokens=len(prompt_ids), completion_tokens=completion,
                     total_tokens=len(prompt_ids) + completion)

    def _token_str(self, token_id: int) -> str:
        return self.service.handle.codec.decode([token_id])

    # ------------------------------------------------------------------ completions

    def _completion_logprobs(self, c: Choice, offset: int = 0) -> dict[str, Any] | None:
        if c.logprobs is None:
            return None
        tokens = [self._token_str(t) for t in c.token_ids]
        offsets, at = [], offset
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return {"tokens": tokens, "token_logprobs": [lp for lp, _ in c.logprobs],
                "top_logprobs": [{self._token_str(i): v for i, v in alts}
                                 for _, alts in c.logprobs],
                "text_offset": offsets}

    async def completions(self, req: CompletionRequest, raw: Request) -> Any:
        service = self.service
        service.check_model(req.model)
        prompt_ids = service.encode_prompt(req.prompt)
        plan = self._plan(req, req.max_tokens, req.logprobs, "max_tokens", "logprobs")
        rid, created = new_id("cmpl"), now()
        base = {"id": rid, "object": "text_completion", "created": created,
                "model": service.model_name}
        if req.stream:
            def chunk(ev: StreamEvent, _first: bool) -> dict[str, Any]:
                out: dict[str, Any] = {"index": ev.index, "text": ev.text, "logprobs": None,
                                       "finish_reason": None}
                if req.return_token_ids:
                    out["token_ids"] = ev.token_ids
                if ev.choice is not None:
                    c = ev.choice
                    out["finish_reason"] = c.finish_reason
                    out["tilt"] = c.tilt.model_dump()
                    if c.logprobs is not None:
                        out["logprobs"] = self._completion_logprobs(c)
                return {**base, "choices": [out]}

            usage = (lambda u: {**base, "choices": [], "usage": u.model_dump()}) \
                if req.stream_options and req.stream_options.include_usage else None
            return self._stream(prompt_ids, plan, chunk, usage)
        choices = await self._generate(raw, prompt_ids, plan)
        return {**base, "choices": [
            {"index": c.index, "text": c.text, "logprobs": self._completion_logprobs(c),
             "finish_reason": c.finish_reason,
             **({"token_ids": c.token_ids, "prompt_token_ids": prompt_ids}
                if req.return_token_ids else {}),
             "tilt": c.tilt.model_dump()} for c in choices],
            "usage": self._usage(prompt_ids, choices).model_dump()}

    # ------------------------------------------------------------------ chat

    def _chat_logprobs(self, c: Choice) -> dict[str, Any] | None:
        if c.logprobs is None:
            return None

        def entry(token_id: int, lp: float) -> dict[str, Any]:
            s = self._token_str(token_id)
            return {"token": s, "logprob": lp, "bytes": list(s.encode())}

        return {"content": [{**entry(t, lp), "top_logprobs": [entry(i, v) for i, v in alts]}
                            for t, (lp, alts) in zip(c.token_ids, c.logprobs, strict=True)]}

    async def chat(self, req: ChatCompletionRequest, raw: Request) -> Any:
        service = self.service
        service.check_model(req.model)
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise TiltHTTPError(400, "give either 'max_tokens' or 'max_completion_tokens'",
                                param="max_completion_tokens")
        if req.top_logprobs is not None and not req.logprobs:
            raise TiltHTTPError(400, "'top_logprobs' needs 'logprobs': true",
                                param="top_logprobs")
        max_tokens, mt_param = req.max_completion_tokens, "max_completion_tokens"
        if max_tokens is None:
            max_tokens, mt_param = req.max_tokens, "max_tokens"
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        prompt_ids = service.encode_chat(messages)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        plan = self._plan(req, max_tokens, logprobs, mt_param, "top_logprobs")
        rid, created = new_id("chatcmpl"), now()
        base = {"id": rid, "created": created, "model": service.model_name}
        if req.stream:
            def chunk(ev: StreamEvent, first: bool) -> dict[str, Any]:
                delta: dict[str, Any] = {"content": ev.text}
                if first:
                    delta["role"] = "assistant"
                out: dict[str, Any] = {"index": ev.index, "delta": delta, "logprobs": None,
                                       "finish_reason": None}
                if req.return_token_ids:
                    out["token_ids"] = ev.token_ids
                if ev.choice is not None:
                    out["finish_reason"] = ev.choice.finish_reason
                    out["tilt"] = ev.choice.tilt.model_dump()
                    out["logprobs"] = self._chat_logprobs(ev.choice)
                return {**base, "object": "chat.completion.chunk", "choices": [out]}

            usage = (lambda u: {**base, "object": "chat.completion.chunk", "choices": [],
                                "usage": u.model_dump()}) \
                if req.stream_options and req.stream_options.include_usage else None
            return self._stream(prompt_ids, plan, chunk, usage)
        choices = await self._generate(raw, prompt_ids, plan)
        return {**base, "object": "chat.completion", "choices": [
            {"index": c.index, "message": {"role": "assistant", "content": c.text},
             "logprobs": self._chat_logprobs(c), "finish_reason": c.finish_reason,
             **({"token_ids": c.token_ids, "prompt_token_ids": prompt_ids}
                if req.return_token_ids else {}),
             "tilt": c.tilt.model_dump()} for c in choices],
            "usage": self._usage(prompt_ids, choices).model_dump()}
