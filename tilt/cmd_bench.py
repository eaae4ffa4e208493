"""``tilt bench throughput``: guided vs unguided tokens/s on one engine (bench/throughput.py).

    tilt bench throughput --engine vllm --json

The last stdout line is one JSON object with at least unguided_tokens_per_s,
guided_tokens_per_s, ratio and ideal_ratio (= M / (M + m), base and value-model parameters).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import typer

from tilt.cli import app

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

REPO = Path(__file__).resolve().parents[1]


@bench_app.command("throughput")
def throughput(
    engine: str = typer.Option("vllm", help="vllm | transformers"),
    model: str = typer.Option(None, help="Base model directory (default: bundled demo-base)."),
    value_model: str = typer.Option(None, "--value-model",
                                    help="Value model directory (default: a random one, <= 1/4 of M)."),
    concurrency: int = typer.Option(16, min=1, help="Sequences decoded at once."),
    max_tokens: int = typer.Option(64, min=1, help="Tokens per sequence."),
    repeats: int = typer.Option(3, min=1, help="Alternating unguided/guided rounds."),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result line."),
) -> None:
    """Unguided vs guided tokens/s on the same engine, with the ideal ratio M/(M+m)."""
    if engine not in ("vllm", "transformers"):
        typer.echo(f"error: unknown engine {engine!r} (vllm | transformers)", err=True)
        raise typer.Exit(2)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if str(REPO) not in sys.path and (REPO / "bench").is_dir():
        sys.path.insert(0, str(REPO))
    from bench.throughput import run_throughput

    try:
        result = asyncio.run(run_throughput(engine=engine, model=model, value_model=value_model,
                                            concurrency=concurrency, max_tokens=max_tokens,
                                            repeats=repeats))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not as_json:
        for key in ("unguided_tokens_per_s", "guided_tokens_per_s", "ratio", "ideal_ratio",
                    "ratio_over_ideal", "guided_blocks_tokens_per_s"):
            typer.echo(f"{key:28s} {result[key]}")
    typer.echo(json.dumps(result))
