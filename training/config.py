"""Training configuration: one dataclass, loaded from YAML and overridden by CLI flags.

    cfg = load_config("train.yaml", overrides={"steps": 200})

Unknown keys and bad values raise ``ConfigError`` (the CLI turns it into exit code 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

OBJECTIVES = ("soft_q", "iw_fkl", "reverse_kl")


class ConfigError(ValueError):
    """A configuration, model or reward that cannot be used (CLI exit code 2)."""


@dataclass
class TrainConfig:
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
    """

    model: str = "toy:vocab=8,len=4,seed=0"
    reward: str = "toy:seed=0"
    engine: str = "vllm"
    out: str = "runs/value"
    objective: str = "soft_q"
    q_loss: str = "mse"
    exp_clip: float = 4.0
    init_from: str | None = None
    init_scale: float = 1.0
    group: int = 8
    baseline: str = "loo"
    rollout_policy: str = "base"
    guide_beta: float | None = None
    beta: float = 1.0
    prompts: list[str] = field(default_factory=lambda: [""])
    prompt_file: str | None = None
    max_tokens: int = 4
    rollouts: int = 4096
    branch_points: int = 0
    branches: int = 4
    branch_from: str = "uniform"
    steps: int = 1000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    eval_every: int = 200
    ckpt_every: int = 200
    seed: int = 0
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 128
    tie_embeddings: bool = False
    val_fraction: float = 0.1
    temperature: float = 1.0
    threads: int = 1
    engine_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.q_loss not in ("mse", "exp"):
            raise ConfigError(f"q_loss must be mse or exp, got {self.q_loss!r}")
        if self.branch_from not in ("uniform", "tilted"):
            raise ConfigError(f"branch_from must be uniform or tilted, got {self.branch_from!r}")
        checks = {
            "beta": self.beta > 0, "max_tokens": self.max_tokens >= 1, "rollouts": self.rollouts >= 1,
            "branch_points": self.branch_points >= 0, "branches": self.branches >= 1,
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
            "eval_every": self.eval_every >= 1, "ckpt_every": self.ckpt_every >= 1,
            "hidden": self.hidden >= 1, "layers": self.layers >= 1, "heads": self.heads >= 1,
            "intermediate": self.intermediate >= 1, "val_fraction": 0 <= self.val_fraction < 1,
            "temperature": self.temperature > 0, "exp_clip": self.exp_clip > 0,
            "group": self.group >= 2, "init_scale": self.init_scale > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError("invalid config value(s): " + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad))
        if self.baseline not in ("loo", "value"):
            raise ConfigError(f"baseline must be loo or value, got {self.baseline!r}")
        if self.rollout_policy not in ("base", "guided"):
            raise ConfigError(f"rollout_policy must be base or guided, got {self.rollout_policy!r}")
        if self.rollout_policy == "guided" and not (
                self.init_from and self.objective == "soft_q" and self.q_loss == "mse"
                and self.branch_points == 0):
            raise ConfigError("rollout_policy guided needs init_from (the policy to roll out), "
                              "objective soft_q with q_loss mse, and branch_points 0")
        if self.guide_beta is not None and not (isinstance(self.guide_beta, int | float)
                                                and self.guide_beta > 0):
            raise ConfigError(f"guide_beta must be > 0, got {self.guide_beta!r}")
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ConfigError(f"init_from must be a path, got {self.init_from!r}")
        if self.objective == "reverse_kl" and self.batch_size % self.group:
            raise ConfigError(f"reverse_kl: batch_size ({self.batch_size}) must be a multiple of "
                              f"group ({self.group})")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
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
        return asdict(self)


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
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    try:
        cfg = TrainConfig(**data)
    except TypeError as exc:
        raise ConfigError(f"bad config: {exc}") from exc
    for f in fields(TrainConfig):  # coerce YAML numbers (e.g. beta: 1) to the declared type
        val = getattr(cfg, f.name)
        if f.type == "float" and isinstance(val, int) and not isinstance(val, bool):
            setattr(cfg, f.name, float(val))
        elif f.type == "int" and not (isinstance(val, int) and not isinstance(val, bool)):
            raise ConfigError(f"{f.name} must be an integer, got {val!r}")
        elif f.type == "float" and not isinstance(val, int | float):
            raise ConfigError(f"{f.name} must be a number, got {val!r}")
    return cfg.validate()
