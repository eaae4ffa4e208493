"""A tiny reference reward service: serves any text reward over HTTP (the wire format).

    POST /score   {"prompt": str, "completions": [str, ...]}
       200   ->   {"scores": [number | null, ...]}   (null = -inf, a violated hard constraint)
       422   on a malformed request (FastAPI validation)
    GET  /health  -> {"status": "ok", "reward": NAME}

Run it:  python -m rewards.http_server --reward vader --host 127.0.0.1 --port 8100
and point Tilt at it with the reward spec  http:http://127.0.0.1:8100/score .
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from pydantic import BaseModel, Field


class ScoreRequest(BaseModel):
    prompt: str = ""
    completions: list[str] = Field(default_factory=list)


class ScoreResponse(BaseModel):
    scores: list[float | None]


def to_wire(scores: list[float]) -> list[float | None]:
    """-inf -> null (JSON has no infinities)."""
    return [None if s == -math.inf else float(s) for s in scores]


def create_app(reward: Any, path: str = "/score") -> Any:
    """A FastAPI app serving ``reward.score_text`` at ``path``."""
    from fastapi import FastAPI

    app = FastAPI(title="Tilt reference reward service")
    name = getattr(reward, "name", type(reward).__name__)

    @app.post(path, response_model=ScoreResponse)
    async def score(req: ScoreRequest) -> ScoreResponse:
        return ScoreResponse(scores=to_wire(await reward.score_text(req.prompt, req.completions)))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "reward": name}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from rewards.loader import load_reward

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reward", default="vader", help="a text-reward spec (default: vader)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args(argv)
    reward = load_reward(args.reward)
    if not hasattr(reward, "score_text"):
        ap.error(f"reward {args.reward!r} does not score text")
    uvicorn.run(create_app(reward), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
