"""POST /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from server.schemas import ERROR_RESPONSES, ChatCompletionRequest, ChatCompletionResponse

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse,
             responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}})
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    return await request.app.state.serving.chat(body, request)
