"""Server configuration: what to serve, the defaults of omitted guidance fields, the limits.

Built from ``tilt serve`` flags or a YAML file (the same keys):

    model: tilt/assets/demo-base
    engine: vllm                      # vllm | transformers | toy
    engine_options: {tensor_parallel_size: 2}
    value_models: {pos: path/to/value-model}
    rewards: {vader: vader}
    defaults: {value_model: pos, reward: vader, beta: 1.0}
    limits: {max_concurrent_requests: 8, max_queue: 32}   # unset: the engine's batch size
    api_keys: [sk-...]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from decoders.methods import METHODS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Defaults(_Strict):
    """Values used for guidance fields a request leaves out."""

    method: str = "none"
    value_model: str | None = None  # None: the only value model served, if exactly one
    reward: str | None = None  # None: the only reward served, if exactly one
    beta: float = Field(1.0, gt=0)
    particles: int = Field(8, ge=1)
    ess_threshold: float = Field(0.5, ge=0, le=1)
    block_size: int = Field(4, ge=1)
    # smc tokens per SMC step; None: NATIVE_RESAMPLE_EVERY where the engine samples the
    # particles itself (vLLM, value model inside its sampler), 1 (token-level) otherwise
    resample_every: int | None = Field(None, ge=1)
    candidates: int = Field(4, ge=1)
    max_tokens: int = Field(16, ge=1)


class Limits(_Strict):
    """Caps on one request and on the server's load."""

    max_n: int = Field(16, ge=1)
    max_particles: int = Field(64, ge=1)
    max_candidates: int = Field(64, ge=1)
    max_tokens: int | None = Field(None, ge=1)  # None: the engine's cap
    max_prompt_tokens: int | None = Field(None, ge=1)  # None: the engine's max_model_len
    max_logprobs: int = Field(20, ge=-1)  # -1: up to the full vocabulary
    # None: the engine's batch size (vLLM's max_num_seqs; 8 for engines without one)
    max_concurrent_requests: int | None = Field(None, ge=1)
    max_queue: int = Field(32, ge=0)
    request_timeout_s: float = Field(300.0, gt=0)
    retry_after_s: int = Field(1, ge=0)
    max_stop: int = Field(4, ge=0)


class ServerConfig(_Strict):
    model: str = "tilt/assets/demo-base"
    served_model_name: str | None = None
    engine: str = "vllm"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    value_models: dict[str, str] = Field(default_factory=dict)
    rewards: dict[str, str] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    limits: Limits = Field(default_factory=Limits)
    api_keys: list[str] = Field(default_factory=list, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = "info"

    def model_post_init(self, _: Any) -> None:
        if self.defaults.method not in METHODS:
            raise ValueError(f"defaults.method must be one of {', '.join(METHODS)}")
        env_keys = [k for k in os.environ.get("TILT_API_KEYS", "").split(",") if k.strip()]
        if env_keys and not self.api_keys:
            self.api_keys = [k.strip() for k in env_keys]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ServerConfig:
        """Load a YAML config file; raise ValueError with the file and the bad key."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ValueError(f"config file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping of keys")
        try:
            return cls(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"config file {path}: {key}: {err['msg']}") from exc
