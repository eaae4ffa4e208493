"""Robustness of a real Tilt server: fuzzing, a soak, and slow clients (issue 16).

    .venv/bin/python bench/robustness.py --model demo --fuzz-cases 1000 --soak-s 600 \\
        --out docs/bench/robustness.json
    .venv/bin/python bench/robustness.py --model toy --fuzz-cases 200 --soak-s 30   # quick

Starts ONE ``tilt serve`` (uvicorn on a free loopback port; ``--model demo`` is the bundled
demo models on vLLM, ``--model toy`` the toy engine), then

  fuzz    schemathesis over every operation of the server's /openapi.json (positive and
          negative generation, >= --fuzz-cases cases in all), plus the methods no path
          declares (405) and an unknown path (404): status codes per operation; every 5xx,
          every error that is not OpenAI error JSON and every in-band stream error of type
          internal_error is recorded with its body.
  soak    --soak-s seconds of --concurrency async httpx clients: completions and chat with
          guidance none/token/best_of_n/smc/importance/blockwise, streams, streams closed
          after their first chunk, requests abandoned before their answer, bad input
          (4xx expected), reward scores and GETs. Per kind: ok / 4xx / 5xx / transport
          errors and latency percentiles; the server's RSS (children included) sampled;
          afterwards tilt:num_requests_running, tilt:num_requests_waiting and
          tilt:engine_requests_running must be back to 0 (no leaked running requests).
  slow    while --slow-readers raw sockets (a small receive buffer) read one streamed
          answer one byte per 10 ms, the latency of ordinary requests vs a baseline.

Writes every number to --out (JSON) and exits 1 if any 5xx, non-OpenAI error, in-band
internal error or leaked request was seen. ``fuzz``, ``soak`` and ``slow_clients`` also run
against any URL (tests/server/test_robustness.py runs short versions on the toy server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tilt.benchmarks.serve import percentiles  # the same summary as tilt bench serve

REPO = Path(__file__).resolve().parents[1]
TOY_SPEC = "toy:vocab=8,len=4,seed=0"
METHODS = ("none", "token", "best_of_n", "smc", "importance", "blockwise")
GAUGES = ("tilt:num_requests_running", "tilt:num_requests_waiting",
          "tilt:engine_requests_running")
# Caps of the served bench server (keeps each fuzzed generation short on a CPU engine).
BENCH_LIMITS = {"max_n": 8, "max_particles": 8, "max_candidates": 8, "max_tokens": 16}


# ----------------------------------------------------------------------------- helpers


def openai_error(text: str) -> bool:
    """Is ``text`` OpenAI's error JSON: {"error": {"message": str, "type": str, ...}}?"""
    try:
        err = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (isinstance(err, dict) and isinstance(err.get("message"), str) and
            bool(err["message"]) and isinstance(err.get("type"), str) and bool(err["type"]))


def sse_errors(text: str) -> list[dict]:
    """The in-band error events of an SSE body."""
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and '"error"' in line:
            try:
                body = json.loads(line[5:].strip())
            except ValueError:
                continue
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                out.append(body["error"])
    return out


def read_metrics(url: str) -> dict[str, float]:
    """Every sample on GET /metrics, summed over labels: name -> value (for counters with
    labels, also name{label=value,...})."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = defaultdict(float)
    text = httpx.get(url + "/metrics", timeout=30).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] += s.value
            extra = {k: v for k, v in s.labels.items() if k != "model_name"}
            if extra and not s.name.endswith(("_bucket", "_sum", "_count", "_created")):
                key = s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())) + "}"
                out[key] += s.value
    return dict(out)


def gauges(url: str) -> dict[str, float]:
    m = read_metrics(url)
    return {g: m.get(g, 0.0) for g in GAUGES}


def settle(url: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Wait until the load gauges are 0 (cancelled work needs a moment to abort)."""
    first = gauges(url)
    t0 = time.time()
    now = first
    while any(now.values()) and time.time() - t0 < timeout_s:
        time.sleep(0.5)
        now = gauges(url)
    return {"right_after": first, "after_settle": now,
            "settle_s": round(time.time() - t0, 2), "leaked": int(now[GAUGES[0]] + now[GAUGES[1]]),
            "engine_leaked": int(now[GAUGES[2]])}


@dataclass
class Target:
    """What the server serves (from GET /v1/models): names and prompts to use."""

    url: str
    model: str
    engine: str
    value_models: list[str]
    rewards: list[str]
    max_tokens: int
    vocab_size: int
    prompts: list[str] = field(default_factory=list)
    unavailable_rewards: list[str] = field(default_factory=list)

    @classmethod
    def discover(cls, url: str) -> Target:
        data = httpx.get(url + "/v1/models", timeout=30).json()["data"]
        base = next(m for m in data if m["kind"] == "base_model")
        meta = base["metadata"]
        t = cls(url=url, model=base["id"], engine=meta.get("engine", "?"),
                value_models=[m["id"] for m in data if m["kind"] == "value_model"],
                rewards=[m["id"] for m in data if m["kind"] == "reward"],
                max_tokens=int(meta.get("max_tokens") or 16),
                vocab_size=int(meta.get("vocab_size") or 0))
        if t.engine == "toy":
            t.prompts = ["<1><2>", "<3>", "<0><5><6>", "<4><4>"]
        else:
            t.prompts = ["The movie was", "I think that", "Once upon a time",
                         "The food at this place"]
        # Rewards that cannot score now (a reward service that is down answers 502 by
        # design) are left out of the mix.
        for name in list(t.rewards):
            r = httpx.post(url + "/v1/rewards/score", timeout=60, json={
                "reward": name, "prompt": t.prompts[0], "completions": [t.prompts[1]]})
            if r.status_code != 200:
                t.rewards.remove(name)
                t.unavailable_rewards.append(name)
        return t

    def guidance(self, method: str) -> dict[str, Any]:
        g: dict[str, Any] = {"method": method}
        if method != "none":
            if self.rewards:
                g["reward"] = self.rewards[0]
            if method in ("token", "smc", "blockwise") and self.value_models:
                g["value_model"] = self.value_models[0]
        if method in ("best_of_n", "smc", "importance"):
            g["particles"] = 4
        if method == "blockwise":
            g.update(block_size=2, candidates=4)
        return g

    def usable(self, method: str) -> bool:
        needs_vm = method in ("token", "smc", "blockwise")
        return (method == "none" or bool(self.rewards)) and (not needs_vm or bool(self.value_models))


# ----------------------------------------------------------------------------- fuzz


class _Progress:
    """rich progress bars, or nothing (tests)."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn())
            self.bar.start()

    def task(self, name: str, total: float) -> Any:
        return None if self.bar is None else self.bar.add_task(name, total=total)

    def advance(self, task: Any, n: float = 1, **kw: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, advance=n, **kw)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _short(text: str, n: int = 600) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


def _fuzz_test(op: Any, strategy: Any, want: int, seed_value: int, calls: list[int],
               url: str, timeout_s: float, record: Any, status: dict, failures: list,
               conformance: Counter | None) -> Any:
    """A hypothesis test that sends ``want`` generated cases of ``op``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    @hseed(seed_value)
    @settings(max_examples=want, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def test(case: Any) -> None:
        calls[0] += 1
        try:
            r = case.call(base_url=url, timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a transport error is a finding
            status[op.label]["transport_error"] += 1
            failures.append({"kind": "transport error", "operation": op.label,
                             "request_body": _short(repr(case.body), 400),
                             "response": repr(exc)})
            return
        ctype = r.headers.get("content-type", "")
        ctype = ctype[0] if isinstance(ctype, list) and ctype else str(ctype)
        record(op.label, op.method.upper(), op.path, case.body, r.status_code, r.text, ctype)
        if conformance is not None:
            try:
                case.validate_response(r)
            except BaseException as exc:  # noqa: BLE001 - schemathesis' checks (a FailureGroup)
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                for f in getattr(exc, "exceptions", [exc]):
                    title = getattr(f, "title", type(f).__name__)
                    conformance[f"{op.label}: {title}"] += 1

    return test


def _steer(t: Target, rng_seed: int = 0) -> Any:
    """Adjust a schema-valid body to the served names and small caps (drop ``model``, use a
    served reward / value model, clamp counts, toy-readable text), so that it gets past the
    name checks into the sampler."""
    import copy

    vocab = max(2, t.vocab_size - 1) if t.vocab_size else 2

    def text(v: Any) -> Any:
        if t.engine == "toy" and isinstance(v, str):
            return t.prompts[len(v) % len(t.prompts)]
        return v

    def fix(case: Any) -> Any:
        b = case.body
        if not isinstance(b, dict):
            return case
        b = copy.deepcopy(b)
        b.pop("model", None)
        for key, cap in (("max_tokens", min(8, t.max_tokens)),
                         ("max_completion_tokens", min(8, t.max_tokens)), ("n", 2),
                         ("logprobs", 5), ("top_logprobs", 5), ("min_tokens", 1)):
            v = b.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > cap:
                b[key] = cap
        if t.engine == "toy":  # vLLM's sampler fields: 400 on other engines
            for key in ("min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
                        "logit_bias", "min_tokens", "ignore_eos"):
                b.pop(key, None)
        if isinstance(b.get("stop_token_ids"), list):
            b["stop_token_ids"] = [x % vocab for x in b["stop_token_ids"][:4]
                                   if isinstance(x, int)]
        if isinstance(b.get("stop"), list):
            b["stop"] = b["stop"][:2]
        p = b.get("prompt")
        if isinstance(p, list):
            p = [(x % vocab) if isinstance(x, int) else x for x in p[:4]]
            p = [[y % vocab for y in x[:8]] if isinstance(x, list) else text(x) for x in p]
        b["prompt"] = text(p) if "prompt" in b else None
        if b["prompt"] is None:
            b.pop("prompt")
        if isinstance(b.get("completions"), list):
            b["completions"] = [text(c) if isinstance(c, str) else [y % vocab for y in c[:8]]
                                for c in b["completions"][:4]]
        for m in b.get("messages") or []:
            if isinstance(m, dict) and isinstance(m.get("content"), str):
                m["content"] = text(m["content"])
        if "reward" in b and t.rewards:
            b["reward"] = t.rewards[0]
        g = b.get("guidance")
        if isinstance(g, dict):
            for key in ("particles", "candidates", "block_size"):
                if isinstance(g.get(key), int) and g[key] > 4:
                    g[key] = 4
            if "value_model" in g:
                g["value_model"] = t.value_models[0] if t.value_models else None
            if "reward" in g:
                g["reward"] = t.rewards[0] if t.rewards else None
            if isinstance(g.get("rewards"), list):
                g["rewards"] = [{"name": r, "weight": 1.0} for r in t.rewards[:2]] or None
        case.body = b
        return case

    return fix


def fuzz(url: str, cases: int = 1000, seed: int = 0, timeout_s: float = 120,
         progress: _Progress | None = None, schema_checks: bool = True) -> dict[str, Any]:
    """Schemathesis over every operation of /openapi.json, >= ``cases`` cases in all."""
    import schemathesis
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    progress = progress or _Progress(False)
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    with_body = [op for op in ops if op.body]
    without = [op for op in ops if not op.body]
    small = 5  # operations without parameters have (almost) one case each
    quota = {op.label: small for op in without}
    rest = max(0, cases - small * len(without))
    for i, op in enumerate(with_body):
        quota[op.label] = rest // len(with_body) + (1 if i < rest % len(with_body) else 0)
    status: dict[str, Counter] = defaultdict(Counter)
    failures: list[dict[str, Any]] = []
    conformance: Counter = Counter()
    modes: dict[str, list[str]] = {}
    t0 = time.time()
    declared = {p: {m.upper() for m in ms} for p, ms in schema.raw_schema["paths"].items()}
    verbs = ("GET", "POST", "PUT", "PATCH", "DELETE")
    undeclared = [(p, m) for p, ms in [*declared.items(), ("/v1/no-such-path", set())]
                  for m in verbs if m not in ms]
    bar = progress.task("fuzz", total=sum(quota.values()) + len(undeclared))

    def record(label: str, method: str, path: str, body: Any, code: int, text: str,
               ctype: str) -> None:
        status[label][str(code)] += 1
        progress.advance(bar)
        bad = None
        if code >= 500:
            bad = "5xx"
        elif code >= 400 and not openai_error(text):
            bad = "error is not OpenAI error JSON"
        elif "text/event-stream" in ctype:
            internal = [e for e in sse_errors(text) if e.get("type") == "internal_error"]
            if internal:
                bad = "in-band internal_error in a stream"
        if bad:
            failures.append({"kind": bad, "operation": label, "method": method, "path": path,
                             "status": code, "request_body": _short(repr(body), 400),
                             "response": _short(text)})

    target = Target.discover(url)
    for op in ops:
        strategies = []
        modes[op.label] = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategies.append(op.as_strategy(generation_mode=mode))
                modes[op.label].append(mode.value)
            except Exception:  # noqa: BLE001 - nothing negative to generate (no parameters)
                continue
        if op.body:  # positive cases steered to the served names (they reach the sampler)
            strategies.append(op.as_strategy(generation_mode=GenerationMode.POSITIVE)
                              .map(_steer(target)))
            modes[op.label].append("positive, steered to the served names and caps")
        strategy = st.one_of(*strategies)
        done = 0
        for round_ in range(60):
            want = quota[op.label] - done
            if want <= 0:
                break
            calls = [0]
            test = _fuzz_test(op, strategy, want, seed * 1000 + round_, calls, url, timeout_s,
                              record, status, failures, conformance if schema_checks else None)
            try:
                test()
            except Exception as exc:  # noqa: BLE001 - generation gave up (unsatisfiable)
                failures.append({"kind": "generation error", "operation": op.label,
                                 "response": repr(exc)[:300]})
                break
            done += calls[0]
            if calls[0] == 0 or (not op.body and round_ >= 4):
                break

    # Methods no path declares, and a path that does not exist: 405 / 404 as OpenAI JSON.
    with httpx.Client(base_url=url, timeout=timeout_s) as client:
        for path, method in undeclared:
            r = client.request(method, path, json={} if method != "GET" else None)
            record(f"{method} {path} (undeclared)", method, path, {}, r.status_code,
                   r.text, r.headers.get("content-type", ""))
    progress.advance(bar, 0, total=sum(sum(c.values()) for c in status.values()))
    total = sum(sum(c.values()) for c in status.values())
    codes: Counter = Counter()
    for c in status.values():
        codes.update(c)
    return {"cases": total, "seconds": round(time.time() - t0, 1),
            "operations": len(ops), "generation_modes": modes,
            "status_by_operation": {k: dict(sorted(v.items())) for k, v in status.items()},
            "status_total": dict(sorted(codes.items())),
            "server_errors_5xx": sum(n for k, n in codes.items() if k.startswith("5")),
            "failures": failures, "failure_count": len(failures),
            "schemathesis_conformance_findings": dict(conformance.most_common())}


# ----------------------------------------------------------------------------- soak


def bad_inputs(t: Target) -> list[tuple[str, str, str, Any]]:
    """(name, method, path, body or raw bytes) that must be answered 4xx."""
    p = t.prompts[0]
    reward = t.rewards[0] if t.rewards else "x"
    return [
        ("malformed_json", "POST", "/v1/completions", b'{"prompt": '),
        ("not_utf8", "POST", "/v1/completions", b'{"prompt": "\xff\xfe"}'),
        ("body_is_list", "POST", "/v1/completions", [1, 2]),
        ("unknown_field", "POST", "/v1/completions", {"prompt": p, "bogus": 1}),
        ("beta_zero", "POST", "/v1/completions", {"prompt": p, "guidance": {"beta": 0}}),
        ("unknown_method", "POST", "/v1/completions",
         {"prompt": p, "guidance": {"method": "nope"}}),
        ("unknown_reward", "POST", "/v1/completions",
         {"prompt": p, "guidance": {"method": "best_of_n", "reward": "no-such-reward"}}),
        ("unknown_value_model", "POST", "/v1/completions",
         {"prompt": p, "guidance": {"method": "token", "value_model": "no-such-vm"}}),
        ("n_huge", "POST", "/v1/completions", {"prompt": p, "n": 10**6}),
        ("particles_huge", "POST", "/v1/completions",
         {"prompt": p, "guidance": {"method": "smc", "particles": 10**6}}),
        ("max_tokens_negative", "POST", "/v1/completions", {"prompt": p, "max_tokens": -1}),
        ("token_id_out_of_vocab", "POST", "/v1/completions", {"prompt": [10**9]}),
        ("prompt_wrong_type", "POST", "/v1/completions", {"prompt": 5}),
        ("prompt_too_long", "POST", "/v1/completions", {"prompt": [1] * 5000}),
        ("logit_bias_on_smc", "POST", "/v1/completions",
         {"prompt": p, "logit_bias": {"1": 5}, "guidance": {"method": "smc"}}),
        ("unknown_model", "POST", "/v1/completions", {"prompt": p, "model": "no-such-model"}),
        ("stream_beta_zero", "POST", "/v1/completions",
         {"prompt": p, "stream": True, "guidance": {"beta": 0}}),
        ("chat_no_messages", "POST", "/v1/chat/completions", {"messages": []}),
        ("chat_bad_role", "POST", "/v1/chat/completions",
         {"messages": [{"role": "wizard", "content": p}]}),
        ("score_unknown_reward", "POST", "/v1/rewards/score",
         {"reward": "no-such-reward", "prompt": p, "completions": [p]}),
        ("score_no_completions", "POST", "/v1/rewards/score",
         {"reward": reward, "prompt": p, "completions": []}),
        ("unknown_path", "GET", "/v1/no-such-path", None),
        ("wrong_http_method", "DELETE", "/v1/completions", None),
    ]


class Tally:
    """Per request kind: outcome counts and latencies."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.findings: list[dict[str, Any]] = []

    def add(self, kind: str, outcome: str, seconds: float | None = None,
            finding: dict[str, Any] | None = None) -> None:
        self.counts[kind]["requests"] += 1
        self.counts[kind][outcome] += 1
        if seconds is not None:
            self.latency[kind].append(seconds)
        if finding is not None and len(self.findings) < 50:
            self.findings.append({"kind": kind, "outcome": outcome, **finding})

    def status(self, kind: str, code: int, text: str, seconds: float,
               expect_4xx: bool = False) -> None:
        if code >= 500:
            self.add(kind, "5xx", seconds, {"status": code, "body": _short(text)})
        elif code >= 400:
            if not openai_error(text):
                self.add(kind, "4xx_not_openai_json", seconds, {"status": code,
                                                                "body": _short(text)})
            else:
                self.add(kind, "4xx", seconds)
        elif expect_4xx:
            self.add(kind, "unexpected_2xx", seconds, {"status": code, "body": _short(text)})
        else:
            self.add(kind, "ok", seconds)


def _rss(pid: int | None) -> int | None:
    """Resident memory of ``pid`` and all its children, bytes."""
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


async def _one(client: httpx.AsyncClient, t: Target, rng: random.Random, tally: Tally,
               bad: list) -> None:
    """One randomly chosen request of the soak mix."""
    roll = rng.random()
    methods = [m for m in METHODS if t.usable(m)]
    prompt = rng.choice(t.prompts)
    max_tokens = min(t.max_tokens, rng.choice((2, 4, 8)))
    t0 = time.perf_counter()
    if roll < 0.30:  # non-streamed completion
        m = rng.choice(methods)
        kind = f"completion:{m}"
        body = {"prompt": prompt, "max_tokens": max_tokens, "seed": rng.randrange(10**6),
                "guidance": t.guidance(m), "n": rng.choice((1, 1, 2))}
        r = await client.post("/v1/completions", json=body)
        tally.status(kind, r.status_code, r.text, time.perf_counter() - t0)
    elif roll < 0.45:  # non-streamed chat
        m = rng.choice(methods)
        kind = f"chat:{m}"
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "seed": rng.randrange(10**6), "guidance": t.guidance(m)}
        r = await client.post("/v1/chat/completions", json=body)
        tally.status(kind, r.status_code, r.text, time.perf_counter() - t0)
    elif roll < 0.70:  # a stream read to the end, or closed mid-way
        cancel = roll >= 0.60
        m = rng.choice(methods)
        chat = rng.random() < 0.4
        kind = ("cancelled_stream:" if cancel else "stream:") + ("chat:" if chat else "") + m
        body: dict[str, Any] = {"max_tokens": t.max_tokens if cancel else max_tokens,
                                "seed": rng.randrange(10**6), "guidance": t.guidance(m),
                                "stream": True, "n": 2 if cancel else 1,
                                "stream_options": {"include_usage": True}}
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        path = "/v1/chat/completions" if chat else "/v1/completions"
        keep = rng.choice((1, 2))
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                tally.status(kind, r.status_code, text, time.perf_counter() - t0)
                return
            lines, events, done = [], 0, False
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                events += 1
                lines.append(line)
                if line.strip() == "data: [DONE]":
                    done = True
                if cancel and events >= keep:
                    break  # leaving the block closes the connection mid-stream
        errors = sse_errors("\n".join(lines))
        seconds = time.perf_counter() - t0
        if any(e.get("type") == "internal_error" for e in errors):
            tally.add(kind, "in_band_internal_error", seconds, {"events": lines[-3:]})
        elif errors:
            tally.add(kind, "in_band_error", seconds, {"events": lines[-3:]})
        elif not cancel and not done:
            tally.add(kind, "stream_without_done", seconds, {"events": lines[-3:]})
        else:
            tally.add(kind, "ok", seconds)
    elif roll < 0.75:  # a non-streamed request abandoned before its answer
        m = rng.choice(methods)
        kind = f"abandoned:{m}"
        body = {"prompt": prompt, "max_tokens": t.max_tokens, "guidance": t.guidance(m),
                "n": 2}
        try:
            r = await asyncio.wait_for(client.post("/v1/completions", json=body),
                                       timeout=rng.uniform(0.02, 0.3))
        except asyncio.TimeoutError:
            tally.add(kind, "abandoned", time.perf_counter() - t0)
            return
        tally.status(kind, r.status_code, r.text, time.perf_counter() - t0)
    elif roll < 0.90:  # bad input
        name, method, path, payload = rng.choice(bad)
        kind = f"bad:{name}"
        if isinstance(payload, bytes):
            r = await client.request(method, path, content=payload,
                                     headers={"content-type": "application/json"})
        else:
            r = await client.request(method, path, json=payload)
        tally.status(kind, r.status_code, r.text, time.perf_counter() - t0, expect_4xx=True)
    elif roll < 0.95 and t.rewards:
        kind = "score"
        r = await client.post("/v1/rewards/score", json={
            "reward": rng.choice(t.rewards), "prompt": prompt,
            "completions": rng.sample(t.prompts, 2)})
        tally.status(kind, r.status_code, r.text, time.perf_counter() - t0)
    else:
        path = rng.choice(("/v1/models", "/health", "/ready", "/metrics"))
        kind = f"get:{path}"
        r = await client.get(path)
        tally.status(kind, r.status_code, r.text, time.perf_counter() - t0)


async def soak(url: str, seconds: float, concurrency: int = 4, seed: int = 0,
               pid: int | None = None, progress: _Progress | None = None,
               sample_every_s: float = 30.0, timeout_s: float = 300) -> dict[str, Any]:
    """The mixed-load soak; returns counts, latencies, RSS samples and the gauges after."""
    progress = progress or _Progress(False)
    t = await asyncio.to_thread(Target.discover, url)
    bad = bad_inputs(t)
    tally = Tally()
    rss: list[dict[str, float]] = []
    start = time.time()
    deadline = start + seconds
    bar = progress.task("soak (s)", total=int(seconds))

    def sample() -> None:
        value = _rss(pid)
        if value is not None:
            rss.append({"t_s": round(time.time() - start, 1), "rss_mb": round(value / 2**20, 1)})

    async def worker(i: int) -> None:
        rng = random.Random(seed * 100 + i)
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
            while time.time() < deadline:
                try:
                    await _one(client, t, rng, tally, bad)
                except (httpx.HTTPError, OSError) as exc:
                    tally.add("transport", "transport_error", None, {"error": repr(exc)})

    async def sampler() -> None:
        sample()
        last = time.time()
        while time.time() < deadline:
            await asyncio.sleep(1)
            progress.advance(bar, 1)
            if time.time() - last >= sample_every_s:
                await asyncio.to_thread(sample)
                last = time.time()

    await asyncio.gather(sampler(), *(worker(i) for i in range(concurrency)))
    elapsed = time.time() - start
    sample()
    after = await asyncio.to_thread(settle, url)
    metrics = await asyncio.to_thread(read_metrics, url)
    totals: Counter = Counter()
    for c in tally.counts.values():
        totals.update(c)
    all_lat = [x for xs in tally.latency.values() for x in xs]
    growth = None
    if len(rss) >= 2:
        growth = {"start_mb": rss[0]["rss_mb"], "end_mb": rss[-1]["rss_mb"],
                  "growth_mb": round(rss[-1]["rss_mb"] - rss[0]["rss_mb"], 1),
                  "max_mb": max(s["rss_mb"] for s in rss),
                  # from the first periodic sample on (the first requests warm caches up)
                  "growth_after_first_interval_mb": round(rss[-1]["rss_mb"] - rss[1]["rss_mb"], 1)
                  if len(rss) >= 3 else None}
    return {
        "seconds": round(elapsed, 1), "concurrency": concurrency,
        "requests": totals["requests"], "requests_per_s": round(totals["requests"] / elapsed, 2),
        "outcomes": {k: v for k, v in sorted(totals.items()) if k != "requests"},
        "server_errors_5xx": totals["5xx"],
        "transport_errors": totals["transport_error"],
        "in_band_internal_errors": totals["in_band_internal_error"],
        "non_openai_errors": totals["4xx_not_openai_json"],
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(tally.counts.items())},
        "latency_s": percentiles(all_lat),
        "latency_s_by_kind": {k: percentiles(v) for k, v in sorted(tally.latency.items())},
        "findings": tally.findings,
        "rss": growth, "rss_samples": rss,
        "gauges": after,
        "server_counters": {k: v for k, v in sorted(metrics.items())
                            if k.startswith(("tilt:requests_aborted_total",
                                             "tilt:requests_rejected_total",
                                             "tilt:request_errors_total",
                                             "tilt:requests_total"))},
    }


# ----------------------------------------------------------------------------- slow clients


class SlowReader(threading.Thread):
    """A raw HTTP/1.1 client that reads its (streamed) answer one byte per ``delay_s``."""

    def __init__(self, url: str, path: str, body: dict, delay_s: float = 0.01,
                 rcvbuf: int = 2048):
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.addr = (host, int(port))
        self.request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                        f"application/json\r\nContent-Length: {{}}\r\nConnection: close\r\n\r\n")
        self.body = json.dumps(body).encode()
        self.delay_s, self.rcvbuf = delay_s, rcvbuf
        self.stop_event = threading.Event()
        self.started_reading = threading.Event()
        self.bytes_read, self.status_line, self.finished, self.error = 0, "", False, None

    def run(self) -> None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                s.connect(self.addr)
                s.sendall(self.request.format(len(self.body)).encode() + self.body)
                head = b""
                while not self.stop_event.is_set():
                    b = s.recv(1)
                    if not b:
                        self.finished = True
                        break
                    self.bytes_read += 1
                    if not self.status_line:
                        head += b
                        if head.endswith(b"\r\n"):
                            self.status_line = head.decode(errors="replace").strip()
                            self.started_reading.set()
                    time.sleep(self.delay_s)
        except OSError as exc:
            self.error = repr(exc)
        finally:
            self.started_reading.set()


async def _timed_requests(client: httpx.AsyncClient, t: Target, n: int) -> tuple[list, list]:
    lat, bad = [], []
    for i in range(n):
        t0 = time.perf_counter()
        r = await client.post("/v1/completions", json={
            "prompt": t.prompts[i % len(t.prompts)], "max_tokens": min(4, t.max_tokens),
            "seed": i})
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200:
            bad.append({"status": r.status_code, "body": _short(r.text)})
    return lat, bad


async def slow_clients(url: str, readers: int = 2, requests: int = 20,
                       delay_s: float = 0.01, prompts: int = 4, n: int = 2) -> dict[str, Any]:
    """Latency of ordinary requests with and without ``readers`` byte-at-a-time streams
    (each ``prompts`` x ``n`` choices with logprobs: one chunk per token)."""
    t = await asyncio.to_thread(Target.discover, url)
    body = {"prompt": [t.prompts[0]] * prompts, "n": n, "max_tokens": t.max_tokens,
            "stream": True, "echo": True, "logprobs": min(20, max(1, t.vocab_size - 1)),
            "seed": 0, "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await _timed_requests(client, t, 3)  # warm-up
        base, base_bad = await _timed_requests(client, t, requests)
        slow = [SlowReader(url, "/v1/completions", body, delay_s) for _ in range(readers)]
        for s in slow:
            s.start()
        for s in slow:
            await asyncio.to_thread(s.started_reading.wait, 60)
        await asyncio.sleep(1.0)  # let their generations finish or block on the send
        held = []
        during, during_bad = [], []
        for _ in range(requests):
            lat, b = await _timed_requests(client, t, 1)
            during += lat
            during_bad += b
            held.append((await asyncio.to_thread(gauges, url))[GAUGES[0]])
        alive = [s.is_alive() and not s.finished for s in slow]
        for s in slow:
            s.stop_event.set()
        for s in slow:
            await asyncio.to_thread(s.join, 10)
    after = await asyncio.to_thread(settle, url)
    b50, d50 = percentiles(base)["p50"], percentiles(during)["p50"]
    return {
        "readers": readers, "read_delay_s": delay_s, "requests_each": requests,
        "slow_request": body,
        "baseline_latency_s": percentiles(base),
        "with_slow_readers_latency_s": percentiles(during),
        "p50_ratio": round(d50 / b50, 2) if b50 and d50 else None,
        "failed_requests": base_bad + during_bad,
        "slow_readers": [{"status_line": s.status_line, "bytes_read": s.bytes_read,
                          "still_streaming_at_end": a, "error": s.error}
                         for s, a in zip(slow, alive, strict=True)],
        "running_gauge_while_measuring": {"min": min(held), "max": max(held)},
        "gauges_after": after,
    }


# ----------------------------------------------------------------------------- the server


class ServerProcess:
    """``tilt serve`` in its own process group on a free loopback port."""

    def __init__(self, model: str, limits: dict[str, Any], log_path: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if model == "toy":
            model_args = ["--model", TOY_SPEC, "--reward", "toy=toy:seed=0"]
        else:
            model_args = ["--model", model]
        self.argv = [str(Path(sys.executable).parent / "tilt"), "serve", *model_args,
                     "--port", str(self.port), "--log-level", "warning",
                     *[a for k, v in limits.items() for a in ("--limit", f"{k}={v}")]]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, ready_s: float = 600) -> float:
        t0 = time.time()
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        while time.time() - t0 < ready_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return time.time() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {ready_s:.0f} s")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def log_findings(self) -> dict[str, Any]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if "Traceback" in ln or ln.startswith(("ERROR", "CRITICAL"))]
        return {"lines": len(lines), "error_lines": len(bad), "first_errors": bad[:10]}


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "dirty_files": len(git("status", "--porcelain").splitlines())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo", help="demo | toy | a model path/spec")
    ap.add_argument("--fuzz-cases", type=int, default=1000)
    ap.add_argument("--soak-s", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--slow-readers", type=int, default=2)
    ap.add_argument("--slow-requests", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", action="append", default=[], metavar="KEY=VALUE",
                    help=f"server limits on top of {BENCH_LIMITS}")
    ap.add_argument("--out", type=Path, default=REPO / "bench/out/robustness.json")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    limits = dict(BENCH_LIMITS)
    limits.update(dict(kv.split("=", 1) for kv in args.limit))
    log_path = Path(tempfile.mkdtemp(prefix="tilt-robustness-")) / "server.log"
    server = ServerProcess(args.model, limits, log_path)
    result: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "bench/robustness.py", *(argv or sys.argv[1:])]),
        "model": args.model, "server_argv": server.argv[1:], "limits": limits,
        "git": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()}}
    progress = _Progress(not args.no_progress)
    try:
        print(f"starting {' '.join(server.argv[1:])} (log {log_path})", file=sys.stderr)
        result["server_start_s"] = round(server.start(), 1)
        t = Target.discover(server.url)
        result["target"] = {"model": t.model, "engine": t.engine,
                            "value_models": t.value_models, "rewards": t.rewards,
                            "unavailable_rewards": t.unavailable_rewards,
                            "max_tokens": t.max_tokens}
        result["fuzz"] = fuzz(server.url, args.fuzz_cases, args.seed, progress=progress)
        result["fuzz"]["gauges_after"] = settle(server.url)
        result["soak"] = asyncio.run(soak(
            server.url, args.soak_s, args.concurrency, args.seed, server.proc.pid, progress,
            sample_every_s=min(30.0, max(1.0, args.soak_s / 10))))
        result["slow_clients"] = asyncio.run(slow_clients(
            server.url, args.slow_readers, args.slow_requests))
        result["rss_at_end_mb"] = round((_rss(server.proc.pid) or 0) / 2**20, 1)
    finally:
        progress.stop()
        result["server_exit_code"] = server.stop()
        result["server_log"] = server.log_findings()
    fz, sk, sl = result["fuzz"], result["soak"], result["slow_clients"]
    problems = {
        "fuzz_5xx": fz["server_errors_5xx"], "fuzz_failures": fz["failure_count"],
        "soak_5xx": sk["server_errors_5xx"], "soak_transport_errors": sk["transport_errors"],
        "soak_in_band_internal_errors": sk["in_band_internal_errors"],
        "soak_non_openai_errors": sk["non_openai_errors"],
        "leaked_running_requests": sk["gauges"]["leaked"] + sl["gauges_after"]["leaked"]
        + fz["gauges_after"]["leaked"],
        "leaked_engine_requests": sk["gauges"]["engine_leaked"],
        "slow_client_failed_requests": len(sl["failed_requests"])}
    result["problems"] = problems
    result["passed"] = not any(problems.values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"out": str(args.out), "passed": result["passed"], **problems,
                      "fuzz_cases": fz["cases"], "soak_requests": sk["requests"],
                      "rss": sk["rss"], "slow_p50_ratio": sl["p50_ratio"]}, indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
