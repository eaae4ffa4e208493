"""``tilt eval``: methods × (reward, KL to base, compute) over a prompt file (logic in
``training.evaluate``); writes eval.json, table.md, reward_vs_kl.png, reward_vs_compute.png.

    tilt eval --model tilt/assets/demo-base --reward vader --value tilt/assets/demo-value \\
              --prompts docs/eval/prompts.txt --out docs/eval/demo

A bad model, value model, reward or prompt file exits with code 2 and a one-line message.
SIGTERM/SIGINT close the engine and exit with 128 + the signal (``tilt.runner``).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tilt.cli import app
from tilt.errors import fail
from tilt.runner import Interrupted, run


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"--{name} must be a comma-separated list of numbers, got {text!r}")


@app.command("eval")
def eval_cmd(
    model: str = typer.Option("tilt/assets/demo-base", help="base model (HF dir or toy spec)"),
    reward: str = typer.Option("vader", help="reward spec"),
    prompts: Path = typer.Option(..., help="prompt file, one prompt per line"),
    value: str | None = typer.Option(None, help="value-model directory (token/blockwise/smc)"),
    engine: str = typer.Option("vllm", help="vllm | transformers | toy"),
    out: Path = typer.Option(Path("runs/eval"), help="output directory"),
    max_tokens: int = typer.Option(24, help="completion length cap T"),
    n: int = typer.Option(8, help="samples per prompt and method"),
    betas: str = typer.Option("0.1,0.2,0.5", help="token-guidance betas"),
    best_of: str = typer.Option("2,4,8", help="best-of-N values"),
    particles: int = typer.Option(8, help="N of importance and smc"),
    particle_beta: float | None = typer.Option(None, help="beta of importance/smc/blockwise (default: middle beta)"),
    block_size: int = typer.Option(4, help="blockwise M"),
    candidates: int = typer.Option(4, help="blockwise K"),
    methods: str = typer.Option("none,token,best_of_n,importance,smc,blockwise", help="methods to run"),
    seed: int = typer.Option(0, help="seed"),
    engine_options: str = typer.Option("{}", help='JSON options for the engine, e.g. \'{"max_num_seqs": 256}\''),
    title: str = typer.Option("", help="plot title"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Evaluate sampling methods: mean reward vs KL-to-base vs compute."""
    from training.config import ConfigError
    from training.evaluate import EvalConfig, evaluate_async, write_report

    if not prompts.is_file():
        fail(f"prompt file not found: {prompts}")
    lines = [ln for ln in prompts.read_text().splitlines() if ln.strip()]
    if not lines:
        fail(f"prompt file {prompts} has no prompts")
    bests = [int(x) for x in _floats(best_of, "best-of")]
    try:
        options = json.loads(engine_options)
    except json.JSONDecodeError as exc:
        fail(f"--engine-options must be a JSON object: {exc}")
    if not isinstance(options, dict):
        fail("--engine-options must be a JSON object")
    cfg = EvalConfig(model=model, reward=reward, prompts=lines, value=value, engine=engine,
                     max_tokens=max_tokens, n=n, betas=_floats(betas, "betas"), best_of=bests,
                     particles=particles, particle_beta=particle_beta, block_size=block_size,
                     candidates=candidates, methods=[m.strip() for m in methods.split(",") if m.strip()],
                     seed=seed, out=str(out), engine_options=options)
    try:
        result = run(evaluate_async(cfg, progress=not quiet))
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    except Interrupted as exc:  # engine closed, no child left
        raise typer.Exit(exc.exit_code) from exc
    files = write_report(result, out, title or f"{model} · reward {reward} · T={max_tokens}")
    table = Table(title=f"tilt eval · {model} · {reward}")
    for col in ("method", "mean reward", "± s.e.", "KL to base", "base tok/sample", "compute ×"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in result["methods"]:
        rel = r.get("relative_compute")
        table.add_row(r["label"], f"{r['mean_reward']:.3f}", f"{r['sem_reward']:.3f}",
                      f"{r['kl_to_base']:.3f}", f"{r['base_tokens']:.1f}", "" if rel is None else f"{rel:.2f}")
    Console().print(table)
    chk = result["checks"]
    Console().print(f"best-of-8 KL bound log 8 - 7/8 = {chk['bon8_kl_bound']:.3f}; "
                    f"token guidance meets the demo criterion: {chk['passed']}")
    Console().print(f"wrote {files['json']}, {files['table']}, {files['plots']}")
