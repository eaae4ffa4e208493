"""Reward plugins through the entry-point group ``tilt.rewards``.

A plugin package declares, in its ``pyproject.toml``:

    [project.entry-points."tilt.rewards"]
    brevity = "my_pkg.rewards:Brevity"

The object an entry point names is either a reward instance, or a callable (class or
factory) that ``load_plugin`` calls with the spec's options as string keyword arguments
(``plugin:brevity:max_words=20`` -> ``Brevity(max_words="20")``). What it returns must have
``score_text(prompt, completions)`` (sync or async; text rewards, wrapped to get ``score``
through the codec) or ``score(prompt_ids, completions_ids)`` (token-level ``Reward``).
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any

from rewards.base import TextReward, WrappedTextReward

GROUP = "tilt.rewards"


def available_plugins() -> dict[str, str]:
    """Installed plugin names -> their ``module:object`` targets."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load_plugin(name: str, options: dict[str, str] | None = None, codec: Any = None) -> Any:
    """Instantiate plugin ``name``; ValueError if it is missing, fails to load, or is no reward."""
    options = dict(options or {})
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not eps:
        names = ", ".join(sorted(available_plugins())) or "none installed"
        raise ValueError(f"no reward plugin {name!r} in entry-point group {GROUP!r} ({names})")
    try:
        target = eps[0].load()
    except Exception as e:  # an import error inside the plugin
        raise ValueError(f"reward plugin {name!r} ({eps[0].value}) failed to import: {e!r}") from e
    obj = target
    if callable(target) and not _is_reward(target):
        try:
            obj = target(**options)
        except TypeError as e:
            raise ValueError(f"reward plugin {name!r} rejected options {options}: {e}") from e
    elif options:
        raise ValueError(f"reward plugin {name!r} is an instance and takes no options")
    return _adapt(obj, f"plugin:{name}", codec)


def _is_reward(obj: Any) -> bool:
    """An instance (not a class) with a scoring method."""
    return not inspect.isclass(obj) and (hasattr(obj, "score_text") or hasattr(obj, "score"))


def _adapt(obj: Any, name: str, codec: Any) -> Any:
    if isinstance(obj, TextReward):
        if codec is not None:
            obj.codec = codec
        return obj
    if hasattr(obj, "score_text"):
        return WrappedTextReward(obj, name, codec)
    if hasattr(obj, "score"):
        return obj
    raise ValueError(f"reward plugin {name!r} returned {obj!r}, which has neither score_text nor score")
