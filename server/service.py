"""The server's one piece of logic: request fields -> ``GuidanceSpec`` -> ``decoders.generate``.

    plan = service.plan(guidance, n=..., max_tokens=..., ...)   # defaults filled, caps checked
    samples = await service.run(prompt_ids, plan, on_tokens)    # the sampler, on the engine
    choice = service.finalize(sample, plan)                     # stop strings, diagnostics

Everything here is HTTP-free except that bad input raises ``TiltHTTPError`` naming the field.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from decoders.methods import method_info
from decoders.protocols import Reward, ValueModel
from decoders.results import Sample
from decoders.spec import GuidanceSpec
from server.config import ServerConfig
from server.errors import TiltHTTPError, bad_request
from server.metrics import Metrics
from server.schemas import GuidanceRequest, TiltDiagnostics

log = logging.getLogger("tilt.server")



# ----------------------------------------------------------------------------- wrappers


class TimedValue:
    """A ``ValueModel`` that adds the seconds spent in ``q_values`` to ``clock[0]``."""

    def __init__(self, inner: ValueModel, clock: list[float]):
        self._inner, self._clock = inner, clock

    async def q_values(self, contexts: Sequence[Sequence[int]], beta: float) -> torch.Tensor:
        t = time.perf_counter()
        try:
            return await self._inner.q_values(contexts, beta)
        finally:
            self._clock[0] += time.perf_counter() - t

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name == "bind":  # a prompt-bound value model is timed too
            return lambda *a, **k: TimedValue(attr(*a, **k), self._clock)
        return attr


class TimedReward:
    """A ``Reward`` that adds the seconds spent in ``score`` to ``clock[0]``."""

    def __init__(self, inner: Reward, clock: list[float]):
        self._inner, self._clock = inner, clock

    async def score(self, prompt: Sequence[int], completions: Sequence[Sequence[int]]) -> torch.Tensor:
        t = time.perf_counter()
        try:
            return await self._inner.score(prompt, completions)
        finally:
            self._clock[0] += time.perf_counter() - t

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _upstream_errors() -> tuple[type[BaseException], ...]:
    """Exceptions meaning an external reward service failed (mapped to HTTP 502)."""
    try:
        from rewards.errors import RewardServiceError
    except ImportError:
        return ()
    return (RewardServiceError,)


# ----------------------------------------------------------------------------- results


@dataclass
class Plan:
    """A request resolved against the server: the spec plus the objects it runs on."""

    spec: GuidanceSpec
    value: ValueModel | None
    reward: Reward | None
    value_name: str | None
    reward_name: str | None
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # top-k log-probs per token (0 = only the sampled token)
    value_clock: list[float] = field(default_factory=lambda: [0.0])
    reward_clock: list[float] = field(default_factory=lambda: [0.0])

    @property
    def streams_tokens(self) -> bool:
        return method_info(self.spec.method).streams_tokens and self.logprobs is None


@dataclass
class Choice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    tilt: TiltDiagnostics
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None


@dataclass
class StreamEvent:
    """New text/ids of choice ``index``; ``choice`` is set on its last event."""

    index: int
    text: str
    token_ids: list[int]
    choice: Choice | None = None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


# ----------------------------------------------------------------------------- service


class TiltService:
    """One served base model (an ``EngineHandle``) with its value models and rewards."""

    def __init__(self, config: ServerConfig, handle: Any, rewards: dict[str, Reward],
                 metrics: Metrics | None = None):
        self.config, self.handle, self.rewards = config, handle, rewards
        self.model_name = config.served_model_name or handle.name
        self.metrics = metrics or Metrics(self.model_name, handle.num_running)
        self.created = int(time.time())
        self.ready = True

    @classmethod
    async def open(cls, config: ServerConfig) -> TiltService:
        """Start the engine and load the rewards named in ``config``."""
        from engines.loader import open_engine
        from rewards.loader import load_reward

        handle = await open_engine(config.model, engine=config.engine,
                                   value_models=dict(config.value_models) or None,
                                   **config.engine_options)
        try:
            rewards = {name: load_reward(spec, codec=handle.codec)
                       for name, spec in config.rewards.items()}
        except BaseException:
            await handle.aclose()
            raise
        service = cls(config, handle, rewards)
        service.check_defaults()
        return service

    async def aclose(self) -> None:
        self.ready = False
        await self.handle.aclose()

    def check_defaults(self) -> None:
        d = self.config.defaults
        if d.value_model is not None and d.value_model not in self.handle.value_models:
            raise ValueError(f"default value model {d.value_model!r} is not served "
                             f"(served: {sorted(self.handle.value_models)})")
        if d.reward is not None and d.reward not in self.rewards:
            raise ValueError(f"default reward {d.reward!r} is not served "
                             f"(served: {sorted(self.rewards)})")

    # ---- caps

    @property
    def max_tokens_cap(self) -> int:
        cap = self.handle.max_tokens_cap
        if self.config.limits.max_tokens is not None:
            cap = min(cap, self.config.limits.max_tokens)
        return cap

    @property
    def max_prompt_tokens(self) -> int:
        cap = self.handle.max_model_len - 1
        if self.config.limits.max_prompt_tokens is not None:
            cap = min(cap, self.config.limits.max_prompt_tokens)
        return cap

    @property
    def max_logprobs(self) -> int:
        vocab = self.handle.lm.vocab_size
        cap = self.config.limits.max_logprobs
        return vocab if cap < 0 else min(cap, vocab)

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise TiltHTTPError(404, f"model {model!r} does not exist; this server serves "
                                f"{self.model_name!r}", param="model", code="model_not_found")

    # ---- prompts

    def encode_prompt(self, prompt: str | list[int], param: str = "prompt") -> list[int]:
        if isinstance(prompt, str):
            try:
                ids = list(self.handle.codec.encode(prompt))
            except ValueError as exc:
                raise bad_request(f"cannot encode '{param}': {exc}", param) from exc
        else:
            vocab, eos = self.handle.lm.vocab_size, self.handle.lm.eos_token_id
            bad = [t for t in prompt if not 0 <= t < vocab or t == eos]
            if bad:
                raise bad_request(f"'{param}' holds token ids outside [0, {vocab}) or EOS "
                                  f"({eos}): {bad[:5]}", param)
            ids = list(prompt)
        if not ids and param == "prompt":
            raise bad_request("'prompt' is empty (as in vLLM, a prompt needs a token)", param)
        self.check_prompt_len(ids, param)
        return ids

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            ids = list(self.handle.codec.apply_chat_template(messages))
        except ValueError as exc:
            raise bad_request(f"cannot apply the chat template to 'messages': {exc}",
                              "messages") from exc
        self.check_prompt_len(ids, "messages")
        return ids

    def check_prompt_len(self, ids: list[int], param: str) -> None:
        if len(ids) > self.max_prompt_tokens:
            raise bad_request(f"'{param}' is {len(ids)} tokens, over this server's limit of "
                              f"{self.max_prompt_tokens}", param, code="prompt_too_long")

    # ---- planning

    @property
    def default_value_model(self) -> str | None:
        """The configured default, else the only value model served, else None."""
        served = self.handle.value_models
        return self.config.defaults.value_model or (next(iter(served)) if len(served) == 1
                                                     else None)

    @property
    def default_reward(self) -> str | None:
        """The configured default, else the only reward served, else None."""
        return self.config.defaults.reward or (next(iter(self.rewards))
                                               if len(self.rewards) == 1 else None)

    def _resolve_value(self, name: str | None, method: str) -> tuple[str | None, ValueModel | None]:
        served = self.handle.value_models
        name = name or self.default_value_model
        if name is None:
            if method_info(method).needs_value:
                raise bad_request(f"method {method!r} needs a value model and this server has "
                                  "no default; name one in 'guidance.value_model' (see "
                                  "GET /v1/models)", "guidance.value_model")
            return None, None
        if name not in served:
            raise bad_request(f"unknown value model {name!r}; served: {sorted(served)}",
                              "guidance.value_model", code="value_model_not_found")
        return name, served[name]

    def _reward(self, name: str, param: str) -> Reward:
        if name not in self.rewards:
            raise bad_request(f"unknown reward {name!r}; served: {sorted(self.rewards)}",
                              param, code="reward_not_found")
        return self.rewards[name]

    def _resolve_reward(self, g: GuidanceRequest, method: str) -> tuple[str | None, Reward | None]:
        if g.reward is not None and g.rewards is not None:
            raise bad_request("give either 'guidance.reward' or 'guidance.rewards', not both",
                              "guidance.rewards")
        if g.rewards is not None:
            from rewards.combine import combine

            terms = [(self._reward(t.name, f"guidance.rewards.{i}.name"), t.weight)
                     for i, t in enumerate(g.rewards)]
            label = " + ".join(f"{t.weight:g}*{t.name}" for t in g.rewards)
            try:
                return label, combine(terms)
            except ValueError as exc:
                raise bad_request(str(exc), "guidance.rewards") from exc
        name = g.reward or self.default_reward
        if name is None:
            if method_info(method).needs_reward:
                raise bad_request(f"method {method!r} needs a reward and this server has no "
                                  "default; name one in 'guidance.reward'", "guidance.reward")
            return None, None
        return name, self._reward(name, "guidance.reward")

    def plan(self, guidance: GuidanceRequest | None, *, n: int, max_tokens: int | None,
             temperature: float | None, top_p: float | None, top_k: int | None,
             seed: int | None, stop: str | list[str] | None, logprobs: int | None,
             max_tokens_param: str = "max_tokens",
             logprobs_param: str = "logprobs") -> Plan:
        """Fill omitted fields from the server defaults, check the caps, build the spec."""
        g = guidance or GuidanceRequest()
        d, lim = self.config.defaults, self.config.limits
        method = g.method or d.method
        if n > lim.max_n:
            raise bad_request(f"'n' is {n}, over this server's limit of {lim.max_n}", "n")
        particles = g.particles or d.particles
        if particles > lim.max_particles:
            raise bad_request(f"'guidance.particles' is {particles}, over this server's limit "
                              f"of {lim.max_particles}", "guidance.particles")
        candidates = g.candidates or d.candidates
        if candidates > lim.max_candidates:
            raise bad_request(f"'guidance.candidates' is {candidates}, over this server's "
                              f"limit of {lim.max_candidates}", "guidance.candidates")
        cap = self.max_tokens_cap
        if max_tokens is None:
            max_tokens = min(d.max_tokens, cap)
        elif max_tokens > cap:
            raise bad_request(f"'{max_tokens_param}' is {max_tokens}, over this model's limit "
                              f"of {cap}", max_tokens_param)
        if logprobs is not None and logprobs > self.max_logprobs:
            raise bad_request(f"'{logprobs_param}' is {logprobs}, over this server's limit of "
                              f"{self.max_logprobs}", logprobs_param)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > lim.max_stop or any(not s for s in stops):
            raise bad_request(f"'stop' must hold at most {lim.max_stop} non-empty strings",
                              "stop")
        value_name, value = self._resolve_value(g.value_model, method)
        reward_name, reward = self._resolve_reward(g, method)
        if method == "none" and g.reward is None and g.rewards is None:
            reward_name, reward = None, None  # base sampling scores only when asked
        if not method_info(method).uses_value:
            value_name, value = None, None
        top_k_eff = 0 if top_k in (None, -1) else top_k
        if temperature == 0:  # greedy, as in OpenAI: keep only the most likely token
            temperature, top_k_eff = 1.0, 1
        try:
            spec = GuidanceSpec(
                method=method, n=n, max_tokens=max_tokens, beta=g.beta or d.beta,
                particles=particles,
                ess_threshold=d.ess_threshold if g.ess_threshold is None else g.ess_threshold,
                resampling=g.resampling or "systematic", block_size=g.block_size or d.block_size,
                candidates=candidates, block_select=g.block_select or "argmax",
                temperature=1.0 if temperature is None else temperature, top_k=top_k_eff,
                top_p=1.0 if top_p is None else top_p, seed=seed)
        except ValueError as exc:
            raise bad_request(str(exc), "guidance") from exc
        plan = Plan(spec, value, reward, value_name, reward_name, stops, logprobs)
        plan.value = TimedValue(value, plan.value_clock) if value is not None else None
        plan.reward = TimedReward(reward, plan.reward_clock) if reward is not None else None
        return plan

    # ---- running

    async def run(self, prompt_ids: list[int], plan: Plan, on_tokens: Any = None) -> list[Sample]:
        """``decoders.generate`` on the engine, with upstream reward failures -> 502."""
        from decoders.generate import generate  # looked up per call (tests may wrap it)

        upstream = _upstream_errors()
        try:
            samples = await generate(self.handle.lm, prompt_ids, plan.spec, value=plan.value,
                                     reward=plan.reward, on_tokens=on_tokens)
        except upstream as exc:  # type: ignore[misc]
            raise TiltHTTPError(502, f"reward service failed: {exc}", param="guidance.reward",
                                code="reward_unavailable") from exc
        except ValueError as exc:
            raise bad_request(f"guidance rejected by the sampler: {exc}", "guidance") from exc
        finally:
            name = self.model_name
            if plan.value is not None:
                self.metrics.value_time.labels(name).observe(plan.value_clock[0])
            if plan.reward is not None:
                self.metrics.reward_time.labels(name).observe(plan.reward_clock[0])
        return samples

    # ---- results

    def truncate_at_stop(self, tokens: list[int], stops: list[str]) -> tuple[str, int, bool]:
        """(text, kept token count, stopped): cut the text before the first stop string and
        keep the tokens up to the one that completed it."""
        text = self.handle.codec.decode(tokens)
        hits = [i for i in (text.find(s) for s in stops) if i >= 0]
        if not hits:
            return text, len(tokens), False
        cut = min(hits)
        k = next(k for k in range(1, len(tokens) + 1)
                 if any(s in self.handle.codec.decode(tokens[:k]) for s in stops))
        return text[:cut], k, True

    def diagnostics(self, sample: Sample, plan: Plan) -> TiltDiagnostics:
        p = sample.particle
        guided = plan.spec.method != "none"
        return TiltDiagnostics(
            method=plan.spec.method, beta=plan.spec.beta if guided else None,
            value_model=plan.value_name, reward_name=plan.reward_name,
            reward=_finite(sample.reward), log_weight=_finite(sample.log_weight),
            kl_to_base=_finite(sample.kl_to_base), base_logprob=_finite(sample.base_logprob),
            particles=p.particles if p else None,
            ess=_finite(p.ess_trace[-1]) if p and p.ess_trace else None,
            ess_trace=[float(x) for x in p.ess_trace] if p else None,
            log_z_hat=_finite(p.log_z_hat) if p else None,
            resamples=p.resamples if p else None)

    def finalize(self, index: int, sample: Sample, plan: Plan) -> Choice:
        text, k, stopped = self.truncate_at_stop(list(sample.tokens), plan.stop)
        reason = "stop" if stopped or sample.finished else "length"
        choice = Choice(index, text, list(sample.tokens[:k]), reason,
                        self.diagnostics(sample, plan))
        self._observe_choice(choice, sample, plan)
        return choice

    def _observe_choice(self, choice: Choice, sample: Sample, plan: Plan) -> None:
        m, name, method = self.metrics, self.model_name, plan.spec.method
        m.success.labels(name, method, choice.finish_reason).inc()
        m.generation_tokens.labels(name).inc(len(choice.token_ids))
        m.gen_len.labels(name).observe(len(choice.token_ids))
        if sample.kl_to_base is not None and math.isfinite(sample.kl_to_base):
            m.kl.labels(name, method).observe(max(0.0, sample.kl_to_base))
        p = sample.particle
        if p is not None:
            if p.ess_trace and p.particles:
                m.ess.labels(name, method).observe(min(p.ess_trace) / p.particles)
            m.resamples.labels(name, method).observe(p.resamples)

    async def add_logprobs(self, prompt_ids: list[int], choices: list[Choice], k: int) -> None:
        """Per-token log pi_ref(token | prefix) and the top-k alternatives, from one batched
        ``lm.logprobs`` call over every prefix of every choice."""
        contexts = [prompt_ids + c.token_ids[:i] for c in choices for i in range(len(c.token_ids))]
        if not contexts:
            for c in choices:
                c.logprobs = []
            return
        rows = await self.handle.lm.logprobs(contexts)
        at = 0
        for c in choices:
            entries = []
            for tok in c.token_ids:
                row = rows[at].to(torch.float64)
                at += 1
                top = torch.topk(row, k) if k > 0 else None
                alts = [(int(i), float(v)) for v, i in zip(top.values, top.indices, strict=True)] if top else []
                entries.append((float(row[tok]), alts))
            c.logprobs = entries

    # ---- streaming

    async def stream(self, prompt_ids: list[int], plan: Plan,
                     timeout_s: float | None = None) -> AsyncIterator[StreamEvent]:
        """Run the sampler and yield text as it becomes final. Concatenating one choice's
        events gives exactly the non-streamed choice (same seed -> same output)."""
        queue: asyncio.Queue = asyncio.Queue()

        async def on_tokens(index: int, tokens: list[int]) -> None:
            queue.put_nowait((index, list(tokens)))
            await asyncio.sleep(0)  # let the event loop send it (and notice a hang-up)

        hook = on_tokens if plan.streams_tokens else None
        task = asyncio.ensure_future(
            asyncio.wait_for(self.run(prompt_ids, plan, hook), timeout_s))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        states = [_StreamState(self, plan.stop) for _ in range(plan.spec.n)]
        try:
            while (item := await queue.get()) is not None:
                index, tokens = item
                if 0 <= index < len(states):
                    event = states[index].push(index, tokens)
                    if event is not None:
                        yield event
            samples = task.result()
            for index, sample in enumerate(samples):
                choice = self.finalize(index, sample, plan)
                if plan.logprobs is not None:
                    await self.add_logprobs(prompt_ids, [choice], plan.logprobs)
                yield states[index].finish(choice)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


class _StreamState:
    """What has been sent for one choice; holds back text that could start a stop string."""

    def __init__(self, service: TiltService, stops: list[str]):
        self.service, self.stops = service, stops
        self.tokens: list[int] = []
        self.sent_text, self.sent_ids, self.stopped = "", 0, False
        self.holdback = max((len(s) for s in stops), default=1) - 1

    def push(self, index: int, tokens: list[int]) -> StreamEvent | None:
        if self.stopped:
            return None
        self.tokens += tokens
        text, k, self.stopped = self.service.truncate_at_stop(self.tokens, self.stops)
        if not self.stopped:
            text = text[: len(text) - self.holdback] if self.holdback else text
            while text.endswith("\ufffd"):  # an incomplete multi-byte character
                text = text[:-1]
        if not text.startswith(self.sent_text):
            return None  # the decoded prefix changed; send at the end
        new_text, new_ids = text[len(self.sent_text):], self.tokens[self.sent_ids:k]
        if not new_text and not new_ids:
            return None
        self.sent_text, self.sent_ids = text, k
        return StreamEvent(index, new_text, new_ids)

    def finish(self, choice: Choice) -> StreamEvent:
        text = choice.text
        if not text.startswith(self.sent_text):
            log.warning("streamed text of choice %d diverged from its final text", choice.index)
        rest = text[len(self.sent_text):] if text.startswith(self.sent_text) else ""
        return StreamEvent(choice.index, rest, choice.token_ids[self.sent_ids:], choice)


# ----------------------------------------------------------------------------- scoring & models


async def score(service: TiltService, reward_name: str | None, prompt: str | list[int],
                completions: list[str] | list[list[int]]) -> tuple[str, list[float | None]]:
    """R(prompt, y) for each completion: text rewards score text, others token ids."""
    name = reward_name or service.default_reward
    if name is None:
        raise bad_request("name a reward in 'reward' (see GET /v1/models)", "reward")
    if name not in service.rewards:
        raise bad_request(f"unknown reward {name!r}; served: {sorted(service.rewards)}",
                          "reward", code="reward_not_found")
    reward = service.rewards[name]
    texts = isinstance(prompt, str) and all(isinstance(c, str) for c in completions)
    try:
        if texts and hasattr(reward, "score_text"):
            out = reward.score_text(prompt, list(completions))
            values = await out if asyncio.iscoroutine(out) else out
        else:
            prompt_ids = service.encode_prompt(prompt)
            ids = [service.encode_prompt(c, f"completions.{i}")
                   for i, c in enumerate(completions)]
            values = (await reward.score(prompt_ids, ids)).tolist()
    except _upstream_errors() as exc:  # type: ignore[misc]
        raise TiltHTTPError(502, f"reward service failed: {exc}", param="reward",
                            code="reward_unavailable") from exc
    return name, [_finite(float(v)) for v in values]


def model_cards(service: TiltService) -> list[dict[str, Any]]:
    """GET /v1/models: the base model, its value models and the rewards, with metadata."""
    created = service.created
    d = service.config.defaults.model_copy(update={"value_model": service.default_value_model,
                                                   "reward": service.default_reward})
    cards = [{"id": service.model_name, "object": "model", "created": created,
              "owned_by": "tilt", "kind": "base_model",
              "metadata": {**service.handle.metadata(), "engine_kind": service.handle.kind,
                           "max_model_len": service.handle.max_model_len,
                           "max_tokens": service.max_tokens_cap,
                           "defaults": d.model_dump()}}]
    for name, vm in service.handle.value_models.items():
        meta = vm.metadata() if hasattr(vm, "metadata") else {}
        cards.append({"id": name, "object": "model", "created": created, "owned_by": "tilt",
                      "kind": "value_model", "root": service.model_name,
                      "metadata": {"type": type(vm).__name__, "default": name == d.value_model,
                                   **meta}})
    for name, spec in service.config.rewards.items():
        reward = service.rewards[name]
        cards.append({"id": name, "object": "model", "created": created, "owned_by": "tilt",
                      "kind": "reward",
                      "metadata": {"spec": spec, "type": type(reward).__name__,
                                   "text": hasattr(reward, "score_text"),
                                   "default": name == d.reward}})
    return cards
