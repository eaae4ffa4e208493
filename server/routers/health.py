"""GET /health (process alive), /ready (engine open), /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.errors import NotReady

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> dict[str, str]:
    state = getattr(request.app.state, "engine_state", None)
    if state is None or not state.ready:
        raise NotReady("engine not ready")
    return {"status": "ready", "model": state.model_name}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.engine_state.metrics.render(),
                    media_type=CONTENT_TYPE_LATEST)
