"""ARM reward: a causal LM whose log-probs become exact token rewards (the bijection).

For an autoregressive model with logits q(s, .) (docs/math.md, "The bijection"):

    r(s_t, y_t) = q(s_t, y_t) - V_q(s_{t+1}),   V_q(s) = logsumexp_a q(s, a)     (t < T)
    r(s_T, EOS) = q(s_T, EOS)

Summed over a completion the V_q terms telescope:

    sum_t r = sum_{t<=T} [q(s_t, y_t) - V_q(s_t)] + V_q(s_0) = log p_q(y, EOS | x) + V_q(x),

so the EBM exp(sum r) / Z has Z = exp V_q(x) and equals the ARM's sequence distribution. With
normalised q (log-probabilities, V_q = 0) the token rewards sum to log p_q(y | x) exactly.
With a length cap T (``max_len``), a completion of length T ends by forced termination: only
EOS is allowed at s_T, whose row is then the forced row (EOS log-prob 0, as in
``decoders.exact``), so V_q(s_T) = 0, r(s_T, EOS) = 0, and the EOS probability drops out.

``score`` returns the sequence energy R(x, y) = log p_q(y | x) = sum_t r - V_q(x) (the prompt
constant does not change the tilted target, and this keeps R comparable across prompts).
Token ids are the ARM's own: an ``arm:`` reward must share the base model's vocabulary (as
GenARM does); ``score_text`` encodes text with the ARM's tokenizer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from decoders.bijection import forced_eos_row, token_rewards_from_logprobs
from decoders.protocols import Context
from rewards.base import TextReward
from rewards.options import as_int, split_options


def arm_token_rewards(q: torch.Tensor, tokens: Sequence[int], eos_id: int,
                      forced_eos: bool = False) -> torch.Tensor:
    """Token rewards [T+1] of one completion from its ARM logits ``q`` [T+1, V].

    ``q[t]`` are the logits at state s_t = x + y_<t (t = 0..T). Returns r(s_t, y_t) for t < T
    and r(s_T, EOS) last, via ``decoders.bijection.token_rewards_from_logprobs`` (beta = 1).
    ``forced_eos``: only EOS is allowed at s_T, so its row is replaced by the forced row
    ``decoders.bijection.forced_eos_row`` (EOS log-prob 0): V_q(s_T) = 0 and r(s_T, EOS) = 0.
    """
    q = torch.as_tensor(q, dtype=torch.float64)
    if forced_eos:
        q = torch.cat([q[:-1], forced_eos_row(q.shape[1], eos_id)[None]])
    return token_rewards_from_logprobs(q, tokens, eos_id)


class LMSource:
    """ARM logits from any ``decoders.protocols.LanguageModel`` (q = its log-probs)."""

    def __init__(self, lm: Any, max_len: int | None = None):
        self.lm = lm
        self.vocab_size = lm.vocab_size
        self.eos_token_id = lm.eos_token_id
        self.max_len = max_len if max_len is not None else getattr(lm, "max_len", None)

    def encode(self, text: str) -> list[int]:
        if not hasattr(self.lm, "encode"):
            raise ValueError(f"ARM {type(self.lm).__name__} has no tokenizer: score token ids instead")
        return list(self.lm.encode(text))

    async def logits(self, prompt: Context, completions: Sequence[Context]) -> list[torch.Tensor]:
        """One batched ``logprobs`` call over every prefix of every completion."""
        contexts = [list(prompt) + list(y[:t]) for y in completions for t in range(len(y) + 1)]
        rows = await self.lm.logprobs(contexts)
        out, i = [], 0
        for y in completions:
            out.append(rows[i:i + len(y) + 1])
            i += len(y) + 1
        return out


class HFCausalLMSource:
    """ARM logits from a local Hugging Face causal LM directory (one batched forward pass)."""

    def __init__(self, path: str, max_len: int | None = None, batch_size: int = 16):
        if (max_len is not None and max_len < 1) or batch_size < 1:
            raise ValueError("ARM options need max_len >= 1 and batch_size >= 1")
        if not Path(path).expanduser().is_dir():
            raise ValueError(f"ARM model directory not found: {path!r} (arm: takes a local path)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"cannot load a causal LM from {path!r}: {e}") from None
        self.model.eval()
        self.vocab_size = self.model.config.vocab_size
        eos = self.model.config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        if isinstance(eos, list):
            eos = eos[0]
        if eos is None:
            raise ValueError(f"ARM model {path!r} has no eos_token_id")
        self.eos_token_id = int(eos)
        bos = self.model.config.bos_token_id
        self.bos_token_id = int(bos) if bos is not None else self.eos_token_id
        self.max_len = max_len
        self.batch_size = batch_size

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def _forward(self, prompt: list[int], completions: Sequence[Context]) -> list[torch.Tensor]:
        prompt = prompt or [self.bos_token_id]  # an empty prompt conditions on BOS
        seqs = [prompt + list(y) for y in completions]
        out: list[torch.Tensor] = []
        for i in range(0, len(seqs), self.batch_size):
            chunk = seqs[i:i + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            for j, s in enumerate(chunk):  # right padding: real positions are unaffected
                ids[j, :len(s)] = torch.as_tensor(s)
                mask[j, :len(s)] = 1
            logits = self.model(input_ids=ids, attention_mask=mask).logits.to(torch.float64)
            for j, s in enumerate(chunk):
                out.append(logits[j, len(prompt) - 1:len(s)])
        return out

    async def logits(self, prompt: Context, completions: Sequence[Context]) -> list[torch.Tensor]:
        return await asyncio.to_thread(self._forward, list(prompt), list(completions))


class ARMReward(TextReward):
    """R(x, y) = log p_q(y | x) of an ARM, with exact token rewards (``token_rewards``)."""

    def __init__(self, source: Any, name: str = "arm", codec: Any = None):
        super().__init__(codec)
        self.source = source
        self.name = name

    def _check(self, completions: Sequence[Context]) -> None:
        cap = self.source.max_len
        for y in completions:
            if cap is not None and len(y) > cap:
                raise ValueError(f"completion of {len(y)} tokens exceeds the ARM's max_len={cap}")
            bad = [int(a) for a in y if not 0 <= int(a) < self.source.vocab_size or int(a) == self.source.eos_token_id]
            if bad:
                raise ValueError(f"token ids {bad[:5]} are outside the ARM's vocabulary (or EOS)")

    async def token_rewards(self, prompt: Context, completions: Sequence[Context]) -> list[torch.Tensor]:
        """r(s_t, y_t) for t < T, then r(s_T, EOS), for each completion (lists of [T+1])."""
        self._check(completions)
        qs = await self.source.logits(prompt, completions)
        cap = self.source.max_len
        return [arm_token_rewards(q, y, self.source.eos_token_id, forced_eos=cap is not None and len(y) == cap)
                for q, y in zip(qs, completions, strict=True)]

    async def score(self, prompt: Context, completions: Sequence[Context]) -> torch.Tensor:
        """log p_q(y | x) = sum_t r(s_t, y_t) - V_q(x)."""
        if len(completions) == 0:
            return torch.empty(0, dtype=torch.float64)
        self._check(completions)
        qs = await self.source.logits(prompt, completions)
        cap = self.source.max_len
        out = []
        for q, y in zip(qs, completions, strict=True):
            r = arm_token_rewards(q, y, self.source.eos_token_id, forced_eos=cap is not None and len(y) == cap)
            out.append(r.sum() - torch.logsumexp(q[0].to(torch.float64), dim=-1))
        return torch.stack(out)

    async def score_text(self, prompt: str, completions: list[str]) -> list[float]:
        ids = [self.source.encode(y) for y in completions]
        return (await self.score(self.source.encode(prompt), ids)).tolist()


PROBE = "Hello world, 123. The quick brown fox!"


def check_vocabulary(source: Any, codec: Any) -> None:
    """The ARM must tokenize like the base model (same EOS, same ids for a probe text)."""
    eos = getattr(codec, "eos_token_id", None)
    if eos is not None and int(eos) != source.eos_token_id:
        raise ValueError(f"the ARM's EOS id {source.eos_token_id} differs from the base model's "
                         f"{eos}: an arm: reward must share the base model's vocabulary")
    tokenizer = getattr(source, "tokenizer", None)
    if tokenizer is None:
        return
    try:
        same = list(codec.encode(PROBE)) == list(tokenizer.encode(PROBE))
    except ValueError:
        same = False
    if not same:
        raise ValueError("the ARM's tokenizer differs from the base model's: an arm: reward "
                         "must share the base model's vocabulary")


def load_arm(body: str, codec: Any = None) -> ARMReward:
    """``toy:vocab=V,len=T,seed=S`` (a toy ARM) or ``PATH[:max_len=N]`` (a HF causal LM)."""
    if body.startswith("toy:"):
        from decoders.toy import ToyLM

        source = LMSource(ToyLM.from_spec(body))
        if codec is not None:
            check_vocabulary(source, codec)
        return ARMReward(source, name=f"arm:{body}", codec=codec)
    path, opts = split_options(body, allowed={"max_len", "batch_size"})
    max_len = as_int(opts, "max_len", body)
    source = HFCausalLMSource(path, max_len=max_len, batch_size=as_int(opts, "batch_size", body) or 16)
    if codec is not None:
        check_vocabulary(source, codec)
    return ARMReward(source, name=f"arm:{body}", codec=codec)
