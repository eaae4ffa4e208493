"""Prometheus metrics under the ``tilt:`` prefix, named after vLLM's (``vllm:`` -> ``tilt:``).

A private ``CollectorRegistry`` per app: several servers can live in one process (tests),
and vLLM's start-up unregisters global collectors whose names contain "vllm".

Everything the server records goes through the methods of ``Metrics`` (and the
``RequestTimer`` that ``request_started`` returns); no other module touches a family:

    timer = metrics.request_started(method, prompt_tokens)   # then timer.started() ...
    metrics.choice_finished(method, finish_reason, tokens, sample)
    metrics.sampler_time(value_s, reward_s)   metrics.load(running, waiting)
    metrics.aborted()   metrics.rejected()   metrics.error_answered(status)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from decoders.results import Sample

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                   2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
FRACTION_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
KL_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class Metrics:
    """All server metrics; ``render()`` is the body of GET /metrics."""

    def __init__(self, model_name: str, engine_running: Callable[[], int] | None = None):
        self.registry = CollectorRegistry()
        r, m = self.registry, ["model_name"]
        self.model_name = model_name

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, m, registry=r)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, m + list(labels), registry=r)

        def hist(name: str, doc: str, buckets: tuple, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(name, doc, m + list(labels), buckets=buckets, registry=r)

        self.running = gauge("tilt:num_requests_running", "Requests being generated.")
        self.waiting = gauge("tilt:num_requests_waiting", "Requests queued for a slot.")
        self.engine_running = gauge("tilt:engine_requests_running",
                                    "Engine requests in flight (from the engine handle).")
        if engine_running is not None:
            self.engine_running.labels(model_name).set_function(lambda: float(engine_running()))
        self.ttft = hist("tilt:time_to_first_token_seconds", "Time to first token.",
                         LATENCY_BUCKETS)
        self.itl = hist("tilt:inter_token_latency_seconds", "Time between streamed tokens.",
                        LATENCY_BUCKETS)
        self.e2e = hist("tilt:e2e_request_latency_seconds", "End-to-end request latency.",
                        LATENCY_BUCKETS, ("method",))
        self.queue_time = hist("tilt:request_queue_time_seconds", "Time spent waiting.",
                               LATENCY_BUCKETS)
        self.prompt_tokens = counter("tilt:prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("tilt:generation_tokens", "Tokens returned.")
        self.prompt_len = hist("tilt:request_prompt_tokens", "Prompt length per request.",
                               TOKEN_BUCKETS)
        self.gen_len = hist("tilt:request_generation_tokens", "Tokens per choice.",
                            TOKEN_BUCKETS)
        self.success = counter("tilt:request_success", "Finished choices.",
                               ("method", "finished_reason"))
        self.requests = counter("tilt:requests", "Requests by guidance method.", ("method",))
        self.errors = counter("tilt:request_errors", "Requests answered with an error.",
                              ("status",))
        self.rejected_requests = counter("tilt:requests_rejected", "Requests refused with 429.")
        self.aborted_requests = counter("tilt:requests_aborted",
                                        "Requests cancelled by the client.")
        self.ess = hist("tilt:particle_ess_fraction",
                        "Smallest ESS/N over a particle run.", FRACTION_BUCKETS, ("method",))
        self.resamples = hist("tilt:particle_resamples", "Resampling steps per particle run.",
                              COUNT_BUCKETS, ("method",))
        self.kl = hist("tilt:kl_to_base_nats", "Estimated KL(sampling || pi_ref) per choice.",
                       KL_BUCKETS, ("method",))
        self.value_time = hist("tilt:value_model_time_seconds",
                               "Time spent in the value model per request.", LATENCY_BUCKETS)
        self.reward_time = hist("tilt:reward_time_seconds",
                                "Time spent scoring rewards per request.", LATENCY_BUCKETS)
        # The load gauges exist from the start: an idle pod exports 0 (not nothing), so the
        # HPA's tilt_num_requests_waiting (deploy/k8s) has a value for every pod.
        self.load(0, 0)

    # ---- recording

    def request_started(self, method: str, prompt_tokens: int) -> RequestTimer:
        """Count a planned request and its prompt; its clocks start now."""
        name = self.model_name
        self.requests.labels(name, method).inc()
        self.prompt_tokens.labels(name).inc(prompt_tokens)
        self.prompt_len.labels(name).observe(prompt_tokens)
        return RequestTimer(self, method)

    def choice_finished(self, method: str, finish_reason: str, tokens: int,
                        sample: Sample) -> None:
        """One returned choice: its tokens, its finish reason and the sampler's diagnostics."""
        name = self.model_name
        self.success.labels(name, method, finish_reason).inc()
        self.generation_tokens.labels(name).inc(tokens)
        self.gen_len.labels(name).observe(tokens)
        if sample.kl_to_base is not None and math.isfinite(sample.kl_to_base):
            self.kl.labels(name, method).observe(max(0.0, sample.kl_to_base))
        p = sample.particle
        if p is not None:
            if p.ess_trace and p.particles:
                self.ess.labels(name, method).observe(min(p.ess_trace) / p.particles)
            self.resamples.labels(name, method).observe(p.resamples)

    def sampler_time(self, value_s: float | None, reward_s: float | None) -> None:
        """Seconds one run spent in its value model and its reward (None: it had none)."""
        if value_s is not None:
            self.value_time.labels(self.model_name).observe(value_s)
        if reward_s is not None:
            self.reward_time.labels(self.model_name).observe(reward_s)

    def load(self, running: int, waiting: int) -> None:
        self.running.labels(self.model_name).set(running)
        self.waiting.labels(self.model_name).set(waiting)

    def aborted(self) -> None:
        self.aborted_requests.labels(self.model_name).inc()

    def rejected(self) -> None:
        self.rejected_requests.labels(self.model_name).inc()

    def error_answered(self, status: int) -> None:
        self.errors.labels(self.model_name, str(status)).inc()

    # ---- reading

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def names(self) -> set[str]:
        """Every sample name this registry can expose (``_total``, ``_bucket``... included)."""
        suffixes = {"counter": ("_total",), "gauge": ("",),
                    "histogram": ("_bucket", "_sum", "_count")}
        return {fam.name + suf for fam in self.registry.collect()
                for suf in suffixes.get(fam.type, ("",))}


class RequestTimer:
    """Per-request clocks: queue wait, first token, inter-token gaps, end to end."""

    def __init__(self, metrics: Metrics, method: str):
        self.m, self.method, self.t0 = metrics, method, time.perf_counter()
        self.t_start: float | None = None
        self.t_last: float | None = None

    def started(self) -> None:
        self.t_start = time.perf_counter()
        self.m.queue_time.labels(self.m.model_name).observe(self.t_start - self.t0)

    def tokens(self, count: int) -> None:
        """Record that ``count`` tokens were produced now (one batch of output)."""
        if count <= 0:
            return
        t = time.perf_counter()
        if self.t_last is None:
            self.m.ttft.labels(self.m.model_name).observe(t - self.t0)
        else:
            self.m.itl.labels(self.m.model_name).observe((t - self.t_last) / count)
        self.t_last = t

    def finished(self) -> None:
        self.m.e2e.labels(self.m.model_name, self.method).observe(time.perf_counter() - self.t0)
