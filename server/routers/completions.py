"""POST /v1/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.schemas import ERROR_RESPONSES, CompletionRequest, CompletionResponse

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse,
             responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}})
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    return await request.app.state.serving.completions(body, request)
