"""Validation: a parsed request -> a ``Plan`` the server can run, or a ``BadRequest`` naming
the field (TGI's validation.rs in spirit: one module, defaults and limits in one place).

    planner = Planner(state)
    plan = planner.completion(req)     # or .chat(req); .score(req) -> ScorePlan
    plans = planner.completions(req)   # one plan per prompt of a prompt list

The schema (``server.schemas``) has already checked types and ranges. Here: the model name,
the prompt (encoded, within the length limit), the chat-only cross-field rules, vLLM's
sampler fields (``server.sampling_fields``: per method a meaning or a 400), every cap of
``config.limits``, every default of ``config.defaults``, and the names of the value model and
the rewards (a weighted sum of rewards included), resolved to the objects they run on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decoders.blocks import can_sample_natively
from decoders.methods import method_info
from decoders.protocols import Reward, ValueModel
from decoders.spec import GuidanceSpec
from server.config import Defaults
from server.engine_state import EngineState
from server.errors import BadRequest, NotFound
from server.sampling_fields import sampling_fields
from server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    GuidanceRequest,
    RewardScoreRequest,
)

NATIVE_RESAMPLE_EVERY = 8


def default_resample_every(lm: Any, value: ValueModel | None) -> int:
    """smc's tokens per step when neither the request nor the config sets it: blocks of
    NATIVE_RESAMPLE_EVERY where the engine samples (and guides) the particles itself, so no
    full-vocabulary row per particle per token is fetched; token-level (1) otherwise. Both
    keep the target and an unbiased Z-hat (docs/math.md)."""
    return NATIVE_RESAMPLE_EVERY if can_sample_natively(lm, value) else 1


@dataclass
class Plan:
    """A generation request resolved against the server: the prompt, the sampler's spec, the
    objects it runs on, and what the response should carry."""

    prompt_ids: list[int]
    spec: GuidanceSpec
    value: ValueModel | None
    reward: Reward | None
    value_name: str | None
    reward_name: str | None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: tuple[int, ...] = ()
    echo: str | None = None  # completions with ``echo``: the prompt's text
    first_index: int = 0  # choice j of this plan is choice first_index + j of the response
    logprobs: int | None = None  # top-k log-probs per token (0 = only the sampled token)
    stream: bool = False
    include_usage: bool = False  # streams: a last chunk with the usage
    generated_tokens: int = 0  # set by server.generation.run: what the engine generated
    return_token_ids: bool = False

    @property
    def streams_tokens(self) -> bool:
        """Tokens are sent as they are sampled (else each choice is sent when final)."""
        return method_info(self.spec.method).streams_tokens and self.logprobs is None


@dataclass
class ScorePlan:
    """A scoring request resolved: the reward, and either texts (for a reward that scores
    text) or token ids."""

    reward_name: str
    reward: Reward
    texts: tuple[str, list[str]] | None = None
    ids: tuple[list[int], list[list[int]]] | None = None


class Planner:
    """Turns requests into plans against one ``EngineState``."""

    def __init__(self, state: EngineState):
        self.state = state

    # ---- limits (config.limits, capped by what the engine can do)

    @property
    def max_tokens_cap(self) -> int:
        cap = self.state.handle.max_tokens_cap
        if self.state.config.limits.max_tokens is not None:
            cap = min(cap, self.state.config.limits.max_tokens)
        return cap

    @property
    def max_prompt_tokens(self) -> int:
        cap = self.state.handle.max_model_len - 1
        if self.state.config.limits.max_prompt_tokens is not None:
            cap = min(cap, self.state.config.limits.max_prompt_tokens)
        return cap

    @property
    def max_logprobs(self) -> int:
        vocab = self.state.handle.lm.vocab_size
        cap = self.state.config.limits.max_logprobs
        return vocab if cap < 0 else min(cap, vocab)

    # ---- defaults (config.defaults; a lone value model or reward is the default)

    @property
    def default_value_model(self) -> str | None:
        """The configured default, else the only value model served, else None."""
        served = self.state.handle.value_models
        return self.state.config.defaults.value_model or (
            next(iter(served)) if len(served) == 1 else None)

    @property
    def default_reward(self) -> str | None:
        """The configured default, else the only reward served, else None."""
        rewards = self.state.rewards
        return self.state.config.defaults.reward or (
            next(iter(rewards)) if len(rewards) == 1 else None)

    def effective_defaults(self) -> Defaults:
        """The defaults as requests see them (value model and reward resolved)."""
        return self.state.config.defaults.model_copy(update={
            "value_model": self.default_value_model, "reward": self.default_reward})

    # ---- requests

    def completion(self, req: CompletionRequest) -> Plan:
        """The plan of the first prompt (see ``completions`` for prompt lists)."""
        return self.completions(req)[0]

    def completions(self, req: CompletionRequest) -> list[Plan]:
        """One plan per prompt (``prompt`` may list texts or token-id lists); the choices of
        prompt i are indexed i * n + j, as OpenAI does."""
        self.check_model(req.model)
        prompts, param = [req.prompt], ["prompt"]
        if isinstance(req.prompt, list) and req.prompt and not isinstance(req.prompt[0], int):
            prompts = list(req.prompt)
            param = [f"prompt.{i}" for i in range(len(prompts))]
            self._cap(len(prompts) * req.n, self.state.config.limits.max_n, "prompt",
                      "this server's (prompts x n)")
        plans = []
        for i, (prompt, name) in enumerate(zip(prompts, param, strict=True)):
            prompt_ids = self.encode_prompt(prompt, name)
            plan = self._plan(req, prompt_ids, req.max_tokens, req.logprobs,
                              "max_tokens", "logprobs")
            plan.first_index = i * req.n
            if req.echo:
                plan.echo = prompt if isinstance(prompt, str) else \
                    self.state.handle.codec.decode(prompt_ids)
            plans.append(plan)
        return plans

    def chat(self, req: ChatCompletionRequest) -> Plan:
        self.check_model(req.model)
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise BadRequest("give either 'max_tokens' or 'max_completion_tokens'",
                             "max_completion_tokens", code=None)
        if req.top_logprobs is not None and not req.logprobs:
            raise BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs",
                             code=None)
        max_tokens, mt_param = req.max_completion_tokens, "max_completion_tokens"
        if max_tokens is None:
            max_tokens, mt_param = req.max_tokens, "max_tokens"
        prompt_ids = self.encode_chat([{"role": m.role, "content": m.text()}
                                       for m in req.messages])
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        return self._plan(req, prompt_ids, max_tokens, logprobs, mt_param, "top_logprobs")

    def score(self, req: RewardScoreRequest) -> ScorePlan:
        """R(prompt, y) for each completion: text rewards score text, others token ids."""
        self.check_model(req.model)
        name = req.reward or self.default_reward
        if name is None:
            raise BadRequest("name a reward in 'reward' (see GET /v1/models)", "reward")
        reward = self._reward(name, "reward")
        completions = list(req.completions)
        if isinstance(req.prompt, str) and all(isinstance(c, str) for c in completions) \
                and hasattr(reward, "score_text"):
            return ScorePlan(name, reward, texts=(req.prompt, completions))
        ids = (self.encode_prompt(req.prompt),
               [self.encode_prompt(c, f"completions.{i}") for i, c in enumerate(completions)])
        return ScorePlan(name, reward, ids=ids)

    # ---- pieces

    def check_model(self, model: str | None) -> None:
        name = self.state.model_name
        if model is not None and model != name:
            raise NotFound(f"model {model!r} does not exist; this server serves {name!r}",
                           "model")

    def encode_prompt(self, prompt: str | list[int], param: str = "prompt") -> list[int]:
        lm = self.state.handle.lm
        if isinstance(prompt, str):
            try:
                ids = list(self.state.handle.codec.encode(prompt))
            except ValueError as exc:
                raise BadRequest(f"cannot encode '{param}': {exc}", param) from exc
        else:
            vocab, eos = lm.vocab_size, lm.eos_token_id
            bad = [t for t in prompt if not 0 <= t < vocab or t == eos]
            if bad:
                raise BadRequest(f"'{param}' holds token ids outside [0, {vocab}) or EOS "
                                 f"({eos}): {bad[:5]}", param)
            ids = list(prompt)
        if not ids and param.startswith("prompt"):
            raise BadRequest("'prompt' is empty (as in vLLM, a prompt needs a token)", param)
        self._check_prompt_len(ids, param)
        return ids

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        try:
            ids = list(self.state.handle.codec.apply_chat_template(messages))
        except ValueError as exc:
            raise BadRequest(f"cannot apply the chat template to 'messages': {exc}",
                             "messages") from exc
        self._check_prompt_len(ids, "messages")
        return ids

    def _check_prompt_len(self, ids: list[int], param: str) -> None:
        if len(ids) > self.max_prompt_tokens:
            raise BadRequest(f"'{param}' is {len(ids)} tokens, over this server's limit of "
                             f"{self.max_prompt_tokens}", param, code="prompt_too_long")

    def _cap(self, value: int, cap: int, param: str, whose: str = "this server's") -> None:
        if value > cap:
            raise BadRequest(f"'{param}' is {value}, over {whose} limit of {cap}", param)

    def _plan(self, req: CompletionRequest | ChatCompletionRequest, prompt_ids: list[int],
              max_tokens: int | None, logprobs: int | None, max_tokens_param: str,
              logprobs_param: str) -> Plan:
        """Fill omitted fields from the server defaults, check the caps, build the spec."""
        g = req.guidance or GuidanceRequest()
        d, lim = self.state.config.defaults, self.state.config.limits
        method = g.method or d.method
        self._cap(req.n, lim.max_n, "n")
        particles = g.particles or d.particles
        self._cap(particles, lim.max_particles, "guidance.particles")
        candidates = g.candidates or d.candidates
        self._cap(candidates, lim.max_candidates, "guidance.candidates")
        cap = self.max_tokens_cap
        if max_tokens is None:
            max_tokens = min(d.max_tokens, cap)
        self._cap(max_tokens, cap, max_tokens_param, "this model's")
        if logprobs is not None:
            self._cap(logprobs, self.max_logprobs, logprobs_param)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > lim.max_stop or any(not s for s in stops):
            raise BadRequest(f"'stop' must hold at most {lim.max_stop} non-empty strings",
                             "stop")
        value_name, value = self._resolve_value(g.value_model, method)
        reward_name, reward = self._resolve_reward(g, method)
        if method == "none" and g.reward is None and g.rewards is None:
            reward_name, reward = None, None  # base sampling scores only when asked
        if not method_info(method).uses_value:
            value_name, value = None, None
        fields = sampling_fields(req, method, max_tokens, self.state.handle.lm, value)
        top_k = 0 if req.top_k in (None, -1) else req.top_k
        temperature = req.temperature
        if temperature == 0:  # greedy, as in OpenAI: keep only the most likely token
            temperature, top_k = 1.0, 1
        try:
            spec = GuidanceSpec(
                method=method, n=req.n, max_tokens=max_tokens, beta=g.beta or d.beta,
                particles=particles,
                ess_threshold=d.ess_threshold if g.ess_threshold is None else g.ess_threshold,
                resampling=g.resampling or "systematic", resample_every=g.resample_every or d.resample_every or default_resample_every(
                    self.state.handle.lm, value),
                block_size=g.block_size or d.block_size,
                candidates=candidates, block_select=g.block_select or "argmax",
                temperature=1.0 if temperature is None else temperature, top_k=top_k,
                top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed,
                stop=tuple(stops), **fields)
        except ValueError as exc:
            raise BadRequest(str(exc), "guidance") from exc
        return Plan(prompt_ids, spec, value, reward, value_name, reward_name, stops,
                    fields["stop_token_ids"], logprobs=logprobs, stream=req.stream,
                    include_usage=bool(req.stream_options and req.stream_options.include_usage),
                    return_token_ids=req.return_token_ids)

    def _resolve_value(self, name: str | None,
                       method: str) -> tuple[str | None, ValueModel | None]:
        served = self.state.handle.value_models
        name = name or self.default_value_model
        if name is None:
            if method_info(method).needs_value:
                raise BadRequest(f"method {method!r} needs a value model and this server has "
                                 "no default; name one in 'guidance.value_model' (see "
                                 "GET /v1/models)", "guidance.value_model")
            return None, None
        if name not in served:
            raise BadRequest(f"unknown value model {name!r}; served: {sorted(served)}",
                             "guidance.value_model", code="value_model_not_found")
        return name, served[name]

    def _reward(self, name: str, param: str) -> Reward:
        rewards = self.state.rewards
        if name not in rewards:
            raise BadRequest(f"unknown reward {name!r}; served: {sorted(rewards)}", param,
                             code="reward_not_found")
        return rewards[name]

    def _resolve_reward(self, g: GuidanceRequest,
                        method: str) -> tuple[str | None, Reward | None]:
        if g.reward is not None and g.rewards is not None:
            raise BadRequest("give either 'guidance.reward' or 'guidance.rewards', not both",
                             "guidance.rewards")
        if g.rewards is not None:
            from rewards.combine import combine

            terms = [(self._reward(t.name, f"guidance.rewards.{i}.name"), t.weight)
                     for i, t in enumerate(g.rewards)]
            label = " + ".join(f"{t.weight:g}*{t.name}" for t in g.rewards)
            try:
                return label, combine(terms)
            except ValueError as exc:
                raise BadRequest(str(exc), "guidance.rewards") from exc
        name = g.reward or self.default_reward
        if name is None:
            if method_info(method).needs_reward:
                raise BadRequest(f"method {method!r} needs a reward and this server has no "
                                 "default; name one in 'guidance.reward'", "guidance.reward")
            return None, None
        return name, self._reward(name, "guidance.reward")
