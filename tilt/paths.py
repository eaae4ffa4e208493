"""Default files of the commands, found wherever the package is installed (not from the cwd).

    CHECKOUT                    the directory that holds the packages: the source checkout for
                                an editable install (docs/, bench/ beside tilt/), else site-packages
    checkout_file("docs/eval/prompts.txt")
                                that path as given if it exists (relative to the working
                                directory), else under CHECKOUT; None when neither has it

Bundled models (``tilt/assets``) are package data and always installed; ``engines.loader``
resolves them (``DEMO_BASE``). Prompt files under docs/ and bench/ exist only in a checkout, so
a command that defaults to one says so when it is missing.
"""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def checkout_file(path: str | Path) -> Path | None:
    """``path`` if it is a file, else the checkout's file of that relative path, else None."""
    for cand in (Path(path), CHECKOUT / path):
        if cand.is_file():
            return cand
    return None
