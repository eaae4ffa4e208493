"""A Hugging Face sequence-classification model from a local directory, as a reward.

    R(x, y) = logit_k(y)             (score="logit", the default)
            = log softmax(logits)_k  (score="logprob")
            = softmax(logits)_k      (score="prob")

for the class k chosen by ``label=NAME`` (matched against ``config.id2label``, case-insensitive)
or ``index=K``. A one-output model (a typical reward model) needs no choice (k = 0; prob and
logprob use the sigmoid). ``input="pair"`` feeds (prompt, completion) as a sentence pair, as
reward models trained on (question, answer) expect; the default scores the completion alone.
Loading is offline (``local_files_only``); inference is batched and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import torch

from rewards.base import TextReward

SCORES = ("logit", "logprob", "prob")
INPUTS = ("completion", "pair")


def resolve_class(id2label: dict[int, str], num_labels: int, label: str | None,
                  index: int | None) -> int:
    """The output index to score, with a clear error when the choice is missing or wrong."""
    names = {int(i): str(n) for i, n in (id2label or {}).items()}
    if label is not None and index is not None:
        raise ValueError("give label=NAME or index=K, not both")
    if label is not None:
        hits = [i for i, n in names.items() if n.lower() == label.lower()]
        if not hits:
            raise ValueError(f"label {label!r} not in the model's labels {sorted(names.values())}")
        return hits[0]
    if index is not None:
        if not 0 <= index < num_labels:
            raise ValueError(f"index={index} out of range: the model has {num_labels} outputs")
        return index
    if num_labels == 1:
        return 0
    raise ValueError(f"the model has {num_labels} outputs {[names.get(i) for i in range(num_labels)]}; "
                     "choose one with label=NAME or index=K")


class HFClassifierReward(TextReward):
    def __init__(self, path: str, label: str | None = None, index: int | None = None,
                 score: str = "logit", input: str = "completion", batch_size: int = 32,
                 max_length: int = 512, codec: Any = None):
        super().__init__(codec)
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of {', '.join(SCORES)}")
        if input not in INPUTS:
            raise ValueError(f"unknown input {input!r}; choose one of {', '.join(INPUTS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model, self.tokenizer = load_classifier(path)
        config = self.model.config
        self.k = resolve_class(config.id2label, config.num_labels, label, index)
        self.score_kind, self.input, self.batch_size, self.max_length = score, input, batch_size, max_length
        self.name = f"hf:{path}"

    def _encode(self, prompt: str, texts: list[str]) -> dict[str, torch.Tensor]:
        kw = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        if self.input == "pair":
            return self.tokenizer([prompt] * len(texts), texts, **kw)
        return self.tokenizer(texts, **kw)

    def _transform(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.to(torch.float64)
        if self.score_kind == "logit":
            return logits[:, self.k]
        if logits.shape[1] == 1:
            lp = torch.nn.functional.logsigmoid(logits[:, 0])
        else:
            lp = torch.log_softmax(logits, dim=-1)[:, self.k]
        return lp if self.score_kind == "logprob" else lp.exp()

    @torch.inference_mode()
    def score_sync(self, prompt: str, completions: list[str]) -> list[float]:
        out: list[float] = []
        for i in range(0, len(completions), self.batch_size):
            batch = self._encode(prompt, completions[i:i + self.batch_size])
            out += self._transform(self.model(**batch).logits).tolist()
        return out

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        if not completions:
            return []
        return await asyncio.to_thread(self.score_sync, prompt, list(completions))


def load_classifier(path: str) -> tuple[Any, Any]:
    """(model, tokenizer) from a local directory, offline; ValueError if it cannot be loaded."""
    if not Path(path).expanduser().is_dir():
        raise ValueError(f"classifier directory not found: {path!r} (hf: takes a local path)")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load a sequence classifier from {path!r}: {e}") from None
    model.eval()
    if tokenizer.pad_token is None:  # GPT-style models: pad with EOS so batches work
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer in {path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
