"""GET /v1/models: base model, value models and rewards with their metadata."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.schemas import ModelList

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return request.app.state.serving.list_models()
