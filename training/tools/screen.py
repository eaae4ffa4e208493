"""Screen value models without vLLM: token guidance sampled by the lean forward of
``training.onpolicy`` (base and value model, KV-cached), scored by VADER.

For every model and serve beta, one row per prompt set: mean reward R, mean exact
KL(pi_theta || pi_ref) along the sampled paths, their standard errors, and J_c = R - c·KL for
c = 0.16 and 0.19 (the frontier's slope near best-of-8's KL bound is about 0.16, so J16 ranks
models at matched KL). Prompt sets: ``eval`` (every prompt of a file, e.g. the 16 of
docs/eval/prompts.txt, x 128 completions) and ``train`` (the last 256 lines of a file, e.g.
bench/demo_train_prompts.txt, x 8). Every model sees the same random numbers (seed), so
differences between models are measured more precisely than the standard errors suggest.

    tilt value-model screen --betas 0.16,0.17 runs/demo-value-spi1 runs/demo-value-spi2
    (about 20 s per model and beta on 2 cores)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import torch

SETS = ("eval", "train")
COMPLETIONS = {"eval": 128, "train": 8}   # completions per prompt
TRAIN_LAST = 256                          # the train set: the last lines of its file
CHUNK = 32                                # prompts per sampling batch


@dataclass
class PromptSet:
    name: str
    prompts: list[str]
    k: int  # completions per prompt


def read_prompt_set(name: str, path: str | Path) -> PromptSet:
    """The ``eval`` (all non-empty lines) or ``train`` (the last 256) prompt set of a file."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    return PromptSet(name, lines[-TRAIN_LAST:] if name == "train" else lines, COMPLETIONS[name])


async def guided_stats(base, model, reward, prompts, *, beta, k, seed, max_tokens, eos):
    """R, KL, their standard errors and J16 / J19 of ``k`` guided completions per prompt."""
    from training import onpolicy
    from training.reverse_kl import score_episodes

    gen = torch.Generator().manual_seed(seed)
    value = onpolicy.value_stepper(model)
    rs, kls = [], []
    for c0 in range(0, len(prompts), CHUNK):
        batch = [p for p in prompts[c0:c0 + CHUNK] for _ in range(k)]
        ep = await onpolicy.sample_episodes(base, value, batch, beta=beta, max_tokens=max_tokens,
                                            eos=eos, gen=gen, keep_rows=False)
        rs.append(await score_episodes(reward, ep, k))
        kls.append(ep.kl.sum(1).double())
    r, kl = torch.cat(rs), torch.cat(kls)
    n = len(r) ** 0.5
    return {"R": float(r.mean()), "KL": float(kl.mean()), "se_R": float(r.std() / n),
            "se_KL": float(kl.std() / n), "J16": float(r.mean() - 0.16 * kl.mean()),
            "J19": float(r.mean() - 0.19 * kl.mean()), "samples": len(r)}


async def screen(models: list[str], betas: list[float], sets: list[PromptSet], *,
                 base_model: str | Path, seed: int = 5, max_tokens: int = 20) -> AsyncIterator[dict]:
    """One row per model, beta and prompt set, in that order (rows of earlier models come
    before a later model fails to load). Raises ValueError for a model that is not a scalar
    Llama value model of ``base_model``."""
    from engines.hf_codec import HFCodec
    from engines.loader import resolve_model_dir
    from rewards.vader import VaderReward
    from training import onpolicy, value_net

    base_dir = resolve_model_dir(str(base_model))
    codec = HFCodec(base_dir)
    reward, eos = VaderReward(codec=codec), codec.eos_token_id
    encoded = [(s, [codec.encode(p) for p in s.prompts]) for s in sets]
    base = onpolicy.base_stepper(str(base_dir), None)
    for path in models:
        model = value_net.load_value_model(path, str(base_dir), codec.vocab_size)
        for beta in betas:
            for s, prompts in encoded:
                st = await guided_stats(base, model, reward, prompts, beta=beta, k=s.k, seed=seed,
                                        max_tokens=max_tokens, eos=eos)
                yield {"model": path, "beta": beta, "set": s.name,
                       **{k: round(v, 4) if isinstance(v, float) else v for k, v in st.items()}}
