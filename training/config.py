"""Training configuration: one pydantic model, loaded from YAML and overridden by CLI flags.

    cfg = load_config("train.yaml", overrides={"steps": 200})

Unknown keys and bad values raise ``ConfigError`` with one line naming the key (the CLI turns
it into exit code 2).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration, model or reward that cannot be used (CLI exit code 2)."""


class TrainConfig(BaseModel):
    """Everything ``tilt train`` needs.

    model / reward / engine   base model spec (toy:... or an HF dir), reward spec, engine name
    out                       output dir: value model (engine format) + checkpoints/ + rollouts.pt
    objective                 soft_q  : weighted MSE of Q_theta(s,a) to beta·log-mean-exp of R over
                                        the rollouts through s+a
                              q_loss (soft_q): mse, or exp = the exp-Bregman divergence
                                        (same per-(s, a) minimiser, pooled in exp space)
                              exp_clip (exp): u = (target - Q)/beta beyond which exp is
                                        continued linearly (bounded gradients)
                              iw_fkl  : -sum_i w_i sum_t log softmax(l_ref + Q_theta/beta)(y_t),
                                        w_i ∝ exp(R_i/beta) self-normalised per prompt
                              reverse_kl: on-policy KL(pi_theta || pi*) = E_{pi_theta}[sum_t KL_t
                                        - R/beta] + log Z, on completions of the guided policy
                                        itself (training.reverse_kl); no rollout set. batch_size
                                        = completions per step, ``group`` per prompt (the
                                        leave-one-out baseline); rollouts/branch_* unused
    init_from                 start from this saved value model (of the same base) instead of a
                              fresh one; the architecture keys are then ignored
    init_from_lm              start from a pretrained Llama LM with the base's tokenizer: its
                              embeddings, layers and final norm, a zero head (Q = 0); the
                              architecture keys are then ignored (training.value_net.lm_value_model)
    init_layers               keep only the first k layers of that LM; alone: of the base itself
                              (its embeddings and first k layers). Costs: the value model is as
                              wide as the LM, with its embeddings and an untied head
    init_scale                multiply the initial Q by this (exact: scales the final norm); e.g.
                              beta / serve_beta of init_from starts reverse_kl at the policy that
                              model is served as
    rollout_policy            soft_q: base (rollouts from pi_ref, log-mean-exp targets) or guided
                              (rollouts from softmax(l_ref + Q_init/guide_beta) of init_from,
                              on-policy targets R - beta sum_{t'>t} KL_t', training.targets)
    guide_beta                beta of the guided rollout policy (default: beta)
    group                     reverse_kl: completions per prompt in a step (>= 2)
    baseline                  reverse_kl: loo (leave-one-out mean of the group) or value (the
                              value model's E_pi[Q]/beta at each state)
    beta                      tilt temperature the value model is trained for
    prompts / prompt_file     prompts (text; toy: runs of <id>); "" is the empty prompt
    max_tokens                T (completion length cap; toy: its len)
    rollouts                  base trajectories per prompt
    branch_points, branches   per trajectory, re-sample ``branches`` continuations after each of
                              ``branch_points`` random prefixes (rollouts that share a prefix
                              give the log-mean-exp targets)
    branch_from               which trajectories the branch prefixes are cut from: uniform (each
                              trajectory its own) or tilted (parents re-drawn per prompt with
                              probability ∝ exp(R/beta), so prefixes follow pi*'s states; those
                              branches train only from their branch point on)
    steps, batch_size, lr     optimisation (AdamW, cosine decay, grad clip 1.0)
    eval_every, ckpt_every    periodic evaluation / checkpoint (steps)
    hidden, layers, heads, intermediate, tie_embeddings   value-model architecture (Llama;
                              head_dim = hidden / heads must be 64 for vLLM's CPU attention)
    device                    where the value model is optimised: auto (cuda when available,
                              else cpu), cpu, cuda or cuda:N (``training.loop.resolve_device``;
                              on CUDA the forward and loss run under bf16 autocast, fp32 weights)
    """

    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "3" for 3, no 1.0 for an int

    model: str = "toy:vocab=8,len=4,seed=0"
    reward: str = "toy:seed=0"
    engine: str = "vllm"
    out: str = "runs/value"
    objective: Literal["soft_q", "iw_fkl", "reverse_kl"] = "soft_q"
    q_loss: Literal["mse", "exp"] = "mse"
    exp_clip: float = Field(4.0, gt=0)
    init_from: str | None = None
    init_from_lm: str | None = None
    init_layers: int | None = Field(None, ge=1)
    init_scale: float = Field(1.0, gt=0)
    group: int = Field(8, ge=2)
    baseline: Literal["loo", "value"] = "loo"
    rollout_policy: Literal["base", "guided"] = "base"
    guide_beta: float | None = Field(None, gt=0)
    beta: float = Field(1.0, gt=0)
    prompts: list[str] = Field(default_factory=lambda: [""])
    prompt_file: str | None = None
    max_tokens: int = Field(4, ge=1)
    rollouts: int = Field(4096, ge=1)
    branch_points: int = Field(0, ge=0)
    branches: int = Field(4, ge=1)
    branch_from: Literal["uniform", "tilted"] = "uniform"
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = 0.0
    eval_every: int = Field(200, ge=1)
    ckpt_every: int = Field(200, ge=1)
    seed: int = 0
    hidden: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    intermediate: int = Field(128, ge=1)
    tie_embeddings: bool = False
    val_fraction: float = Field(0.1, ge=0, lt=1)
    temperature: float = Field(1.0, gt=0)
    threads: int = 1
    device: str = "auto"
    engine_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N (--device), got {v!r}")
        return v

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.rollout_policy == "guided" and not (
                self.init_from and self.objective == "soft_q" and self.q_loss == "mse"
                and self.branch_points == 0):
            raise ValueError("rollout_policy guided needs init_from (the policy to roll out), "
                             "objective soft_q with q_loss mse, and branch_points 0")
        if self.objective == "reverse_kl" and self.batch_size % self.group:
            raise ValueError(f"reverse_kl: batch_size ({self.batch_size}) must be a multiple of "
                             f"group ({self.group})")
        if (self.init_from_lm or self.init_layers) and (
                self.init_from or self.model.startswith("toy:")):
            raise ValueError("init_from_lm / init_layers start from an HF LM's layers: not with "
                             "init_from, nor on a toy base")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self

    def load_prompts(self) -> list[str]:
        if self.prompt_file:
            path = Path(self.prompt_file)
            if not path.is_file():
                raise ConfigError(f"prompt file not found: {path}")
            lines = [ln.rstrip("\n") for ln in path.read_text().splitlines()]
            prompts = [ln for ln in lines if ln.strip()]
            if not prompts:
                raise ConfigError(f"prompt file {path} has no prompts")
            return prompts
        return list(self.prompts)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """YAML file (optional) then ``overrides`` (None values ignored) -> validated TrainConfig."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping, got {type(loaded).__name__}")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc)) from exc


_KINDS = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
          "bool_type": "true or false", "list_type": "a list", "dict_type": "a mapping"}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _message(exc: ValidationError) -> str:
    """One line naming every bad key (unknown keys alone when there are any)."""
    errors = exc.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return f"unknown config key(s): {', '.join(unknown)}"
    parts, bounds = [], []
    for e in errors:
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        kind, got = e["type"], e.get("input")
        if kind in _BOUNDS:
            limit = next(iter(e["ctx"].values()))
            bounds.append(f"{key}={got!r} (must be {_BOUNDS[kind]} {limit})")
        elif kind == "literal_error":
            choices = [str(c) for c in get_args(TrainConfig.model_fields[key].annotation)]
            allowed = (" or ".join(choices) if len(choices) == 2
                       else "one of " + ", ".join(choices))
            parts.append(f"{key} must be {allowed}, got {got!r}")
        elif kind in _KINDS:
            parts.append(f"{key} must be {_KINDS[kind]}, got {got!r}")
        elif kind == "value_error":   # a validator's own message names its key(s)
            parts.append(str(e["ctx"]["error"]))
        else:
            parts.append(f"{key}: {e['msg']}")
    if bounds:
        parts.insert(0, "invalid config value(s): " + ", ".join(bounds))
    return "; ".join(parts)
