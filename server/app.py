"""``create_app(config)``: the FastAPI app, layered like vLLM's entrypoints/openai.

    routers/        parse a request, call one ``Serving`` method, return it    (no logic)
    serving         one method per endpoint: plan -> run -> typed response, SSE, admission
    plan            validation: request -> ``Plan`` (defaults, limits, names resolved)
    generation      the sampler on the engine (timed), sampler/upstream errors -> domain errors
    streaming       the sampler's output as events (stop-string / UTF-8 holdback)
    postprocess     samples -> choices (stop strings, diagnostics, log-probs)
    responses       choices -> OpenAI bodies (``schemas``)
    engine_state    the engine and the rewards: opened at start-up, closed at shutdown
    errors          domain errors; ``http_errors`` maps them to status + OpenAI error JSON
    metrics, limits, auth, config

The engine is opened in the app's lifespan (``EngineState.open``) unless one is given.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from server.auth import ApiKeyCheck
from server.config import ServerConfig
from server.engine_state import EngineState
from server.errors import TiltError
from server.http_errors import error_response, install_handlers
from server.limits import Admission
from server.plan import Planner
from server.routers import chat, completions, health, models, rewards
from server.serving import Serving

log = logging.getLogger("tilt.server")


def attach(app: FastAPI, state: EngineState) -> None:
    """Make ``state`` the one the routes serve."""
    admission = Admission(state.config.limits, state.metrics,
                          engine_batch=getattr(state.handle, "max_num_seqs", None))
    app.state.engine_state = state
    app.state.serving = Serving(state, Planner(state), admission)


def create_app(config: ServerConfig, state: EngineState | None = None) -> FastAPI:
    """The app; opens the engine at start-up unless an open ``state`` is given (then the
    caller closes it)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = state is None
        opened = state or await EngineState.open(config)
        attach(app, opened)
        log.info("serving %s (engine %s); value models %s; rewards %s", opened.model_name,
                 opened.handle.kind, sorted(opened.handle.value_models), sorted(opened.rewards))
        try:
            yield
        finally:
            if own:
                await opened.aclose()

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
        except TiltError as exc:
            response = error_response(exc)
        engine_state = getattr(app.state, "engine_state", None)
        if response.status_code >= 400 and engine_state is not None:
            engine_state.metrics.error_answered(response.status_code)
        return response

    for module in (completions, chat, rewards, models, health):
        app.include_router(module.router)
    return app
