"""Every ``tilt`` command works from any directory once the package is installed: the
installed console script answers ``--help`` for the app and for every (nested) subcommand with
cwd=/, and defaults that name repository files resolve without the checkout as cwd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup

from tilt.cli import app

TILT = str(Path(sys.executable).parent / "tilt")  # the installed console script


def command_paths(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """``prefix`` and the path of every command below it, groups included."""
    paths = [prefix]
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, TyperGroup):
            paths += command_paths(cmd, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


PATHS = command_paths(typer.main.get_command(app))


def test_the_enumeration_sees_nested_commands():
    for path in [(), ("serve",), ("train",), ("eval",), ("bench", "throughput"),
                 ("bench", "optimum"), ("value-model", "screen"), ("value-model", "grow"),
                 ("rollouts", "merge")]:
        assert path in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "tilt")
def test_help_from_the_filesystem_root(path):
    out = subprocess.run([TILT, *path, "--help"], capture_output=True, text=True, cwd="/",
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout


def test_repository_defaults_resolve_from_another_directory(tmp_path, monkeypatch):
    from engines.loader import resolve_model_dir
    from tilt.paths import checkout_file

    monkeypatch.chdir(tmp_path)
    eval_cmd = typer.main.get_command(app).commands["eval"]
    (model,) = [p.default for p in eval_cmd.params if p.name == "model"]
    assert (resolve_model_dir(model) / "config.json").is_file()
    for default in ("docs/eval/prompts.txt", "bench/demo_train_prompts.txt"):
        assert checkout_file(default).is_file()
    assert checkout_file("no/such/file.txt") is None
