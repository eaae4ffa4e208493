"""The ``key=value,key=value`` options of a reward spec, shared by ``rewards.loader`` and the
adapters that parse their own spec body (``rewards.arm``). Every error is a ValueError that
quotes the spec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def parse_options(text: str, allowed: set[str] | None, spec: str) -> dict[str, str]:
    """``a=1,b=x`` -> {"a": "1", "b": "x"}; ValueError on a malformed or unknown key."""
    out: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"bad option {item!r} in reward spec {spec!r} (expected key=value)")
        if allowed is not None and key not in allowed:
            raise ValueError(f"unknown option {key!r} in reward spec {spec!r}; allowed: {', '.join(sorted(allowed))}")
        out[key] = value.strip()
    return out


def split_options(body: str, allowed: set[str] | None) -> tuple[str, dict[str, str]]:
    """``PATH:key=v,...`` -> (PATH, options). A last ``:``-part without ``=`` belongs to PATH."""
    head, sep, tail = body.rpartition(":")
    if sep and "=" in tail and head:
        return head, parse_options(tail, allowed, body)
    return body, {}


def as_int(opts: dict[str, str], key: str, spec: str) -> int | None:
    return _convert(opts, key, spec, int, "an integer")


def as_float(opts: dict[str, str], key: str, spec: str) -> float | None:
    return _convert(opts, key, spec, float, "a number")


def _convert(opts: dict[str, str], key: str, spec: str, fn: Callable[[str], Any], what: str) -> Any:
    if key not in opts:
        return None
    try:
        return fn(opts[key])
    except ValueError:
        raise ValueError(f"option {key}={opts[key]!r} in reward spec {spec!r} must be {what}") from None
