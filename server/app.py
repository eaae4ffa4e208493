"""``create_app(config)``: the FastAPI app, layered like vLLM's entrypoints/openai.

    routers/  parse a request, call the service, return   (no logic)
    serving   OpenAI response shapes, streaming, admission
    service   request -> GuidanceSpec -> decoders.generate on the EngineHandle
The engine is opened in the app's lifespan with ``engines.loader.open_engine``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from server.auth import ApiKeyCheck
from server.config import ServerConfig
from server.errors import TiltHTTPError, error_response, install_handlers
from server.limits import Admission
from server.routers import chat, completions, health, models, rewards
from server.service import TiltService
from server.serving import Serving

log = logging.getLogger("tilt.server")


def attach(app: FastAPI, service: TiltService) -> None:
    """Make ``service`` the one the routes use."""
    admission = Admission(service.config.limits, service.metrics)
    app.state.service = service
    app.state.admission = admission
    app.state.serving = Serving(service, admission)


def create_app(config: ServerConfig, service: TiltService | None = None) -> FastAPI:
    """The app; opens the engine at start-up unless an open ``service`` is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = service is None
        svc = service or await TiltService.open(config)
        attach(app, svc)
        log.info("serving %s (engine %s); value models %s; rewards %s", svc.model_name,
                 svc.handle.kind, sorted(svc.handle.value_models), sorted(svc.rewards))
        try:
            yield
        finally:
            if own:
                await svc.aclose()

    app = FastAPI(title="Tilt", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible sampling from energy-tilted LM distributions.")
    install_handlers(app)

    keys = ApiKeyCheck(config.api_keys)

    @app.middleware("http")
    async def guard_and_count(request: Request, call_next):  # noqa: ANN001, ANN202
        """API keys on /v1/*, then count error responses by status."""
        try:
            if keys.guards(request.url.path):
                keys.check(request)
            response = await call_next(request)
        except TiltHTTPError as exc:
            response = error_response(exc)
        svc = getattr(app.state, "service", None)
        if response.status_code >= 400 and svc is not None:
            svc.metrics.errors.labels(svc.model_name, str(response.status_code)).inc()
        return response

    for module in (completions, chat, rewards, models, health):
        app.include_router(module.router)
    return app
