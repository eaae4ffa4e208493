"""Build a reward from a spec string: the one entry point the server and CLI use.

    load_reward("vader", codec=handle.codec)   # text rewards need the model's codec for ``score``
    load_reward("toy:seed=0")                  # toy reward (token ids)

Specs (``OPTS`` is ``key=value,key=value``):

    vader | vader:pos|neg|neu           VADER compound (default) or another VADER score
    regex:PATTERN                       0 if the completion fully matches, else -inf
    regex_search:PATTERN                0 if PATTERN occurs in the completion, else -inf
    json_schema:PATH_OR_INLINE_JSON     0 if the completion is JSON valid under the schema
    hf:PATH[:OPTS]                      local sequence classifier; OPTS: label=NAME | index=K,
                                        score=logit|logprob|prob, input=completion|pair,
                                        batch_size=N, max_length=N
    http:URL[#OPTS]  (or a bare URL)    remote reward service; OPTS: timeout=S, retries=N,
                                        backoff=S, batch_size=N
    plugin:NAME[:OPTS]                  entry point NAME of group ``tilt.rewards``; OPTS are
                                        passed to it as string keyword arguments
    arm:PATH[:OPTS]                     causal-LM (ARM) reward log p(y|x); OPTS: max_len=N,
                                        batch_size=N
    arm:toy:vocab=V,len=T,seed=S        a toy ARM (for tests)
    toy:seed=S                          toy reward (token ids)

Text rewards also expose ``score_text(prompt: str, completions: list[str]) -> list[float]``
(async; used by POST /v1/rewards/score). Weighted sums: ``load_weighted([(spec, w), ...])`` or
``rewards.combine.combine([(reward, w), ...])``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from decoders.protocols import Reward
from rewards.options import as_float, as_int, parse_options, split_options

KINDS = ("vader", "regex", "regex_search", "json_schema", "hf", "http", "plugin", "arm", "toy")


def _kw(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _vader(body: str, spec: str, codec: Any) -> Reward:
    from rewards.vader import VaderReward

    return VaderReward(field=body or "compound", codec=codec)


def _regex(body: str, spec: str, codec: Any, mode: str = "fullmatch") -> Reward:
    from rewards.regex import RegexConstraint

    if not body:
        raise ValueError(f"reward spec {spec!r} needs a pattern after the colon")
    return RegexConstraint(body, mode=mode, codec=codec)


def _json_schema(body: str, spec: str, codec: Any) -> Reward:
    from rewards.json_schema import JsonSchemaConstraint

    if not body:
        raise ValueError(f"reward spec {spec!r} needs a schema path or inline JSON")
    return JsonSchemaConstraint(body, codec=codec)


def _hf(body: str, spec: str, codec: Any) -> Reward:
    from rewards.hf_classifier import HFClassifierReward

    path, o = split_options(body, {"label", "index", "score", "input", "batch_size", "max_length"})
    if not path:
        raise ValueError(f"reward spec {spec!r} needs a model directory")
    return HFClassifierReward(path, codec=codec, **_kw(
        label=o.get("label"), index=as_int(o, "index", spec), score=o.get("score"),
        input=o.get("input"), batch_size=as_int(o, "batch_size", spec),
        max_length=as_int(o, "max_length", spec)))


def _http(body: str, spec: str, codec: Any) -> Reward:
    from rewards.http_client import HTTPReward

    url, _, frag = body.partition("#")
    o = parse_options(frag, {"timeout", "retries", "backoff", "batch_size"}, spec)
    return HTTPReward(url, codec=codec, **_kw(
        timeout=as_float(o, "timeout", spec), retries=as_int(o, "retries", spec),
        backoff=as_float(o, "backoff", spec), batch_size=as_int(o, "batch_size", spec)))


def _plugin(body: str, spec: str, codec: Any) -> Reward:
    from rewards.plugins import load_plugin

    name, _, opts = body.partition(":")
    if not name:
        raise ValueError(f"reward spec {spec!r} needs a plugin name")
    return load_plugin(name, parse_options(opts, None, spec), codec=codec)


def _arm(body: str, spec: str, codec: Any) -> Reward:
    from rewards.arm import load_arm

    if not body:
        raise ValueError(f"reward spec {spec!r} needs a model directory (or toy:...)")
    return load_arm(body, codec=codec)


def _toy(body: str, spec: str, codec: Any) -> Reward:
    from decoders.toy import ToyReward

    return ToyReward.from_spec(spec)


BUILDERS: dict[str, Callable[[str, str, Any], Reward]] = {
    "vader": _vader, "regex": _regex,
    "regex_search": lambda b, s, c: _regex(b, s, c, mode="search"),
    "json_schema": _json_schema, "hf": _hf, "http": _http, "plugin": _plugin, "arm": _arm,
    "toy": _toy,
}


def load_reward(spec: str, codec: Any = None) -> Reward:
    """Raise ValueError with a clear message for an unknown or unloadable reward."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty reward spec")
    spec = spec.strip()
    if spec.startswith(("http://", "https://")):
        return _http(spec, spec, codec)
    kind, _, body = spec.partition(":")
    builder = BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"unknown reward spec {spec!r}; kinds: {', '.join(KINDS)} "
                         "(see rewards/loader.py)")
    return builder(body, spec, codec)


def load_weighted(items: Iterable[tuple[str, float]], codec: Any = None) -> Reward:
    """``[(spec, weight), ...]`` -> one weighted-sum reward (see ``rewards.combine``)."""
    from rewards.combine import combine

    return combine([(load_reward(spec, codec), weight) for spec, weight in items])
