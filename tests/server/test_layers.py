"""The server's layering, checked on its source and its models (no server started):
domain errors know no HTTP and each maps to one status, only ``server.metrics`` touches a
metric family, and stream chunks carry exactly the fields OpenAI clients expect."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import server.errors as errors
from server.http_errors import STATUS, status_of, tilt_error_body
from server.schemas import (
    ChatCompletionChunk,
    ChatDelta,
    ChatStreamChoice,
    CompletionChunk,
    CompletionStreamChoice,
    TiltDiagnostics,
    Usage,
)

SERVER = Path(__file__).resolve().parents[2] / "server"
# Modules below the HTTP layer: they raise domain errors and never import the web stack.
HTTP_FREE = ["errors", "plan", "engine_state", "generation", "timing", "postprocess",
             "streaming", "responses", "metrics", "config", "schemas"]
WEB = ("fastapi", "starlette", "sse_starlette", "uvicorn")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", HTTP_FREE)
def test_lower_layers_import_no_web_stack(module):
    web = {n for n in _imports(SERVER / f"{module}.py") if n.split(".")[0] in WEB}
    assert not web, web


def test_every_domain_error_has_one_status():
    kinds = [v for v in vars(errors).values()
             if isinstance(v, type) and issubclass(v, errors.TiltError) and v is not errors.TiltError]
    assert set(kinds) == set(STATUS)
    assert status_of(errors.BadRequest("x")) == 400
    assert tilt_error_body(errors.TimedOut(2.0)) == {"error": {
        "message": "request ran past the server's limit of 2.0 s", "type": "timeout_error",
        "param": None, "code": "timeout"}}
    assert errors.BadRequest("x", "p").code == "invalid_value"
    assert errors.BadRequest("x", "p", code=None).code is None


def test_only_the_metrics_module_touches_metric_families():
    touching = [p.name for p in SERVER.rglob("*.py")
                if ".labels(" in p.read_text() and p.name != "metrics.py"]
    assert touching == []


def _dump(model) -> dict:
    return json.loads(json.dumps(model.model_dump()))


def test_stream_chunks_leave_out_what_they_do_not_have():
    head = {"id": "cmpl-1", "created": 0, "model": "m"}
    plain = _dump(CompletionChunk(**head, choices=[CompletionStreamChoice(index=0, text="a")]))
    assert plain == {**head, "object": "text_completion", "choices": [
        {"index": 0, "text": "a", "logprobs": None, "finish_reason": None}]}
    tilt = TiltDiagnostics(method="none")
    last = _dump(CompletionChunk(**head, choices=[CompletionStreamChoice(
        index=1, text="", token_ids=[], finish_reason="stop", tilt=tilt)]))
    choice = last["choices"][0]
    assert choice["token_ids"] == [] and choice["tilt"] == tilt.model_dump()
    assert "prompt_token_ids" not in choice and "usage" not in last
    usage = _dump(ChatCompletionChunk(**head, choices=[], usage=Usage(
        prompt_tokens=1, completion_tokens=2, total_tokens=3)))
    assert usage["object"] == "chat.completion.chunk" and usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    first = _dump(ChatStreamChoice(index=0, delta=ChatDelta(content="x", role="assistant")))
    later = _dump(ChatStreamChoice(index=0, delta=ChatDelta(content="y")))
    assert first["delta"] == {"role": "assistant", "content": "x"}
    assert later == {"index": 0, "delta": {"content": "y"}, "logprobs": None,
                     "finish_reason": None}
