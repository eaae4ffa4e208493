"""decoders.methods is the one list of guidance methods: the spec's type, the server's schema
enum and config check, and tilt eval all read it."""

from __future__ import annotations

import typing

import pytest

from decoders.methods import METHODS, METHODS_INFO, Method, method_info
from decoders.spec import GuidanceSpec


def test_literal_type_matches_registry():
    assert typing.get_args(Method) == METHODS == tuple(METHODS_INFO)


def test_needs_imply_uses():
    for info in METHODS_INFO.values():
        assert info.uses_value or not info.needs_value, info.name
        assert info.name == info.sample.__module__.rsplit(".", 1)[-1] or info.name == "none"


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="one of none, token"):
        method_info("base")
    with pytest.raises(ValueError, match="method must be one of"):
        GuidanceSpec(method="beam")  # type: ignore[arg-type]


def test_server_schema_and_eval_read_the_registry():
    from server.schemas import GuidanceRequest
    from training.evaluate import EvalConfig, method_grid

    schema = GuidanceRequest.model_json_schema()["properties"]["method"]
    names = [o.get("enum") for o in schema.get("anyOf", []) if "enum" in o]
    assert names and tuple(names[0]) == METHODS, schema
    grid = method_grid(EvalConfig(model="m", reward="r", prompts=["x"], betas=[1.0],
                                  best_of=[2]), has_value=True)
    assert {spec.method for _, spec in grid} == set(METHODS)
