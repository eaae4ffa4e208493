"""``tilt bench throughput|optimum``: measurements on one engine (logic in ``tilt.benchmarks``).

    tilt bench throughput --engine vllm --json
    tilt bench serve --out docs/bench/serve.json     # vs vLLM's own server, SMC vs best-of-N
    tilt bench quality --out docs/bench/quality_smollm2.json   # token vs best-of-8 over HTTP
    tilt bench optimum --n 4096 --out docs/eval/demo_optimum/optimum.json

``throughput``: the last stdout line is one JSON object with at least unguided_tokens_per_s,
guided_tokens_per_s, ratio and ideal_ratio (= M / (M + m), base and value-model parameters).
Progress lines (``bench: ...``) go to stderr. SIGTERM/SIGINT close the engine (no vLLM process
is left) and exit with 128 + the signal (``tilt.runner``).
``optimum``: the exact tilted frontier (mean reward vs KL to base per beta) of a task from base
samples, written as JSON. Bad input exits with code 2 and a one-line message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tilt.cli import app
from tilt.errors import fail
from tilt.paths import checkout_file
from tilt.runner import Interrupted, run

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _progress(msg: str) -> None:
    typer.echo(f"bench: {msg}", err=True)


@bench_app.command("throughput")
def throughput(
    engine: str = typer.Option("vllm", help="vllm | transformers"),
    model: str = typer.Option(None, help="Base model directory (default: bundled demo-base)."),
    value_model: str = typer.Option(None, "--value-model",
                                    help="Value model directory (default: a random one, <= 1/4 of M)."),
    concurrency: str = typer.Option("16", help="Sequences decoded at once; several levels "
                                    "as a comma list (1,32), measured on one engine."),
    max_tokens: int = typer.Option(64, min=1, help="Tokens per sequence."),
    repeats: int = typer.Option(3, min=1, help="Alternating unguided/guided rounds."),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON result line."),
) -> None:
    """Unguided vs guided tokens/s on the same engine, with the ideal ratio M/(M+m)."""
    if engine not in ("vllm", "transformers"):
        fail(f"unknown engine {engine!r} (vllm | transformers)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    try:
        levels = [int(c) for c in concurrency.split(",")]
    except ValueError:
        fail(f"--concurrency: expected integers separated by commas, got {concurrency!r}")
    if min(levels) < 1:
        fail("--concurrency: each level must be >= 1")
    from tilt.benchmarks.throughput import run_throughput

    try:
        result = run(run_throughput(engine=engine, model=model, value_model=value_model,
                                    concurrency=levels if len(levels) > 1 else levels[0], max_tokens=max_tokens,
                                    repeats=repeats, progress=_progress))
    except ValueError as exc:
        fail(str(exc))
    except Interrupted as exc:  # engine closed, no child left: exit 128 + signal
        raise typer.Exit(exc.exit_code) from exc
    if not as_json:
        typer.echo(f"ideal_ratio {result['ideal_ratio']}  (M {result['base_parameters']}, "
                   f"m {result['value_model_parameters']})")
        for level in result.get("levels", [result]):
            typer.echo("  ".join(f"{k} {level[k]}" for k in (
                "concurrency", "unguided_tokens_per_s", "guided_tokens_per_s", "ratio",
                "ratio_over_ideal", "guided_blocks_tokens_per_s")))
    typer.echo(json.dumps(result))


@bench_app.command("serve")
def serve(
    model: str = typer.Option(None, help="What tilt serve --model takes (default: tilt serve's "
                              "default, SmolLM2 with its value model; 'demo' the demo models)."),
    clients: int = typer.Option(32, min=1, help="Concurrent closed-loop clients."),
    requests: int = typer.Option(2, min=1, help="Requests per client per round."),
    max_tokens: int = typer.Option(64, min=1, help="Tokens per request (ignore_eos)."),
    repeats: int = typer.Option(5, min=1, help="Rounds of vLLM / tilt none / tilt token."),
    particles: int = typer.Option(16, min=1, help="SMC particles = best-of-N candidates."),
    smc_requests: int = typer.Option(8, min=1, help="Concurrent particle requests."),
    smc_tokens: int = typer.Option(32, min=1, help="Tokens per particle request."),
    smc_repeats: int = typer.Option(3, min=0, help="Rounds of best_of_n / smc (0: skip)."),
    smc_resample_every: int = typer.Option(None, min=1, help="smc's guidance.resample_every "
                                           "(tokens per SMC step; default: the server's)."),
    no_vllm: bool = typer.Option(False, "--no-vllm", help="Skip vLLM's own server."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """vLLM's own OpenAI server vs tilt serve on the same model and engine settings (one
    paused while the other is measured): tokens/s, latency, ratios; SMC vs best-of-N and
    /health latency under particle load. The last stdout line is the JSON result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from tilt.benchmarks.serve import run_serve_bench

    try:
        result = run(run_serve_bench(model=model, clients=clients, requests=requests,
                                     max_tokens=max_tokens, repeats=repeats,
                                     particles=particles, smc_requests=smc_requests,
                                     smc_tokens=smc_tokens, smc_repeats=smc_repeats,
                                     smc_resample_every=smc_resample_every,
                                     with_vllm=not no_vllm, progress=_progress))
    except RuntimeError as exc:  # a server did not start: its log's tail is in the message
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Interrupted as exc:  # both servers stopped (their process groups killed)
        raise typer.Exit(exc.exit_code) from exc
    text = json.dumps(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(text)


@bench_app.command("quality")
def quality(
    prompts: Path = typer.Option(Path("bench/smollm2_heldout_prompts.txt"),
                                 help="Held-out prompts, one per line ('#' lines skipped)."),
    model: str = typer.Option(None, help="What tilt serve --model takes (default: its default)."),
    reward: str = typer.Option("vader", help="The served reward that scores every choice."),
    n: int = typer.Option(8, min=1, help="Completions per prompt and method."),
    max_tokens: int = typer.Option(24, min=1, help="Tokens per completion (stops at EOS)."),
    best_of: int = typer.Option(8, min=2, help="best_of_n's N (the KL bound is log N - (N-1)/N)."),
    beta: float = typer.Option(None, help="token's beta (> 0; default: the server's)."),
    seed: int = typer.Option(0, help="Request i has seed + i (fixed before the run)."),
    clients: int = typer.Option(8, min=1, help="Requests in flight."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Token guidance with the default value model vs best-of-N over HTTP on held-out
    prompts: mean reward ± SE, KL to base, wall time vs unguided (issue 19's goal). The last
    stdout line is the JSON result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = checkout_file(prompts)
    if path is None:
        fail(f"prompt file not found: {prompts}")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    texts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not texts:
        fail(f"no prompts in {prompts}")
    if beta is not None and not beta > 0:
        fail(f"--beta must be > 0, got {beta}")
    from tilt.benchmarks.quality import run_quality_bench

    try:
        result = run(run_quality_bench(texts, model=model, reward=reward, n=n,
                                       max_tokens=max_tokens, best_of=best_of, beta=beta,
                                       seed=seed, clients=clients, progress=_progress))
    except RuntimeError as exc:  # the server did not start: its log's tail is in the message
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except Interrupted as exc:
        raise typer.Exit(exc.exit_code) from exc
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps(result))


@bench_app.command("optimum")
def optimum(
    model: str = typer.Option(None, help="Base model directory (default: bundled demo-base)."),
    reward: str = typer.Option("vader", help="Reward spec."),
    prompts: str = typer.Option("docs/eval/prompts.txt",
                                help="Prompt file, one a line (cwd, else the checkout)."),
    n: int = typer.Option(4096, help="Base samples per prompt (>= 8)."),
    seed: int = typer.Option(123, help="Sampling seed."),
    max_tokens: int = typer.Option(20, help="Completion length cap T."),
    out: Path = typer.Option(Path("runs/optimum.json"), help="Output JSON file."),
) -> None:
    """The exact tilted frontier E_pi*[R] vs KL(pi* || pi_ref) per beta, from base samples (vLLM)."""
    if n < 8:
        fail("--n must be >= 8")
    path = checkout_file(prompts)
    if path is None:
        fail(f"prompt file not found: {prompts}")
    lines = [p for p in path.read_text().splitlines() if p.strip()]
    if not lines:
        fail(f"prompt file {prompts} has no prompts")
    from engines.loader import DEMO_BASE
    from tilt.benchmarks.optimum import optimum_report, sample_rewards

    try:
        rewards = run(sample_rewards(model or DEMO_BASE, reward, lines, n, seed,
                                     max_tokens=max_tokens))
    except ValueError as exc:
        fail(str(exc))
    except Interrupted as exc:
        raise typer.Exit(exc.exit_code) from exc
    result = optimum_report(rewards, seed, max_tokens)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(f"base {result['base_mean_reward']:.3f}  best-of-8 {result['best_of_8_expected']:.3f}")
    for f in result["frontier"]:
        typer.echo(f"beta {f['beta']:<5g} reward {f['mean_reward']:.3f}  KL {f['kl_to_base']:.3f}  "
                   f"min ESS {f['min_ess']:.0f}")
    typer.echo(f"wrote {out}")
