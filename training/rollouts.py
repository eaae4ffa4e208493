"""Rollouts from the base model pi_ref, through the engine protocols, with batched rewards.

A rollout is one completion y of a prompt x, sampled from pi_ref(. | x + y_<start) after a
fixed prefix y_<start (``start`` = 0 for a trajectory from the prompt, > 0 for a branch).
Rollouts of one ``group`` were sampled from the same context: they share the prefix and are
the samples the log-mean-exp targets and the self-normalised weights are taken over.

Engines that implement ``BlockSampler`` (vLLM, transformers) sample whole completions natively;
otherwise the shared token loop (``decoders.blocks.sample_tokens``) samples ancestrally over
``LanguageModel.logprobs`` (toy models).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from decoders.blocks import sample_tokens
from decoders.protocols import LanguageModel, Reward, SamplingParams

CHUNK = 2048  # contexts per engine call


@dataclass
class Rollout:
    prompt: int          # index of the prompt
    tokens: list[int]    # completion ids (EOS excluded)
    finished: bool       # ended with a sampled EOS before the cap
    group: int           # rollouts of one group were sampled from the same context
    start: int           # len of the shared completion prefix the group was sampled after
    reward: float = float("nan")
    tilted: bool = False  # the prefix was chosen for its reward: only steps t >= start are pi_ref samples
    kl: list[float] | None = None  # guided rollouts: KL(pi_theta || pi_ref) at each decision


async def _ancestral(lm: LanguageModel, contexts: list[list[int]], budgets: list[int],
                     gen: torch.Generator, temperature: float) -> list[tuple[list[int], bool]]:
    """a ~ softmax(log pi_ref(.|s) / temperature) token by token (``decoders.blocks.sample_tokens``),
    at most CHUNK contexts per engine call."""
    async def step(live: list[int], tokens: list[list[int]]) -> list[int]:
        draws: list[int] = []
        for c0 in range(0, len(live), CHUNK):
            idx = live[c0:c0 + CHUNK]
            logp = await lm.logprobs([list(contexts[i]) + tokens[i] for i in idx])
            probs = torch.softmax(logp.double() / temperature, dim=-1)
            draws += torch.multinomial(probs, 1, generator=gen).squeeze(1).tolist()
        return draws

    tokens, finished = await sample_tokens(step, budgets, lm.eos_token_id)
    return list(zip(tokens, finished, strict=True))


async def sample_completions(lm: LanguageModel, contexts: list[list[int]], budgets: list[int],
                             gen: torch.Generator, temperature: float = 1.0,
                             bar=None) -> list[tuple[list[int], bool]]:
    """Sample one completion per context from pi_ref with at most ``budgets[i]`` tokens."""
    if hasattr(lm, "sample_blocks"):
        out: list[tuple[list[int], bool]] = [([], False)] * len(contexts)
        params = SamplingParams(temperature=temperature)
        for budget in sorted(set(budgets)):
            idx = [i for i, b in enumerate(budgets) if b == budget]
            if budget == 0:
                for i in idx:
                    out[i] = ([], False)
                if bar is not None:
                    bar.update(len(idx))
                continue
            for c0 in range(0, len(idx), CHUNK):
                part = idx[c0:c0 + CHUNK]
                seeds = torch.randint(0, 2**31 - 1, (len(part),), generator=gen).tolist()
                blocks = await lm.sample_blocks([contexts[i] for i in part], budget, params, seeds)
                for i, b in zip(part, blocks, strict=True):
                    out[i] = (list(b.tokens), bool(b.finished))
                if bar is not None:
                    bar.update(len(part))
        return out
    out = await _ancestral(lm, contexts, budgets, gen, temperature)
    if bar is not None:
        bar.update(len(contexts))
    return out


async def score_rollouts(reward: Reward, prompt_ids: Sequence[Sequence[int]], rollouts: list[Rollout],
                         batch: int = 256, progress: bool = False) -> None:
    """Fill ``rollout.reward`` with R(x, y), one batched ``Reward.score`` call per prompt chunk."""
    by_prompt: dict[int, list[Rollout]] = {}
    for r in rollouts:
        by_prompt.setdefault(r.prompt, []).append(r)
    bar = tqdm(total=len(rollouts), desc="rewards", disable=not progress, unit="seq")
    for p, rs in by_prompt.items():
        for c0 in range(0, len(rs), batch):
            part = rs[c0:c0 + batch]
            scores = await reward.score(list(prompt_ids[p]), [r.tokens for r in part])
            for r, s in zip(part, scores.tolist(), strict=True):
                r.reward = float(s)
            bar.update(len(part))
    bar.close()


async def collect_rollouts(lm: LanguageModel, reward: Reward, prompt_ids: Sequence[Sequence[int]],
                           *, rollouts: int, max_tokens: int, branch_points: int = 0,
                           branches: int = 4, seed: int = 0, temperature: float = 1.0,
                           branch_from: str = "uniform", beta: float = 1.0,
                           progress: bool = False) -> list[Rollout]:
    """``rollouts`` trajectories per prompt, then ``branches`` continuations after each of
    ``branch_points`` random prefixes y_<=t (1 <= t < len y) of a parent trajectory; all scored.

    branch_from = "uniform": every trajectory is the parent of its own branches.
    branch_from = "tilted": for each trajectory slot of a prompt a parent is drawn from that
    prompt's trajectories with probability softmax(R / beta), so branch prefixes are spread like
    the states of pi* ∝ pi_ref·exp(R/beta) (self-normalised resampling), where guidance needs an
    accurate Q. Continuations are still pi_ref samples, so Q(s, a) targets from the branch point
    on stay unbiased; the (reward-selected) prefix steps are marked ``tilted`` and not trained on."""
    gen = torch.Generator().manual_seed(seed)
    ctx = [list(prompt_ids[p]) for p in range(len(prompt_ids)) for _ in range(rollouts)]
    owner = [p for p in range(len(prompt_ids)) for _ in range(rollouts)]
    bar = tqdm(total=len(ctx), desc="rollouts", disable=not progress, unit="seq")
    base = await sample_completions(lm, ctx, [max_tokens] * len(ctx), gen, temperature, bar)
    out = [Rollout(p, toks, fin, group=p, start=0) for p, (toks, fin) in zip(owner, base, strict=True)]
    if branch_points:
        parents = list(out)
        if branch_from == "tilted":
            await score_rollouts(reward, prompt_ids, out)
            parents = _tilted_parents(out, rollouts, beta, gen)
        b_ctx, b_meta, budgets = [], [], []
        group = len(prompt_ids)
        for r in parents:
            if len(r.tokens) < 2:
                continue
            k = min(branch_points, len(r.tokens) - 1)
            cuts = (torch.randperm(len(r.tokens) - 1, generator=gen)[:k] + 1).tolist()
            for t in cuts:
                for _ in range(branches):
                    b_ctx.append(list(prompt_ids[r.prompt]) + r.tokens[:t])
                    b_meta.append((r.prompt, r.tokens[:t], group, t))
                    budgets.append(max_tokens - t)
                group += 1
        bar.total += len(b_ctx)
        bar.refresh()
        cont = await sample_completions(lm, b_ctx, budgets, gen, temperature, bar)
        for (p, prefix, g, t), (toks, fin) in zip(b_meta, cont, strict=True):
            out.append(Rollout(p, prefix + toks, fin, group=g, start=t, tilted=branch_from == "tilted"))
    bar.close()
    await score_rollouts(reward, prompt_ids, [r for r in out if math.isnan(r.reward)], progress=progress)
    return out


def _tilted_parents(trajectories: list[Rollout], per_prompt: int, beta: float,
                    gen: torch.Generator) -> list[Rollout]:
    """``per_prompt`` draws (with replacement) per prompt, P(parent i) = softmax(R_i / beta)."""
    by_prompt: dict[int, list[Rollout]] = {}
    for r in trajectories:
        by_prompt.setdefault(r.prompt, []).append(r)
    parents = []
    for rs in by_prompt.values():
        logits = torch.tensor([r.reward / beta for r in rs], dtype=torch.float64)
        if not torch.isfinite(logits).any():   # every trajectory violates a hard constraint
            logits = torch.zeros_like(logits)
        picks = torch.multinomial(torch.softmax(logits, 0), per_prompt, replacement=True, generator=gen)
        parents.extend(rs[i] for i in picks.tolist())
    return parents
