"""On-policy episodes of the guided policy, for the ``reverse_kl`` objective.

Episodes serve two objectives: ``reverse_kl`` (fresh episodes every step) and soft_q with
``rollout_policy: guided`` (``collect_guided_rollouts``: a fixed set, scored once, whose
targets are the on-policy soft returns of ``training.targets.onpolicy_q_set``).

The guided policy of a value model is

    pi_theta(a | s) = softmax(l_ref(s, .) + Q_theta(s, .) / beta)(a)

(the policy ``method: token`` serves). An *episode* is one completion y ~ pi_theta(. | x) of a
prompt x, with EOS forced after ``max_tokens`` tokens, together with log pi_ref(. | s_t) at
every state it visited (the reverse-KL loss needs the base rows; keeping them saves a second
base forward).

Both models step through a ``Stepper``: ``start(prompts)`` returns the next-token logits after
each prompt, ``step(tokens)`` appends one token to every row and returns the next logits.
``LeanStepper`` runs a Llama with a KV cache (``engines.lean_llama``); ``ProtocolStepper`` wraps
any ``decoders.protocols.LanguageModel`` (toys) by re-querying whole contexts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from decoders.blocks import sample_tokens, step_kl
from engines.lean_llama import LeanLlama, is_supported
from training.rollouts import Rollout, score_rollouts


class LeanStepper:
    """Rows 0..B-1 are KV-cache slots of a ``LeanLlama``; every row gains one token per step."""

    def __init__(self, lean: LeanLlama):
        self.lean = lean
        self.lengths: list[int] = []

    def start(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        self.lean.reserve(len(prompts))
        self.lengths = [len(p) for p in prompts]
        return self.lean.extend(list(range(len(prompts))), [0] * len(prompts), prompts)

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        starts = list(self.lengths)
        self.lengths = [n + 1 for n in self.lengths]
        return self.lean.extend(list(range(len(tokens))), starts, [[int(t)] for t in tokens])


class ProtocolStepper:
    """Any ``LanguageModel`` (log-probs of whole contexts; used for toy base models)."""

    def __init__(self, lm):
        self.lm = lm
        self.contexts: list[list[int]] = []

    async def _rows(self) -> torch.Tensor:
        return (await self.lm.logprobs(self.contexts)).float()

    async def start(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        self.contexts = [list(p) for p in prompts]
        return await self._rows()

    async def step(self, tokens: Sequence[int]) -> torch.Tensor:
        for c, t in zip(self.contexts, tokens, strict=True):
            c.append(int(t))
        return await self._rows()


async def _call(fn, arg):
    out = fn(arg)
    return await out if hasattr(out, "__await__") else out


@dataclass
class Episodes:
    """B completions of the guided policy.

    prompts[i], tokens[i] (EOS excluded), finished[i] (ended with a sampled EOS),
    kl [B, T] float32: KL(pi_theta(. | s_{i,t}) || pi_ref(. | s_{i,t})) at every visited state,
    base_logp [B, T, V] float32 (when kept): log pi_ref(. | s_{i,t}); both zero after row i's
    last decision. The number of decisions of row i is len(tokens[i]) + finished[i] (a
    completion capped at ``max_tokens`` makes no decision at the cap: EOS is forced there)."""

    prompts: list[list[int]]
    tokens: list[list[int]]
    finished: list[bool]
    kl: torch.Tensor
    base_logp: torch.Tensor | None = None

    def decisions(self) -> list[int]:
        return [len(t) + int(f) for t, f in zip(self.tokens, self.finished, strict=True)]


def sample_index(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs`` [B, V] by inverse CDF (cheaper than multinomial on CPU)."""
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=gen, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp_max(probs.shape[1] - 1)


async def sample_episodes(base, value: LeanStepper, prompts: Sequence[Sequence[int]], *,
                          beta: float, max_tokens: int, eos: int, gen: torch.Generator,
                          keep_rows: bool = True) -> Episodes:
    """Ancestral sampling from pi_theta = softmax(log pi_ref + Q_theta / beta), all rows batched
    (``keep_rows``: also return the base rows log pi_ref(. | s_t)). The token loop is the shared
    ``decoders.blocks.sample_tokens``; both steppers keep every row, so rows that ended are fed
    a dummy token (ignored) and every row draws each step."""
    b = len(prompts)
    base_l, q = await _call(base.start, prompts), value.start(prompts)
    vocab = base_l.shape[1]
    rows = torch.zeros(b, max_tokens, vocab, dtype=torch.float32) if keep_rows else None
    kl = torch.zeros(b, max_tokens, dtype=torch.float32)
    dummy = eos if eos >= 0 else 0
    t = 0

    async def step(live: list[int], tokens: list[list[int]]) -> list[int]:
        nonlocal base_l, q, t
        if t > 0:  # every row gains one token: live rows the one they drew, the others a dummy
            feed = [dummy] * b
            for i in live:
                feed[i] = tokens[i][-1]
            base_l, q = await _call(base.step, feed), value.step(feed)
        mask = torch.zeros(b, dtype=torch.bool)
        mask[live] = True
        logp = torch.log_softmax(base_l.float(), dim=-1)
        if rows is not None:
            rows[:, t] = torch.where(mask[:, None], logp, 0.0)
        guided = torch.log_softmax(logp + q[:, :vocab].float() / beta, dim=-1)
        kl[:, t] = torch.where(mask, step_kl(guided, logp), 0.0)
        t += 1
        return sample_index(guided.exp(), gen)[live].tolist()

    tokens, finished = await sample_tokens(step, [max_tokens] * b, eos)
    return Episodes([list(p) for p in prompts], tokens, finished, kl, rows)


def episode_steps(ep: Episodes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decisions of every episode as flat entries: (row i, step t, state length j, action).
    The state of step t is prompt + tokens[:t] (length j = len(prompt) + t); the action is
    tokens[t], or EOS for the last decision of a finished row."""
    rows, ts, js, acts = [], [], [], []
    for i, (p, toks, n) in enumerate(zip(ep.prompts, ep.tokens, ep.decisions(), strict=True)):
        for t in range(n):
            rows.append(i)
            ts.append(t)
            js.append(len(p) + t)
            acts.append(toks[t] if t < len(toks) else -1)
    return (torch.tensor(rows, dtype=torch.long), torch.tensor(ts, dtype=torch.long),
            torch.tensor(js, dtype=torch.long), torch.tensor(acts, dtype=torch.long))


def rewards_to_go(kl: torch.Tensor, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """G[i, t] = R_i / beta - sum_{t' > t} KL[i, t'] (nats) for padded per-step KLs ``kl`` [B, T]
    (0 after a row's end): what step t's action influences."""
    suffix = kl.flip(1).cumsum(1).flip(1) - kl          # sum over t' > t
    return rewards.to(kl.dtype)[:, None] / beta - suffix


def rloo_advantages(kl: torch.Tensor, rewards: torch.Tensor, beta: float, group: int) -> torch.Tensor:
    """A[i, t] = G[i, t] - b[i, t] with G = ``rewards_to_go`` and b[i, t] the mean of G[j, t] over
    the other rows j of i's group (rows i // group share a prompt): a leave-one-out baseline,
    independent of row i's own draws, so the gradient stays unbiased."""
    if group < 2:
        raise ValueError("the leave-one-out baseline needs at least 2 samples per prompt")
    g = rewards_to_go(kl, rewards, beta)
    gg = g.view(-1, group, g.shape[1])
    baseline = (gg.sum(1, keepdim=True) - gg) / (group - 1)
    return (gg - baseline).view_as(g)


def state_baseline(logp: torch.Tensor, q: torch.Tensor, beta: float) -> torch.Tensor:
    """b(s) = E_{a ~ pi_theta(.|s)}[Q_theta(s, a)] / beta, the value model's own estimate of
    E[G_t | s_t] (exact when Q_theta = Q*: then E[G_t | s_t, a_t] = Q*(s_t, a_t) / beta). A
    function of the state only, so subtracting it keeps the gradient unbiased; on the demo it cut
    the advantages' variance by a third against the leave-one-out baseline."""
    return (logp.exp() * q.to(logp.dtype)).sum(-1) / beta


def base_stepper(model: str, lm):
    """A KV-cached lean forward for a base directory of a supported architecture (Llama,
    Qwen2/3, Mistral), else the engine's LanguageModel."""
    if not model.startswith("toy:"):
        from engines.hf_codec import read_hf_config
        from engines.loader import resolve_model_dir

        model_dir = resolve_model_dir(model)
        if is_supported(read_hf_config(model_dir)[1]):
            return LeanStepper(LeanLlama(model_dir))
    return ProtocolStepper(lm)


def value_stepper(model: torch.nn.Module) -> LeanStepper:
    """A value model (a transformers Llama) as a lean forward over a snapshot of its weights."""
    return LeanStepper(LeanLlama.from_weights(model.config.to_dict(), model.state_dict()))


async def collect_guided_rollouts(base, model: torch.nn.Module, reward,
                                  prompt_ids: Sequence[Sequence[int]], *, rollouts: int,
                                  max_tokens: int, beta: float, eos: int, seed: int = 0,
                                  chunk: int = 256, progress: bool = False) -> list[Rollout]:
    """``rollouts`` completions per prompt of the guided policy softmax(l_ref + Q_theta/beta)
    (``model`` frozen), each with the policy's per-decision KL to pi_ref, then scored."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    owners = [p for p in range(len(prompt_ids)) for _ in range(rollouts)]
    value = value_stepper(model)
    out: list[Rollout] = []
    bar = tqdm(total=len(owners), desc="guided rollouts", disable=not progress, unit="seq")
    for c0 in range(0, len(owners), chunk):
        part = owners[c0:c0 + chunk]
        ep = await sample_episodes(base, value, [prompt_ids[p] for p in part], beta=beta,
                                   max_tokens=max_tokens, eos=eos, gen=gen, keep_rows=False)
        for i, p in enumerate(part):
            n = len(ep.tokens[i]) + int(ep.finished[i])
            out.append(Rollout(p, ep.tokens[i], ep.finished[i], group=p, start=0,
                               kl=[float(x) for x in ep.kl[i, :n]]))
        bar.update(len(part))
    bar.close()
    await score_rollouts(reward, prompt_ids, out, progress=progress)
    return out
