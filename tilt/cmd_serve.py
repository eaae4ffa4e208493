"""``tilt serve``: run the OpenAI-compatible server (uvicorn) on one base model.

    tilt serve                                   # SmolLM2-135M-Instruct (vLLM CPU/GPU)
    tilt serve --model demo                      # the bundled 4M-parameter demo models
    tilt serve --model toy:vocab=8,len=4,seed=0 --reward toy=toy:seed=0
    tilt serve --model path/to/model --engine vllm --value-model pos=path/to/vm \\
               --reward vader=vader --api-key $KEY --tensor-parallel-size 2
    tilt serve --config tilt.yaml                # same keys as server.config.ServerConfig

Flags override the config file. Bad input exits with code 2 and a message.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from tilt.cli import app
from tilt.runner import Interrupted, run

log = logging.getLogger("tilt.serve")
SHUTDOWN_GRACE_S = 10  # after a signal, answers still being sent get this long

ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_BASE = ASSETS / "demo-base"
DEMO_REWARDS = {"vader": "vader"}
SMOLLM2_MAX_LEN = 2048  # of its 8,192 positions: a chat's worth, and a small KV cache on CPU


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    """['a=x', 'b=y'] -> {'a': 'x', 'b': 'y'}; exit 2 on a malformed item."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=flag)
        out[name.strip()] = value.strip()
    return out


def _option_value(text: str) -> Any:
    """Engine option values: JSON when they parse (2, true, 0.5), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def demo_value_models() -> dict[str, dict[str, Any]]:
    """Bundled value models: name (directory) -> manifest, for tilt/assets/*/tilt.json with
    format tilt-value-model (the manifest's ``path`` is added)."""
    found = {}
    for manifest in sorted(ASSETS.glob("*/tilt.json")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("format") == "tilt-value-model":
            found[manifest.parent.name] = {**data, "path": str(manifest.parent)}
    return found


def _config_value(model_dir: Path, key: str) -> int | None:
    try:
        return int(json.loads((model_dir / "config.json").read_text())[key])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _max_positions(model_dir: Path) -> int | None:
    return _config_value(model_dir, "max_position_embeddings")


def _default_beta(manifest: dict[str, Any]) -> float | None:
    """The manifest's ``serve_beta`` (chosen by evaluation) if set, else the beta it was
    trained at; None if neither is a positive number."""
    for key in ("serve_beta", "beta"):
        b = manifest.get(key)
        if isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0:
            return float(b)
    return None


def base_config(base: Path, max_len: int = 1024) -> dict[str, Any]:
    """Serve ``base`` on vLLM with the bundled value models made for it (same vocabulary) and
    the VADER reward, each only if it is there (say so otherwise)."""
    cfg: dict[str, Any] = {"model": str(base), "engine": "vllm"}
    positions = _max_positions(base)
    if positions:  # the engine's default context may be longer than the model's
        cfg["engine_options"] = {"max_model_len": min(positions, max_len)}
    vocab = _config_value(base, "vocab_size")
    vms = {k: v for k, v in demo_value_models().items()
           if vocab is None or v.get("vocab_size") in (None, vocab)}
    if vms:
        name, manifest = next(iter(vms.items()))
        cfg["value_models"] = {k: v["path"] for k, v in vms.items()}
        cfg["defaults"] = {"value_model": name}
        beta = _default_beta(manifest)
        if beta is not None:
            cfg["defaults"]["beta"] = beta
        log.info("default value model %s (reward %s, default beta %s)", name,
                 manifest.get("reward"), beta)
    else:
        log.warning("no bundled value model for %s under %s; guided methods that need one "
                    "(token, smc, blockwise) will answer 400 until one is configured",
                    base.name, ASSETS)
    try:
        from rewards.loader import load_reward

        load_reward("vader")
        cfg["rewards"] = dict(DEMO_REWARDS)
        cfg.setdefault("defaults", {})["reward"] = "vader"
    except Exception as exc:  # noqa: BLE001 - a missing optional reward is only logged
        log.warning("reward 'vader' unavailable (%s); serving no reward", exc)
    return cfg


def demo_config() -> dict[str, Any]:
    """The bundled 4M-parameter demo base (the toy model if it is missing)."""
    if not (DEMO_BASE / "config.json").exists():
        log.warning("bundled demo model %s is missing (build it with scripts/"
                    "build_demo_base.py); serving the toy model instead", DEMO_BASE)
        return {"model": "toy:vocab=8,len=4,seed=0", "engine": "toy",
                "rewards": {"toy": "toy:seed=0"}}
    return base_config(DEMO_BASE)


def default_config() -> dict[str, Any]:
    """What ``tilt serve`` with no model serves: SmolLM2-135M-Instruct, built by
    ``tilt setup-model`` on first use (about a minute, cached); the demo base when it cannot
    be set up (the warning names the step and the fix)."""
    from tilt.models import ModelSetupError
    from tilt.models.smollm2 import build

    try:
        return base_config(build(), max_len=SMOLLM2_MAX_LEN)
    except ModelSetupError as exc:
        log.warning("cannot set up SmolLM2 (%s); serving the bundled demo model instead", exc)
        return demo_config()


def build_config(*, config: Path | None, model: str | None, engine: str | None,
                 value_model: list[str], reward: list[str], api_key: list[str],
                 host: str | None, port: int | None, served_model_name: str | None,
                 default_value_model: str | None, default_reward: str | None,
                 default_method: str | None, beta: float | None,
                 tensor_parallel_size: int | None, engine_option: list[str],
                 limit: list[str]) -> Any:
    """Config file (or the defaults of a named model -- SmolLM2 when neither a file nor --model
    is given, the demo models for ``--model demo``), then
    the flags on top. Raises ValueError / typer.BadParameter on bad input."""
    from server.config import ServerConfig

    data: dict[str, Any] = {}
    if config is not None:
        data = ServerConfig.from_yaml(config).model_dump()
    named = config is None and model in (None, "smollm2", "demo")
    if named:
        data = demo_config() if model == "demo" else default_config()
    if model is not None and not named:
        data["model"] = model
        if config is None and engine is None:
            data["engine"] = "toy" if model.startswith("toy:") else "vllm"
    if engine is not None:
        data["engine"] = engine
    if value_model:
        data["value_models"] = {**data.get("value_models", {}), **_pairs(value_model, "--value-model")}
    if reward:
        data["rewards"] = {**data.get("rewards", {}), **_pairs(reward, "--reward")}
    if api_key:
        data["api_keys"] = list(api_key)
    opts = {k: _option_value(v) for k, v in _pairs(engine_option, "--engine-option").items()}
    if tensor_parallel_size is not None:
        opts["tensor_parallel_size"] = tensor_parallel_size
    data["engine_options"] = {**data.get("engine_options", {}), **opts}
    defaults = dict(data.get("defaults", {}))
    for key, val in (("value_model", default_value_model), ("reward", default_reward),
                     ("method", default_method), ("beta", beta)):
        if val is not None:
            defaults[key] = val
    data["defaults"] = defaults
    limits = dict(data.get("limits", {}))
    limits.update({k: _option_value(v) for k, v in _pairs(limit, "--limit").items()})
    data["limits"] = limits
    for key, val in (("host", host), ("port", port), ("served_model_name", served_model_name)):
        if val is not None:
            data[key] = val
    if data.get("engine") not in ("vllm", "transformers", "toy"):
        raise typer.BadParameter(f"unknown engine {data.get('engine')!r}; choose vllm, "
                                 "transformers or toy", param_hint="--engine")
    return ServerConfig(**data)


class _Stopper:
    """What the first SIGTERM/SIGINT does to a running server (see ``tilt.runner``): the
    engine state starts shutting down (running requests end with a 503, /ready says 503),
    then uvicorn stops accepting, waits for the answers to go out, and returns."""

    def __init__(self) -> None:
        self.state: Any = None
        self.server: Any = None

    def __call__(self, signum: int) -> bool:
        if self.server is None:  # still starting: cancel the start-up (the engine closes)
            return False
        self.state.begin_shutdown()
        self.server.should_exit = True
        return True


async def _serve(cfg: Any, stopper: _Stopper) -> None:
    import contextlib

    import uvicorn

    from server.app import create_app
    from server.engine_state import EngineState

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # noqa: ANN202 - tilt.runner owns SIGTERM/SIGINT
            yield

    try:
        state = await EngineState.open(cfg)
    except (ValueError, FileNotFoundError, NotImplementedError) as exc:
        typer.echo(f"Error: cannot start the server: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        server = Server(uvicorn.Config(create_app(cfg, state), host=cfg.host, port=cfg.port,
                                       log_level=cfg.log_level,
                                       timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
        stopper.state, stopper.server = state, server
        await server.serve()
    finally:
        await state.aclose()


@app.command()
def serve(
    model: str = typer.Option(None, "--model", help="Model path/name or toy:vocab=V,len=T,seed=S."),
    engine: str = typer.Option(None, "--engine", help="vllm | transformers | toy."),
    value_model: list[str] = typer.Option([], "--value-model", help="NAME=PATH (repeatable)."),
    reward: list[str] = typer.Option([], "--reward", help="NAME=SPEC (repeatable), e.g. vader=vader."),
    config: Path = typer.Option(None, "--config", help="YAML config file (flags override it)."),
    host: str = typer.Option(None, "--host", envvar="TILT_HOST",
                             help="Bind address (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", envvar="TILT_PORT", help="Port (default 8000)."),
    api_key: list[str] = typer.Option([], "--api-key", help="Accepted Bearer key (repeatable); "
                                      "also TILT_API_KEYS=k1,k2."),
    served_model_name: str = typer.Option(None, "--served-model-name"),
    default_value_model: str = typer.Option(None, "--default-value-model"),
    default_reward: str = typer.Option(None, "--default-reward"),
    default_method: str = typer.Option(None, "--default-method"),
    beta: float = typer.Option(None, "--beta", help="Default beta."),
    tensor_parallel_size: int = typer.Option(None, "--tensor-parallel-size",
                                             help="vLLM: shard the model over this many GPUs."),
    engine_option: list[str] = typer.Option([], "--engine-option",
                                            help="KEY=VALUE passed to open_engine (repeatable): "
                                            "vLLM's engine args (max_num_seqs=64, ...) and Tilt's "
                                            "exact_kl=true, value_dtype=bfloat16 (auto, float32, "
                                            "float16), value_cache_gib=G."),
    limit: list[str] = typer.Option([], "--limit", help="KEY=VALUE of server.config.Limits "
                                    "(repeatable), e.g. max_concurrent_requests=4."),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve guided generation over an OpenAI-compatible REST API."""
    from pydantic import ValidationError

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = build_config(
            config=config, model=model, engine=engine, value_model=value_model, reward=reward,
            api_key=api_key, host=host, port=port, served_model_name=served_model_name,
            default_value_model=default_value_model, default_reward=default_reward,
            default_method=default_method, beta=beta, tensor_parallel_size=tensor_parallel_size,
            engine_option=engine_option, limit=limit)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise typer.BadParameter(f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    cfg.log_level = log_level
    try:
        stopper = _Stopper()
        run(_serve(cfg, stopper), on_signal=stopper)
    except Interrupted as exc:  # a signal asked for it and the shutdown was clean: exit 0
        log.info("stopped (%s)", exc)


if app.registered_callback is None:
    @app.callback()
    def _main() -> None:
        """Tilt: sample from energy-tilted language-model distributions."""
        # A group callback keeps `tilt serve` a sub-command even while it is the only one.
