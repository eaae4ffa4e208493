"""POST /v1/rewards/score: {reward, prompt, completions} -> {scores}."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.schemas import RewardScoreRequest, RewardScoreResponse
from server.service import score

router = APIRouter()


@router.post("/v1/rewards/score", response_model=RewardScoreResponse)
async def score_rewards(body: RewardScoreRequest, request: Request) -> RewardScoreResponse:
    service = request.app.state.service
    service.check_model(body.model)
    name, scores = await score(service, body.reward, body.prompt, body.completions)
    return RewardScoreResponse(reward=name, scores=scores)
