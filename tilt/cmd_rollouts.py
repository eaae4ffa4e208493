"""``tilt rollouts merge``: the rollouts of two ``tilt train`` runs over consecutive prompt
files as one ``train/rollouts.pt`` (logic in ``training.tools.merge_rollouts``).

    tilt rollouts merge runs/A/train/rollouts.pt 8000 runs/B/train/rollouts.pt 8218 \\
        runs/C/train/rollouts.pt

A rollout whose prompt index is not below its run's prompt count exits with code 2 and a
one-line message, writing nothing.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tilt.cli import app
from tilt.errors import fail

rollouts_app = typer.Typer(help="Rollout files of tilt train (OUT/train/rollouts.pt).",
                           no_args_is_help=True)
app.add_typer(rollouts_app, name="rollouts")


@rollouts_app.command("merge")
def merge(
    a: Path = typer.Argument(..., help="rollouts.pt of the run over the first prompts"),
    prompts_a: int = typer.Argument(..., help="number of prompts in run a's prompt file"),
    b: Path = typer.Argument(..., help="rollouts.pt of the run over the prompts after them"),
    prompts_b: int = typer.Argument(..., help="number of prompts in run b's prompt file"),
    out: Path = typer.Argument(..., help="merged rollouts.pt (e.g. runs/NEW/train/rollouts.pt)"),
) -> None:
    """Merge two runs' rollouts; b's prompts follow a's (tilt train --resume reuses the file)."""
    from training.tools.merge_rollouts import merge_rollouts

    try:
        merged = merge_rollouts(a, prompts_a, b, prompts_b, out)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"wrote {len(merged['rollouts'])} rollouts over {prompts_a + prompts_b} prompts "
               f"to {out}")
