"""GET /health (process alive), /ready (engine open), /metrics (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from server.errors import TiltHTTPError

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> dict[str, str]:
    service = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        raise TiltHTTPError(503, "engine not ready", code="not_ready")
    return {"status": "ready", "model": service.model_name}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.service.metrics.render(),
                    media_type=CONTENT_TYPE_LATEST)
