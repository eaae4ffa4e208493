"""Running a plan: ``decoders.generate`` on the engine (or a reward over completions), timed,
with the sampler's and the reward service's failures turned into domain errors.

    samples = await run(state, plan, on_tokens, timeout_s)   # list[Sample]
    scores = await score(score_plan)                          # list[float | None]

    ValueError from the sampler      -> BadRequest('guidance')
    a reward service that failed     -> UpstreamFailed('guidance.reward' / 'reward')
    past ``timeout_s``               -> TimedOut
    the server began shutting down   -> ShuttingDown (the sampler is cancelled)
"""

from __future__ import annotations

import asyncio
from typing import Any

from decoders.results import Sample
from server.engine_state import EngineState
from server.errors import BadRequest, ShuttingDown, TimedOut, UpstreamFailed
from server.plan import Plan, ScorePlan
from server.postprocess import finite, stop_at
from server.timing import Clock, TimedReward, TimedValue


def _upstream_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning an external reward service failed."""
    try:
        from rewards.errors import RewardServiceError
    except ImportError:
        return ()
    return (RewardServiceError,)


async def run(state: EngineState, plan: Plan, on_tokens: Any = None,
              timeout_s: float | None = None) -> list[Sample]:
    """The sampler on the engine; the time spent in the value model and the reward is
    recorded in the metrics however the run ends, the tokens the engine generated for it in
    ``plan.generated_tokens`` (``usage.generated_tokens``)."""
    from decoders.counting import counting
    from decoders.generate import generate  # looked up per call (tests may wrap it)

    if state.closing.is_set():
        raise ShuttingDown()
    value_clock, reward_clock = Clock(), Clock()
    value = TimedValue(plan.value, value_clock) if plan.value is not None else None
    reward = TimedReward(plan.reward, reward_clock) if plan.reward is not None else None
    lm = counting(state.handle.lm)  # every particle's, draw's and candidate's tokens
    try:
        return await _unless_closing(state, asyncio.wait_for(
            generate(lm, plan.prompt_ids, plan.spec, value=value, reward=reward,
                     on_tokens=on_tokens, stop_at=stop_at(state.handle.codec, plan)),
            timeout_s))
    except asyncio.TimeoutError as exc:
        raise TimedOut(timeout_s) from exc
    except _upstream_errors() as exc:  # type: ignore[misc]
        raise UpstreamFailed(f"reward service failed: {exc}", "guidance.reward") from exc
    except ValueError as exc:
        raise BadRequest(f"guidance rejected by the sampler: {exc}", "guidance") from exc
    finally:
        plan.generated_tokens += lm.positions
        state.metrics.sampler_time(value_clock.seconds if value is not None else None,
                                   reward_clock.seconds if reward is not None else None)


async def _unless_closing(state: EngineState, work: Any) -> list[Sample]:
    """Await ``work``; if the server starts shutting down first, cancel it (aborting its
    engine requests) and raise ``ShuttingDown``."""
    task = asyncio.ensure_future(work)
    closing = asyncio.ensure_future(state.closing.wait())
    try:
        done, _ = await asyncio.wait({task, closing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closing.cancel()
        if not task.done():  # shutting down, or our caller was cancelled (a hang-up)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task not in done:
        raise ShuttingDown()
    return task.result()


async def score(plan: ScorePlan) -> list[float | None]:
    """R(prompt, y) for each completion of a ``ScorePlan``."""
    reward = plan.reward
    try:
        if plan.texts is not None:
            out = reward.score_text(*plan.texts)  # type: ignore[attr-defined]
            values = await out if asyncio.iscoroutine(out) else out
        else:
            assert plan.ids is not None
            values = (await reward.score(*plan.ids)).tolist()
    except _upstream_errors() as exc:  # type: ignore[misc]
        raise UpstreamFailed(f"reward service failed: {exc}", "reward") from exc
    return [finite(float(v)) for v in values]
