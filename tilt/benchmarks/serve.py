"""``tilt bench serve``: Tilt's HTTP server against vLLM's own OpenAI server, side by side.

Starts vLLM's server (``python -m vllm.entrypoints.openai.api_server``) and ``tilt serve`` on
the same model with the same engine settings (dtype, max_model_len, max_num_seqs, step budget,
KV cache, prefix caching), each in its own process group on a loopback port. While one is
measured the other is paused (SIGSTOP on its whole group), so an idle engine takes no CPU.

Each repeat runs the same closed loop against each in turn: ``clients`` concurrent clients,
each sending ``requests`` completions of ``max_tokens`` tokens (``ignore_eos``: every request
generates exactly that many) one after the other, and measures

    tokens/s = completion tokens / wall time,  latency percentiles per request,

for vLLM, Tilt unguided (``guidance.method = none``) and Tilt token-guided (the default value
model). Ratios: Tilt/vLLM, and token/unguided against the ideal M/(M+m) (base and value-model
parameters, from Tilt's /v1/models). Then, on Tilt only, ``smc`` with P particles against
``best_of_n`` with N = P (``guidance.particles``) on the same ``smc_requests`` concurrent requests (no
``ignore_eos``: smc refuses it, so both may end early at EOS), while a
probe reads ``/health`` every 50 ms (its latency percentiles are the event loop's
responsiveness under particle load). Repeats are reported one by one and as median/min/max.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

SERVED_NAME = "bench"
PROMPTS = ["The movie was", "My favourite place in the city is", "Yesterday the weather",
           "Here is a short story about a dog:", "The best way to learn a language is",
           "Our team meeting today", "I think the new phone", "The restaurant around the corner"]


def percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 4)

    return {"n": len(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(s[-1], 4)}


def spread(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4),
            "max": round(max(xs), 4)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group: start (wait until ``ready_path`` answers
    200), pause/resume (SIGSTOP/SIGCONT on the group), stop (SIGINT, then SIGKILL)."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str,
                 log_path: Path, env: dict[str, str] | None = None):
        self.name, self.argv, self.ready_path, self.log_path = name, argv, ready_path, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.paused = False

    def start(self, ready_s: float = 900) -> float:
        t0 = time.time()
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env, start_new_session=True)
        while time.time() - t0 < ready_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return round(time.time() - t0, 1)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {ready_s:.0f} s (log {self.log_path})")

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:  # children (vLLM's engine core) share the group: none may be left
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


# ----------------------------------------------------------------------------- load


async def closed_loop(url: str, bodies: Callable[[int], dict[str, Any]], clients: int,
                      requests: int, timeout_s: float = 900) -> dict[str, Any]:
    """``clients`` workers, each sending ``requests`` POST /v1/completions back to back
    (worker w's k-th body is ``bodies(w * requests + k)``). Tokens/s from ``usage``."""
    latencies: list[float] = []
    tokens, generated, errors = 0, 0, []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        async def worker(w: int) -> None:
            nonlocal tokens, generated
            for k in range(requests):
                t0 = time.perf_counter()
                r = await client.post("/v1/completions", json=bodies(w * requests + k))
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                usage = r.json().get("usage") or {}
                tokens += int(usage.get("completion_tokens") or 0)
                generated += int(usage.get("generated_tokens") or 0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests": clients * requests, "completion_tokens": tokens,
            "generated_tokens": generated or None, "seconds": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2), "latency_s": percentiles(latencies),
            "errors": len(errors), "first_errors": errors[:3]}


async def with_health_probe(url: str, work: Any, every_s: float = 0.05) -> tuple[Any, dict]:
    """Run ``work`` while GET /health is timed every ``every_s``; (work's result, latency
    percentiles in ms)."""
    done = asyncio.Event()
    lat: list[float] = []

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while not done.is_set():
                t0 = time.perf_counter()
                await client.get("/health")
                lat.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(every_s)

    task = asyncio.create_task(probe())
    try:
        result = await work
    finally:
        done.set()
        await task
    return result, percentiles(lat)


def body(prompt: str, max_tokens: int, seed: int, guidance: dict | None = None,
         ignore_eos: bool = True) -> dict:
    b = {"model": SERVED_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 1.0,
         "seed": seed, **({"ignore_eos": True} if ignore_eos else {})}
    return {**b, "guidance": guidance} if guidance is not None else b


# ----------------------------------------------------------------------------- the benchmark


def engine_settings(max_num_seqs: int = 64) -> dict[str, Any]:
    """The settings both servers run with (Tilt's vLLM defaults on CPU, made explicit);
    ``max_model_len`` is added from what Tilt chose for the model."""
    return {"max_num_seqs": max_num_seqs, "dtype": "float32", "enforce_eager": True,
            "max_num_batched_tokens": 16384, "seed": 0, "enable_prefix_caching": True,
            "kv_cache_gib": 1, "block_size": 32}


def _vllm_server(model_dir: Path, s: dict[str, Any], log_dir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
            str(model_dir), "--served-model-name", SERVED_NAME, "--host", "127.0.0.1",
            "--port", str(port), "--dtype", s["dtype"], "--max-model-len",
            str(s["max_model_len"]), "--max-num-seqs", str(s["max_num_seqs"]),
            "--max-num-batched-tokens", str(s["max_num_batched_tokens"]),
            "--seed", str(s["seed"]), "--enable-prefix-caching", "--block-size", str(s["block_size"])]
    if s["enforce_eager"]:
        argv.append("--enforce-eager")
    return Server("vllm", argv, port, "/v1/models", log_dir / "vllm_server.log",
                  env={"VLLM_CPU_KVCACHE_SPACE": str(s["kv_cache_gib"])})


def _tilt_server(model: str | None, s: dict[str, Any], log_dir: Path) -> Server:
    port = free_port()
    argv = [str(Path(sys.executable).parent / "tilt"), "serve", "--port", str(port),
            "--served-model-name", SERVED_NAME, "--log-level", "warning"]
    if model:
        argv += ["--model", model]
    for key in ("max_num_seqs", "max_num_batched_tokens", "dtype", "enforce_eager", "seed",
                "kv_cache_gib", "block_size"):  # prefix caching: always on in Tilt's vLLM engine
        value = s[key] if isinstance(s[key], str) else json.dumps(s[key])
        argv += ["--engine-option", f"{key}={value}"]
    return Server("tilt", argv, port, "/ready", log_dir / "tilt_server.log")


async def _measure(server: Server, others: list[Server], work: Any) -> Any:
    for o in others:
        o.pause()
    server.resume()
    try:
        return await work
    finally:
        for o in others:
            o.resume()


async def run_serve_bench(model: str | None = None, clients: int = 32, requests: int = 2,
                          max_tokens: int = 64, repeats: int = 5, particles: int = 16,
                          smc_requests: int = 8, smc_tokens: int = 32, smc_repeats: int = 3,
                          smc_resample_every: int | None = None,
                          with_vllm: bool = True, progress: Callable[[str], None] | None = None,
                          log_dir: Path | None = None) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="tilt-bench-serve-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    settings = engine_settings()
    try:
        # Tilt first: it resolves the model (SmolLM2 by default) and its context length.
        tilt = _tilt_server(model, settings, log_dir)
        say(f"starting tilt serve (log {tilt.log_path})")
        servers.append(tilt)
        ready = {"tilt": tilt.start()}
        meta = httpx.get(tilt.url + "/v1/models", timeout=30).json()["data"]
        base = meta[0]["metadata"]
        vm = next((c["metadata"] for c in meta if c.get("kind") == "value_model"
                   and c["metadata"].get("default")), None)
        model_dir = Path(base["model"])
        settings["max_model_len"] = int(base["max_model_len"])
        M, m = int(base["parameters"]), int(vm["parameters"]) if vm else 0
        if with_vllm:
            tilt.pause()
            vllm = _vllm_server(model_dir, settings, log_dir)
            say(f"starting vLLM's server on {model_dir} (log {vllm.log_path})")
            servers.append(vllm)
            ready["vllm"] = vllm.start()
        runs: list[dict[str, Any]] = []
        token_guidance = {"method": "token"}

        def load(guidance: dict | None, tokens: int = max_tokens, ignore_eos: bool = True):
            return lambda i: body(PROMPTS[i % len(PROMPTS)], tokens, 1000 + i, guidance,
                                  ignore_eos)

        # warm-up: one round each, not reported (first-use compiles, prefix cache)
        for srv, g in ([(servers[1], None)] if with_vllm else []) + [(tilt, token_guidance)]:
            await _measure(srv, [o for o in servers if o is not srv],
                           closed_loop(srv.url, load(g, 8), min(clients, 4), 1))
        for r in range(repeats):
            row: dict[str, Any] = {}
            if with_vllm:
                row["vllm"] = await _measure(servers[1], [tilt], closed_loop(
                    servers[1].url, load(None), clients, requests))
            others = servers[1:]
            row["tilt_none"] = await _measure(tilt, others, closed_loop(
                tilt.url, load({"method": "none"}), clients, requests))
            row["tilt_token"] = await _measure(tilt, others, closed_loop(
                tilt.url, load(token_guidance), clients, requests))
            runs.append(row)
            say(f"repeat {r + 1}/{repeats}: " + ", ".join(
                f"{k} {v['tokens_per_s']} tok/s" for k, v in row.items()))
        particle_runs: list[dict[str, Any]] = []
        for r in range(smc_repeats):
            row = {}
            smc = {"method": "smc", "particles": particles}
            if smc_resample_every is not None:  # else the server's default
                smc["resample_every"] = smc_resample_every
            # best_of_n's N is guidance.particles (guidance.candidates is blockwise's)
            for method, g in (("best_of_n", {"method": "best_of_n", "particles": particles}),
                              ("smc", smc)):
                res, health = await _measure(tilt, servers[1:], with_health_probe(
                    tilt.url, closed_loop(tilt.url, load(g, smc_tokens, ignore_eos=False),
                                          smc_requests, 1)))
                row[method] = {**res, "health_ms": health}
            particle_runs.append(row)
            say(f"particles {r + 1}/{smc_repeats}: smc {row['smc']['seconds']} s, best_of_n "
                f"{row['best_of_n']['seconds']} s, /health p99 {row['smc']['health_ms']['p99']} ms")
    finally:
        for s in servers:
            s.stop()
    return _summary(runs, particle_runs, M, m, settings, ready, model_dir, clients, requests,
                    max_tokens, particles, smc_requests, smc_tokens, smc_resample_every, log_dir)


def _summary(runs, particle_runs, M, m, settings, ready, model_dir, clients, requests,
             max_tokens, particles, smc_requests, smc_tokens, smc_resample_every,
             log_dir) -> dict[str, Any]:
    ideal = M / (M + m) if m else 1.0

    def tps(key: str) -> list[float]:
        return [r[key]["tokens_per_s"] for r in runs if key in r]

    ratios: dict[str, Any] = {}
    if runs and "vllm" in runs[0]:
        ratios["tilt_none_over_vllm"] = spread([r["tilt_none"]["tokens_per_s"]
                                                / r["vllm"]["tokens_per_s"] for r in runs])
    if runs:
        guided = [r["tilt_token"]["tokens_per_s"] / r["tilt_none"]["tokens_per_s"] for r in runs]
        ratios["token_over_none"] = spread(guided)
        ratios["token_over_none_over_ideal"] = spread([g / ideal for g in guided])
    if particle_runs:
        ratios["smc_over_best_of_n_time"] = spread([r["smc"]["seconds"] / r["best_of_n"]["seconds"]
                                                    for r in particle_runs])
        ratios["health_p99_ms_during_smc"] = spread([r["smc"]["health_ms"]["p99"]
                                                     for r in particle_runs])
    return {
        "bench": "serve", "model": str(model_dir), "base_parameters": M,
        "value_model_parameters": m, "ideal_ratio": round(ideal, 4), "engine_settings": settings,
        "load": {"clients": clients, "requests_per_client": requests, "max_tokens": max_tokens,
                 "ignore_eos": True, "particles": particles, "smc_requests": smc_requests,
                 "smc_tokens": smc_tokens, "smc_resample_every": smc_resample_every},
        "startup_s": ready, "tokens_per_s": {k: spread(tps(k)) for k in ("vllm", "tilt_none",
                                                                           "tilt_token") if tps(k)},
        "ratios": ratios, "repeats": runs, "particle_repeats": particle_runs,
        "logs": str(log_dir), "cpu_count": os.cpu_count()}
