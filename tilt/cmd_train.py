"""``tilt train``: distil pi_ref·exp(R/beta) into a value model (logic in ``training``).

    tilt train --model toy:vocab=8,len=4,seed=0 --reward toy:seed=0 --prompt '<0>' --out runs/toy
    tilt train --config bench/train_demo.yaml            # YAML config, CLI flags override it
    torchrun --nproc_per_node=2 -m tilt.cli train --config ...   # DDP (gloo on CPU)

A bad config, model or reward, or ``--device cuda`` without CUDA, exits with code 2 and a one-line message. SIGTERM/SIGINT close
the engine and exit with 128 + the signal (``tilt.runner``); a second one forces the exit.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from tilt.cli import app
from tilt.errors import fail
from tilt.runner import Interrupted, run


@app.command()
def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (flags override it)"),
    model: str | None = typer.Option(None, help="base model: toy:vocab=V,len=T,seed=S or an HF dir"),
    reward: str | None = typer.Option(None, help="reward spec, e.g. vader or toy:seed=0"),
    engine: str | None = typer.Option(None, help="vllm | transformers | toy"),
    out: str | None = typer.Option(None, help="output value-model directory"),
    objective: str | None = typer.Option(None, help="soft_q (default) | iw_fkl | reverse_kl (on-policy)"),
    init_from: str | None = typer.Option(None, help="start from this saved value model"),
    init_from_lm: str | None = typer.Option(None, help="start from this pretrained Llama LM "
                                            "(same tokenizer as the base): its layers, a zero head"),
    init_layers: int | None = typer.Option(None, help="keep the first k layers of that LM (alone: "
                                           "of the base)"),
    init_scale: float | None = typer.Option(None, help="multiply the initial Q by this"),
    group: int | None = typer.Option(None, help="reverse_kl: completions per prompt in a step"),
    baseline: str | None = typer.Option(None, help="reverse_kl: loo | value"),
    rollout_policy: str | None = typer.Option(None, help="soft_q rollouts: base | guided (init_from's policy)"),
    guide_beta: float | None = typer.Option(None, help="beta of the guided rollout policy"),
    q_loss: str | None = typer.Option(None, help="soft_q loss: mse | exp (exp-space pooling)"),
    exp_clip: float | None = typer.Option(None, help="exp loss: u = (target - Q)/beta past which exp is linear"),
    beta: float | None = typer.Option(None, help="tilt temperature"),
    prompt: list[str] | None = typer.Option(None, help="a prompt (repeatable)"),
    prompt_file: str | None = typer.Option(None, help="one prompt per line"),
    max_tokens: int | None = typer.Option(None, help="completion length cap T"),
    rollouts: int | None = typer.Option(None, help="base trajectories per prompt"),
    branch_points: int | None = typer.Option(None, help="branch prefixes per trajectory"),
    branches: int | None = typer.Option(None, help="continuations per branch prefix"),
    branch_from: str | None = typer.Option(None, help="uniform | tilted (parents drawn ∝ exp(R/beta))"),
    steps: int | None = typer.Option(None, help="optimisation steps"),
    batch_size: int | None = typer.Option(None, help="paths per minibatch"),
    lr: float | None = typer.Option(None, help="AdamW learning rate"),
    eval_every: int | None = typer.Option(None, help="evaluate every N steps"),
    ckpt_every: int | None = typer.Option(None, help="checkpoint every N steps"),
    seed: int | None = typer.Option(None, help="seed of rollouts, init and minibatches"),
    hidden: int | None = typer.Option(None, help="value-model width"),
    layers: int | None = typer.Option(None, help="value-model layers"),
    heads: int | None = typer.Option(None, help="value-model attention heads"),
    intermediate: int | None = typer.Option(None, help="value-model MLP width"),
    threads: int | None = typer.Option(None, help="torch CPU threads (0 = torch default)"),
    device: str | None = typer.Option(None, help="auto (cuda if available) | cpu | cuda | cuda:N; "
                                      "CUDA trains under bf16 autocast"),
    resume: bool = typer.Option(False, "--resume", help="reuse rollouts and continue from the checkpoint"),
    stop_after: int | None = typer.Option(None, help="checkpoint and stop at this step (resume later)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Train a value model Q_theta so that softmax(l_ref + Q_theta/beta) ≈ pi*."""
    from training.config import ConfigError, load_config
    from training.trainer import train_async

    overrides = {k: v for k, v in {
        "model": model, "reward": reward, "engine": engine, "out": out, "objective": objective,
        "init_from": init_from, "init_from_lm": init_from_lm, "init_layers": init_layers,
        "init_scale": init_scale, "group": group, "baseline": baseline,
        "rollout_policy": rollout_policy, "guide_beta": guide_beta,
        "q_loss": q_loss, "exp_clip": exp_clip, "beta": beta, "prompts": list(prompt) if prompt else None, "prompt_file": prompt_file,
        "max_tokens": max_tokens, "rollouts": rollouts, "branch_points": branch_points,
        "branches": branches, "branch_from": branch_from, "steps": steps, "batch_size": batch_size, "lr": lr,
        "eval_every": eval_every, "ckpt_every": ckpt_every, "seed": seed, "hidden": hidden,
        "layers": layers, "heads": heads, "intermediate": intermediate, "threads": threads,
        "device": device,
    }.items() if v is not None}
    try:
        cfg = load_config(config, overrides)
        summary = run(train_async(cfg, resume=resume, progress=not quiet, stop_after=stop_after))
    except ConfigError as exc:
        fail(str(exc))
    except Interrupted as exc:  # engine closed, no child left (the last checkpoint stays)
        raise typer.Exit(exc.exit_code) from exc
    if summary:
        Console().print_json(json.dumps(summary))
