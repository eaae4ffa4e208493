"""Helpers for the reward tests (imported as ``tests.rewards.helpers``)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import torch
from fastapi import FastAPI, Request, Response

POSITIVE = ["I love this, it is wonderful", "what a great and happy day", "good fun, lovely people",
            "this is excellent and nice", "happy happy joy", "a wonderful great film"]
NEGATIVE = ["I hate this, it is awful", "what a terrible and sad day", "bad food, horrible people",
            "this is awful and ugly", "sad sad misery", "a horrible boring film"]


def fit_tiny_classifier(out_dir: Path) -> Path:
    """A 1-layer BERT sentiment classifier (labels NEGATIVE/POSITIVE), fitted for 60 Adam steps
    on 12 sentences, saved with a tiny byte-level BPE tokenizer. About 1-2 s on one CPU core."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from engines.testing import build_tiny_tokenizer

    build_tiny_tokenizer(out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    tok.pad_token = tok.eos_token
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2,
                     id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
                     pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    batch = tok(POSITIVE + NEGATIVE, padding=True, return_tensors="pt")
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_test_app():
    """The reference reward app (VADER at /score) plus misbehaving routes for failure tests."""
    from rewards.http_server import create_app
    from rewards.vader import VaderReward

    app: FastAPI = create_app(VaderReward())
    state = {"flaky": 0}

    @app.post("/slow")
    async def slow() -> dict:
        await asyncio.sleep(1.5)
        return {"scores": []}

    @app.post("/garbage")
    async def garbage() -> Response:
        return Response("<html>not json</html>", media_type="text/html")

    @app.post("/short")
    async def short() -> dict:
        return {"scores": [1.0]}

    @app.post("/nan")
    async def nan() -> dict:
        return {"scores": [1.0, "high"]}

    @app.post("/error500")
    async def error500() -> Response:
        return Response("boom", status_code=500)

    @app.post("/bad_request")
    async def bad_request() -> Response:
        return Response('{"detail":"nope"}', status_code=400, media_type="application/json")

    @app.post("/flaky")
    async def flaky(request: Request) -> Response:
        """503 on the first two calls, then the constant scores 0.5 (and null for 'bad')."""
        state["flaky"] += 1
        if state["flaky"] <= 2:
            return Response("try later", status_code=503)
        body = await request.json()
        return {"scores": [None if c == "bad" else 0.5 for c in body["completions"]]}

    @app.post("/count")
    async def count(request: Request) -> dict:
        body = await request.json()
        state.setdefault("batches", []).append(len(body["completions"]))
        return {"scores": [float(len(c)) for c in body["completions"]]}

    app.state.test_state = state
    return app
