"""``tilt value-model screen|grow``: tools for trained value models (logic in
``training.tools``).

    tilt value-model screen --betas 0.16,0.17 runs/demo-value-spi1 runs/demo-value-spi2
    tilt value-model grow runs/demo-value-spi2 runs/demo-value-grown

``screen`` prints one JSON line per model, beta and prompt set (``training.tools.screen``).
Bad input (betas, sets, a missing prompt file or value model) exits with code 2 and a one-line
message.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from tilt.cli import app
from tilt.errors import fail
from tilt.paths import checkout_file

value_model_app = typer.Typer(help="Screen and grow trained value models.", no_args_is_help=True)
app.add_typer(value_model_app, name="value-model")


def _betas(text: str) -> list[float]:
    try:
        betas = [float(b) for b in text.split(",")]
    except ValueError:
        fail(f"--betas must be comma-separated numbers, got {text!r}")
    if any(b <= 0 for b in betas):
        fail("--betas must be > 0")
    return betas


@value_model_app.command("screen")
def screen(
    models: list[str] = typer.Argument(..., help="value model directories"),
    betas: str = typer.Option("0.16,0.17", help="comma-separated serve betas"),
    sets: str = typer.Option("eval,train", help="prompt sets: eval, train"),
    seed: int = typer.Option(5, help="seed of the sampler (the same for every model)"),
    max_tokens: int = typer.Option(20, help="completion length cap T"),
    model: str | None = typer.Option(None, help="base model directory (default: bundled demo-base)"),
    eval_prompts: str = typer.Option("docs/eval/prompts.txt",
                                     help="eval set: every prompt x 128 (cwd, else the checkout)"),
    train_prompts: str = typer.Option("bench/demo_train_prompts.txt",
                                      help="train set: the last 256 prompts x 8 (cwd, else the checkout)"),
    threads: int = typer.Option(2, help="torch CPU threads"),
) -> None:
    """Token guidance of each value model at each beta: reward, KL to base, R - c·KL."""
    import torch

    from engines.loader import DEMO_BASE
    from training.tools.screen import SETS, read_prompt_set, screen

    beta_list = _betas(betas)
    names = sets.split(",")
    if set(names) - set(SETS):
        fail("--sets must name eval and/or train")
    files = {"eval": eval_prompts, "train": train_prompts}
    prompt_sets = []
    for name in names:
        path = checkout_file(files[name])
        if path is None:
            fail(f"prompt file not found: {files[name]} (pass --{name}-prompts FILE)")
        prompt_sets.append(read_prompt_set(name, path))
    torch.set_num_threads(threads)

    async def run() -> None:
        async for row in screen(models, beta_list, prompt_sets, base_model=model or DEMO_BASE,
                                seed=seed, max_tokens=max_tokens):
            typer.echo(json.dumps(row))

    try:
        asyncio.run(run())
    except ValueError as exc:
        fail(str(exc))


@value_model_app.command("grow")
def grow(
    src: Path = typer.Argument(..., help="value model directory (Llama)"),
    dst: Path = typer.Argument(..., help="output directory"),
    seed: int = typer.Option(0, help="seed of the new layer's (inert) initial weights"),
) -> None:
    """One more layer, the same Q(s, .): the new layer's output projections start at zero."""
    from training.tools.grow import grow as grow_model

    try:
        n = grow_model(src, dst, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"{dst}: {n:,} parameters")
