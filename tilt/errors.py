"""How a command rejects bad input: one line ``error: <message>`` on stderr, exit code 2."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(msg: str) -> NoReturn:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code=2)
