"""POST /v1/rewards/score: {reward, prompt, completions} -> {scores}."""

from __future__ import annotations

from fastapi import APIRouter, Request

from server.schemas import ERROR_RESPONSES, RewardScoreRequest, RewardScoreResponse

router = APIRouter()


@router.post("/v1/rewards/score", response_model=RewardScoreResponse,
             responses=ERROR_RESPONSES)
async def score_rewards(body: RewardScoreRequest, request: Request) -> RewardScoreResponse:
    return await request.app.state.serving.score_rewards(body)
