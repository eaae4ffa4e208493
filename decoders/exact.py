"""Exact enumeration of small sequence spaces: the ground truth for every sampler.

For a prompt x and length cap T over any ``LanguageModel`` and ``Reward``:

    pi_ref(y), R(y), pi*(y) = pi_ref(y) exp(R / beta) / Z,  log Z = V*(x) / beta,
    V*(s), Q*(s, .) for every prefix (soft Bellman, decoders.bijection, all of R on EOS),
    KL and TV between sequence distributions, and the exact sequence distribution of any
    step policy (e.g. a guided ARM l_ref + Q / beta) for exactness checks.

The tree uses decoders.bijection's dense layout: column order = the ordinary token ids in
increasing order, then EOS. ``ExactValue`` serves Q* through the ``ValueModel`` protocol.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import torch

from decoders import bijection
from decoders.protocols import Context, LanguageModel, Reward

NEG_INF = float("-inf")
MAX_NODES = 2_000_000


@dataclass
class PrefixTree:
    """All completions of ``prompt`` with at most ``max_tokens`` tokens, with log pi_ref rows.

    ``ref[t]`` [m**t, K] dense log pi_ref rows (level T: EOS forced). ``tokens`` maps a dense
    column < m to its vocabulary id; column m is EOS. Sequences are flattened by level.
    """

    prompt: list[int]
    max_tokens: int
    vocab_size: int
    eos: int
    tokens: list[int]
    ref: list[torch.Tensor]
    _col: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._col = {tok: c for c, tok in enumerate(self.tokens)}

    @property
    def m(self) -> int:
        return len(self.tokens)

    @property
    def num_sequences(self) -> int:
        return sum(self.m ** t for t in range(self.max_tokens + 1))

    def node(self, prefix: Sequence[int]) -> tuple[int, int]:
        """(level, node index) of a generated prefix (ids, no EOS)."""
        idx = 0
        for tok in prefix:
            col = self._col.get(int(tok))
            if col is None:
                raise ValueError(f"token {tok} is not an ordinary token of this tree")
            idx = idx * self.m + col
        return len(prefix), idx

    def index(self, completion: Sequence[int]) -> int:
        """Flat sequence index of a complete completion (EOS excluded)."""
        level, idx = self.node(completion)
        if level > self.max_tokens:
            raise ValueError(f"completion longer than max_tokens={self.max_tokens}")
        return sum(self.m ** t for t in range(level)) + idx

    def sequences(self) -> list[tuple[int, ...]]:
        """Every completion, in flat order."""
        out: list[tuple[int, ...]] = [()]
        level: list[tuple[int, ...]] = [()]
        for _ in range(self.max_tokens):
            level = [p + (tok,) for p in level for tok in self.tokens]
            out.extend(level)
        return out

    def lengths(self) -> torch.Tensor:
        return torch.cat([torch.full((self.m ** t,), t) for t in range(self.max_tokens + 1)])

    def first_tokens(self) -> torch.Tensor:
        """First token id of each sequence (EOS for the empty completion)."""
        parts = [torch.tensor([self.eos])]
        for t in range(1, self.max_tokens + 1):
            cols = torch.arange(self.m ** t) // (self.m ** (t - 1))
            parts.append(torch.tensor(self.tokens)[cols])
        return torch.cat(parts)

    def to_vocab(self, dense: torch.Tensor) -> torch.Tensor:
        """Dense rows [B, K] -> vocabulary order [B, vocab_size] (unused ids: -inf)."""
        out = torch.full((dense.shape[0], self.vocab_size), NEG_INF, dtype=dense.dtype)
        out[:, self.tokens + [self.eos]] = dense
        return out

    def to_dense(self, rows: torch.Tensor) -> torch.Tensor:
        """Vocabulary-order rows [B, vocab_size] -> dense [B, K]."""
        return rows[:, self.tokens + [self.eos]]

    def contexts(self, level: int) -> list[list[int]]:
        """The full contexts (prompt + prefix) of every node at ``level``, in node order."""
        prefixes: list[tuple[int, ...]] = [()]
        for _ in range(level):
            prefixes = [p + (tok,) for p in prefixes for tok in self.tokens]
        return [self.prompt + list(p) for p in prefixes]


async def enumerate_tree(lm: LanguageModel, prompt: Sequence[int], max_tokens: int,
                         max_nodes: int = MAX_NODES, batch: int = 4096) -> PrefixTree:
    """Query lm.logprobs on every prefix shorter than max_tokens, level by level (batched)."""
    V, eos = int(lm.vocab_size), int(lm.eos_token_id)
    tokens = [i for i in range(V) if i != eos]
    m = len(tokens)
    nodes = sum(m ** t for t in range(max_tokens + 1))
    if nodes > max_nodes:
        raise ValueError(f"exact enumeration needs {nodes} prefixes (vocab {V}, max_tokens "
                         f"{max_tokens}); the limit is {max_nodes}: use a smaller space")
    tree = PrefixTree(list(map(int, prompt)), max_tokens, V, eos, tokens, [])
    for t in range(max_tokens):
        ctxs = tree.contexts(t)
        rows = torch.cat([await lm.logprobs(ctxs[i:i + batch]) for i in range(0, len(ctxs), batch)])
        tree.ref.append(tree.to_dense(rows.to(torch.float64)))
    last = torch.full((m ** max_tokens, m + 1), NEG_INF, dtype=torch.float64)
    last[:, m] = 0.0
    tree.ref.append(last)
    return tree


def eos_rewards(tree: PrefixTree, rewards: torch.Tensor) -> list[torch.Tensor]:
    """Token rewards with all of R on the EOS step: r(s, a) = 0 (a != EOS), r(s, EOS) = R."""
    out, start, m = [], 0, tree.m
    for t in range(tree.max_tokens + 1):
        n = m ** t
        rt = torch.zeros(n, m + 1, dtype=torch.float64)
        if t == tree.max_tokens:
            rt[:, :m] = NEG_INF
        rt[:, m] = rewards[start:start + n]
        out.append(rt)
        start += n
    return out


@dataclass
class ExactSolution:
    """Everything exact about pi* for one (tree, reward, beta)."""

    tree: PrefixTree
    beta: float
    rewards: torch.Tensor  # R(y), flat
    log_p_ref: torch.Tensor  # log pi_ref(y), flat
    log_p_star: torch.Tensor  # log pi*(y), flat
    log_z: float  # log Z = log E_{pi_ref} exp(R / beta)
    q: list[torch.Tensor]  # Q*(s, .) dense, per level (reward units)
    v: list[torch.Tensor]  # V*(s) per level (reward units); v[0][0] = beta * log Z

    def q_rows(self, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
        """Q*(s, .) in vocabulary order for generated prefixes (prompt excluded)."""
        dense = torch.stack([self.q[lv][i] for lv, i in map(self.tree.node, prefixes)])
        return self.tree.to_vocab(dense)

    def mean_reward(self) -> tuple[float, float]:
        """(E_{pi*}[R], Std_{pi*}[R]) over sequences of positive probability."""
        p = self.log_p_star.exp()
        live = p > 0
        mean = float((p[live] * self.rewards[live]).sum())
        var = float((p[live] * (self.rewards[live] - mean) ** 2).sum())
        return mean, math.sqrt(var)


async def score_all(tree: PrefixTree, reward: Reward, batch: int = 4096) -> torch.Tensor:
    """R(x, y) for every sequence of the tree, flat."""
    seqs = [list(s) for s in tree.sequences()]
    parts = [await reward.score(tree.prompt, seqs[i:i + batch]) for i in range(0, len(seqs), batch)]
    return torch.cat(parts).to(torch.float64)


def solve(tree: PrefixTree, rewards: torch.Tensor, beta: float = 1.0) -> ExactSolution:
    """pi*, log Z, V*, Q* from the tree and the flat rewards (soft Bellman with ref = pi_ref)."""
    r = eos_rewards(tree, rewards)
    q, v = bijection.soft_bellman(r, beta, tree.ref)
    log_p_ref = bijection.path_sums(tree.ref)
    log_p_star = bijection.ebm_logprobs(r, beta, tree.ref)
    log_z = float(v[0][0]) / beta
    return ExactSolution(tree, beta, rewards, log_p_ref, log_p_star, log_z, q, v)


async def exact_solution(lm: LanguageModel, reward: Reward, prompt: Sequence[int],
                         max_tokens: int, beta: float = 1.0) -> ExactSolution:
    """Enumerate, score and solve in one call."""
    tree = await enumerate_tree(lm, prompt, max_tokens)
    return solve(tree, await score_all(tree, reward), beta)


def guided_sequence_logprobs(tree: PrefixTree, q: list[torch.Tensor], beta: float) -> torch.Tensor:
    """Exact log p(y) of the guided ARM with step logits l_ref + Q / beta (dense Q levels)."""
    return bijection.sequence_logprobs(q, beta, tree.ref)


Policy = Callable[[list[list[int]]], Awaitable[torch.Tensor]]


async def policy_sequence_logprobs(tree: PrefixTree, policy: Policy) -> torch.Tensor:
    """Exact log p(y) of ANY step policy: ``policy(contexts)`` -> log q rows [B, vocab].

    Queried on every prefix shorter than T; at T the sequence stops (EOS forced).
    """
    levels = []
    for t in range(tree.max_tokens):
        levels.append(tree.to_dense((await policy(tree.contexts(t))).to(torch.float64)))
    levels.append(tree.ref[-1])
    return bijection.path_sums(levels)


def kl(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) = sum_y p (log p - log q), over y with p(y) > 0 (inf if q(y) = 0 there)."""
    live = ~torch.isneginf(logp)
    return float((logp[live].exp() * (logp[live] - logq[live])).sum())


def tv(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """Total variation 0.5 * sum_y |p - q|."""
    return 0.5 * float((logp.exp() - logq.exp()).abs().sum())


def marginal(logp: torch.Tensor, keys: torch.Tensor) -> dict[int, float]:
    """Distribution of a statistic (e.g. tree.lengths(), tree.first_tokens()) under p."""
    p = logp.exp()
    return {int(k): float(p[keys == k].sum()) for k in torch.unique(keys)}


class BoundExactValue:
    """Q* for one (prompt, max_tokens, reward), cached per beta; a ``ValueModel``."""

    def __init__(self, lm: LanguageModel, reward: Reward, prompt: Sequence[int], max_tokens: int,
                 max_nodes: int = MAX_NODES):
        self.lm, self.reward = lm, reward
        self.prompt = [int(t) for t in prompt]
        self.max_tokens = int(max_tokens)
        self.max_nodes = max_nodes
        self._tree: PrefixTree | None = None
        self._rewards: torch.Tensor | None = None
        self._solutions: dict[float, ExactSolution] = {}

    async def solution(self, beta: float) -> ExactSolution:
        if self._tree is None:
            self._tree = await enumerate_tree(self.lm, self.prompt, self.max_tokens, self.max_nodes)
            self._rewards = await score_all(self._tree, self.reward)
        key = float(beta)
        if key not in self._solutions:
            self._solutions[key] = solve(self._tree, self._rewards, key)
        return self._solutions[key]

    async def q_values(self, contexts: Sequence[Context], beta: float) -> torch.Tensor:
        sol = await self.solution(beta)
        n = len(self.prompt)
        prefixes = []
        for c in contexts:
            c = [int(t) for t in c]
            if c[:n] != self.prompt or len(c) - n > self.max_tokens:
                raise ValueError("context does not extend the bound prompt within max_tokens")
            prefixes.append(c[n:])
        return sol.q_rows(prefixes)


class ExactValue:
    """The exact soft value Q* of (lm, reward, beta) by enumeration, for small spaces.

    Q* depends on where the prompt ends and on T, so it must be bound first:
    ``ExactValue(lm).bind(prompt_ids, max_tokens, reward=reward)`` -> ``BoundExactValue``
    (``decoders.generate`` does this). A reward given here is the default for ``bind``.
    """

    def __init__(self, lm: LanguageModel, reward: Reward | None = None, max_nodes: int = MAX_NODES,
                 cache_size: int = 32):
        self.lm, self.reward, self.max_nodes = lm, reward, max_nodes
        self.cache_size = cache_size
        self._bound: OrderedDict[tuple, BoundExactValue] = OrderedDict()

    def bind(self, prompt_ids: Sequence[int], max_tokens: int,
             reward: Reward | None = None) -> BoundExactValue:
        """The exact Q* source of (prompt, max_tokens, reward); the last ``cache_size`` bound
        sources are kept, so repeated requests reuse their enumeration."""
        reward = reward if reward is not None else self.reward
        if reward is None:
            raise ValueError("the exact value model needs a reward: pass one to bind() or ExactValue()")
        key = (tuple(int(t) for t in prompt_ids), int(max_tokens), id(reward))
        bound = self._bound.get(key)
        if bound is None or bound.reward is not reward:
            bound = BoundExactValue(self.lm, reward, prompt_ids, max_tokens, self.max_nodes)
            self._bound[key] = bound
        self._bound.move_to_end(key)
        while len(self._bound) > self.cache_size:
            self._bound.popitem(last=False)
        return bound

    async def q_values(self, contexts: Sequence[Context], beta: float) -> torch.Tensor:
        raise ValueError("ExactValue must be bound to a prompt, max_tokens and reward first: "
                         "use value.bind(prompt_ids, max_tokens, reward=...)")
