"""The ``tilt`` command line: ``tilt serve``, ``tilt bench``, ``tilt train``, ``tilt eval``,
``tilt value-model``, ``tilt rollouts``, ``tilt setup-model``.

Each command group lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="Tilt: sample from energy-tilted language-model distributions.",
                  no_args_is_help=True, add_completion=False)

# Modules that add commands to ``app`` (each owns one command group).
for _mod in ("tilt.cmd_serve", "tilt.cmd_bench", "tilt.cmd_train", "tilt.cmd_eval",
             "tilt.cmd_value_model", "tilt.cmd_rollouts", "tilt.cmd_setup"):
    try:
        importlib.import_module(_mod)
    except ModuleNotFoundError as exc:  # a group not written yet
        if exc.name != _mod:
            raise

if __name__ == "__main__":  # `python -m tilt.cli`: use the module the commands registered on
    from tilt.cli import app as _app

    _app()
