"""``tilt bench quality``: issue 19's measurement over HTTP, on prompts held out in advance.

Starts ``tilt serve`` (its default model and value model unless ``model`` says otherwise) and,
for every prompt of a file used neither for training nor for choosing beta, asks for ``n``
completions of up to ``max_tokens`` tokens (stopping at EOS; seed fixed: request i has seed
``seed + i``) with each method, the reward named so every choice is scored:

    none        pi_ref
    token       the default value model at the server's beta (or ``beta``)
    best_of_n   N = ``best_of`` draws from pi_ref, the best by the reward

Reported per method: mean reward and its standard error over prompts (each prompt's mean
over its n choices), and the wall time of the method's requests sent by ``clients`` closed-loop
clients; for ``token``: the mean of ``kl_to_base`` (each sample's log q(y) - log pi_ref(y), or the
exact per-step sum with the engine option ``exact_kl``: either way an unbiased estimate of
KL(q || pi_ref)) against best-of-N's bound log N - (N-1)/N, and its time over ``none``'s.
The verdict is issue 19's goal: token reward >= best-of-N reward, KL below the bound, time
<= 1.5x unguided.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tilt.benchmarks.serve import Server, _tilt_server, engine_settings


def _body(prompt: str, max_tokens: int, n: int, seed: int, guidance: dict) -> dict:
    return {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "n": n,
            "temperature": 1.0, "seed": seed, "guidance": guidance}


def _summary(per_prompt: dict[int, list[float]]) -> dict[str, float]:
    means = [statistics.fmean(v) for _, v in sorted(per_prompt.items())]
    se = statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else math.nan
    return {"mean_reward": round(statistics.fmean(means), 4), "se": round(se, 4),
            "prompts": len(means)}


async def run_quality_bench(prompts: list[str], *, model: str | None = None,
                            reward: str = "vader", n: int = 8, max_tokens: int = 24,
                            best_of: int = 8, beta: float | None = None, seed: int = 0,
                            clients: int = 8, progress: Callable[[str], None] | None = None,
                            log_dir: Path | None = None) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="tilt-bench-quality-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    methods = {"none": {"method": "none", "reward": reward},
               "token": {"method": "token", "reward": reward,
                         **({"beta": beta} if beta is not None else {})},
               "best_of_n": {"method": "best_of_n", "particles": best_of, "reward": reward}}
    server: Server = _tilt_server(model, engine_settings(), log_dir)
    say(f"starting tilt serve (log {server.log_path})")
    out: dict[str, Any] = {"bench": "quality", "reward": reward, "n": n, "max_tokens": max_tokens,
                           "best_of": best_of, "seed": seed, "clients": clients,
                           "prompts": len(prompts), "methods": {}}
    try:
        out["startup_s"] = server.start()
        for g in methods.values():  # warm-up, not reported (first-use compiles)
            await _all(server.url, prompts[:2], 4, 2, 0, g, 2, lambda i, r: None)
        for name, guidance in methods.items():
            row = await _method(server.url, prompts, max_tokens, n, seed, guidance, clients)
            out["methods"][name] = row
            say(f"{name}: mean reward {row['mean_reward']} ± {row['se']}, {row['seconds']} s")
    finally:
        server.stop()
    m = out["methods"]
    bound = math.log(best_of) - (best_of - 1) / best_of
    ratio = m["token"]["seconds"] / m["none"]["seconds"]
    out["goal"] = {
        "kl_bound": round(bound, 4), "token_time_over_none": round(ratio, 3),
        "reward_at_least_best_of_n": m["token"]["mean_reward"] >= m["best_of_n"]["mean_reward"],
        "kl_below_bound": (m["token"]["kl_to_base"] or math.inf) < bound,
        "time_at_most_1_5x": ratio <= 1.5}
    out["goal"]["met"] = all(v for k, v in out["goal"].items() if isinstance(v, bool))
    out["log_dir"] = str(log_dir)
    return out


async def _method(url: str, prompts: list[str], max_tokens: int, n: int, seed: int,
                  guidance: dict, clients: int) -> dict[str, Any]:
    """One method over every prompt: reward summary, wall time, mean kl_to_base, betas."""
    rewards: dict[int, list[float]] = {}
    kls: list[float] = []
    betas: set[float] = set()

    def collect(i: int, resp: dict) -> None:
        for c in resp["choices"]:
            t = c.get("tilt") or {}
            rewards.setdefault(i, []).append(float(t["reward"]))
            if t.get("kl_to_base") is not None:
                kls.append(float(t["kl_to_base"]))
            if t.get("beta") is not None:
                betas.add(float(t["beta"]))

    run = await _all(url, prompts, max_tokens, n, seed, guidance, clients, collect)
    return {**_summary(rewards), "seconds": run["seconds"], "errors": run["errors"],
            "first_errors": run["first_errors"],
            "kl_to_base": round(statistics.fmean(kls), 4) if kls else None,
            "beta": sorted(betas)}


async def _all(url: str, prompts: list[str], max_tokens: int, n: int, seed: int,
               guidance: dict, clients: int, collect: Callable[[int, dict], None]) -> dict:
    """Every prompt once (request i: prompt i, seed + i), ``clients`` requests in flight."""
    import asyncio
    import time

    import httpx

    todo, errors = list(range(len(prompts)))[::-1], []
    async with httpx.AsyncClient(base_url=url, timeout=900) as client:
        async def worker() -> None:
            while todo:
                i = todo.pop()
                r = await client.post("/v1/completions",
                                      json=_body(prompts[i], max_tokens, n, seed + i, guidance))
                if r.status_code == 200:
                    collect(i, r.json())
                else:
                    errors.append(f"{r.status_code}: {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
    return {"seconds": round(time.perf_counter() - t0, 3), "errors": len(errors),
            "first_errors": errors[:3]}
