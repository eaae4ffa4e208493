"""The ARM reward against exact enumeration on a toy (decoders.exact), and on a tiny saved
Hugging Face causal LM.

Setup: pi_ref = ToyLM(vocab=4, len=3, seed=0); the ARM = ToyLM(vocab=4, len=3, seed=1),
prompt [0], all 1 + 3 + 9 + 27 = 40 completions (EOS forced at T = 3).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from scipy.stats import chisquare

from decoders import bijection, exact
from decoders.generate import generate
from decoders.spec import GuidanceSpec
from decoders.toy import ToyLM
from rewards.arm import ARMReward, LMSource
from rewards.loader import load_reward

PROMPT = [0]
T = 3


async def arm_and_tree():
    arm = load_reward("arm:toy:vocab=4,len=3,seed=1")
    tree = await exact.enumerate_tree(arm.source.lm, PROMPT, T)
    return arm, tree


def dense_along_path(levels, tree, y):
    """The dense per-level values of ``levels`` along completion y (tokens, then EOS)."""
    out = []
    for t, tok in enumerate(y):
        _, idx = tree.node(y[:t])
        out.append(levels[t][idx, tree.tokens.index(tok)])
    _, idx = tree.node(y)
    out.append(levels[len(y)][idx, tree.m])
    return torch.stack(out)


async def test_token_rewards_sum_to_sequence_logprob():
    arm, tree = await arm_and_tree()
    seqs = [list(s) for s in tree.sequences()]
    log_p_arm = bijection.path_sums(tree.ref)  # exact log p_ARM(y), forced EOS at T
    assert torch.allclose(log_p_arm.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    R = await arm.score(PROMPT, seqs)
    assert torch.allclose(R, log_p_arm, atol=1e-12)
    rs = await arm.token_rewards(PROMPT, seqs)
    assert torch.allclose(torch.stack([r.sum() for r in rs]), log_p_arm, atol=1e-12)
    # per token, they equal the dense tree bijection r = q - V_q(next) of decoders.bijection
    dense = bijection.token_rewards(tree.ref)
    for y, r in zip(seqs, rs, strict=True):
        assert torch.allclose(r, dense_along_path(dense, tree, y), atol=1e-12)
    # the EBM defined by the token rewards (Z = exp V_q(x) = 1) is the ARM's distribution
    assert torch.allclose(bijection.ebm_logprobs(dense), log_p_arm, atol=1e-12)
    assert torch.allclose(torch.log_softmax(R, dim=0), log_p_arm, atol=1e-12)


class ShiftedLM:
    """The same ARM with unnormalised logits q = log p + c(s): the bijection is non-trivial."""

    def __init__(self, lm: ToyLM):
        self.lm, self.vocab_size, self.eos_token_id, self.max_len = lm, lm.vocab_size, lm.eos_token_id, lm.max_len

    @staticmethod
    def shift(context) -> float:
        return 0.37 * len(context) + 0.1 * sum(context) - 1.0

    async def logprobs(self, contexts):
        rows = await self.lm.logprobs(contexts)
        return rows + torch.tensor([self.shift(c) for c in contexts], dtype=torch.float64)[:, None]


async def test_unnormalised_logits_telescope_to_logprob_plus_root_value():
    arm, tree = await arm_and_tree()
    shifted = ARMReward(LMSource(ShiftedLM(arm.source.lm)))
    seqs = [list(s) for s in tree.sequences()]
    log_p_arm = bijection.path_sums(tree.ref)
    rs = await shifted.token_rewards(PROMPT, seqs)
    v_root = ShiftedLM.shift(PROMPT)  # V_q(x) = logsumexp(log p + c) = c(x)
    sums = torch.stack([r.sum() for r in rs])
    assert torch.allclose(sums, log_p_arm + v_root, atol=1e-12)
    assert not torch.allclose(rs[5], (await arm.token_rewards(PROMPT, [seqs[5]]))[0])
    assert torch.allclose(await shifted.score(PROMPT, seqs), log_p_arm, atol=1e-12)


async def test_guidance_with_arm_token_rewards_samples_the_target():
    """pi* ∝ pi_ref · p_ARM^(1/beta). Q from the ARM's token rewards (soft Bellman over the
    dense tree with pi_ref) gives a guided policy equal to pi* exactly; GenARM's myopic
    l_ref + log p_ARM / beta does not. Then 6000 real draws of decoders' token sampler with the
    exact value of the ARM reward pass a chi-square test against pi* (seed fixed), a test
    whose power against the myopic policy is stated below (non-centrality > 100)."""
    beta = 0.5
    arm, arm_tree = await arm_and_tree()
    ref = ToyLM(vocab=4, max_len=T, seed=0)
    sol = await exact.exact_solution(ref, arm, PROMPT, T, beta)
    tree = sol.tree
    log_p_arm = bijection.path_sums(arm_tree.ref)
    target = torch.log_softmax(sol.log_p_ref + log_p_arm / beta, dim=0)
    assert torch.allclose(sol.log_p_star, target, atol=1e-10)

    r_dense = bijection.token_rewards(arm_tree.ref)  # the ARM's token rewards on the tree
    q_tok, v_tok = bijection.soft_bellman(r_dense, beta, tree.ref)
    guided = exact.guided_sequence_logprobs(tree, q_tok, beta)
    assert exact.kl(guided, sol.log_p_star) < 1e-12
    assert v_tok[0][0].item() == pytest.approx(beta * sol.log_z, abs=1e-10)
    myopic = bijection.sequence_logprobs(arm_tree.ref, beta, tree.ref)  # drops V
    assert exact.kl(myopic, sol.log_p_star) > 0.01

    n = 6000
    spec = GuidanceSpec(method="token", n=n, max_tokens=T, beta=beta, seed=1234)
    samples = await generate(ref, PROMPT, spec, value=exact.ExactValue(ref), reward=arm)
    counts = Counter(tree.index(s.tokens) for s in samples)
    p = sol.log_p_star.exp()
    observed = torch.tensor([counts.get(i, 0) for i in range(len(p))], dtype=torch.float64)
    live = p * n >= 5  # pool rare cells so the chi-square approximation holds
    obs = torch.cat([observed[live], observed[~live].sum()[None]])
    exp_ = torch.cat([p[live] * n, (p[~live] * n).sum()[None]])
    stat = chisquare(obs.numpy(), exp_.numpy())
    assert stat.pvalue > 1e-3, stat
    pm = myopic.exp()
    nonc = n * float((((torch.cat([pm[live], pm[~live].sum()[None]]) * n - exp_) / n) ** 2
                      / (exp_ / n)).sum())
    assert nonc > 100  # the myopic policy would be rejected with power ~1 at this n
    assert all(s.reward == pytest.approx(float(log_p_arm[tree.index(s.tokens)])) for s in samples[:50])


async def test_arm_errors_and_text():
    arm = load_reward("arm:toy:vocab=4,len=3,seed=1")
    with pytest.raises(ValueError, match="max_len"):
        await arm.score(PROMPT, [[0, 1, 2, 0]])
    with pytest.raises(ValueError, match="outside the ARM's vocabulary"):
        await arm.score(PROMPT, [[3]])  # 3 is EOS
    assert await arm.score_text("<0>", ["<1><2>"]) == (await arm.score([0], [[1, 2]])).tolist()
    with pytest.raises(ValueError, match="not found"):
        load_reward("arm:/no/such/model")
    with pytest.raises(ValueError, match="unknown option"):
        load_reward("arm:/no/such/model:temperature=2")


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory):
    from engines.testing import build_random_llama, build_tiny_tokenizer

    root = tmp_path_factory.mktemp("tiny-arm")
    build_tiny_tokenizer(root / "tok", vocab_size=300)
    return build_random_llama(root / "lm", root / "tok", hidden=32, layers=1, heads=2,
                              intermediate=64, init=0.5, max_positions=64)


async def test_hf_causal_lm_arm_matches_direct_logprobs(tiny_causal_lm):
    from transformers import AutoModelForCausalLM

    arm = load_reward(f"arm:{tiny_causal_lm}:batch_size=2")
    src = arm.source
    prompt = src.encode("The quick brown")
    ys = [src.encode(" fox jumps"), src.encode(" dog"), [], src.encode(" over the lazy dog.")]
    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, local_files_only=True).eval()
    want = []
    with torch.no_grad():
        for y in ys:
            logp = torch.log_softmax(model(torch.tensor([prompt + y])).logits[0].double(), -1)
            steps = [logp[len(prompt) - 1 + t, tok] for t, tok in enumerate(y)]
            want.append(float(sum(steps, torch.tensor(0.0)) + logp[-1, src.eos_token_id]))
    got = await arm.score(prompt, ys)  # batched with right padding
    assert got.tolist() == pytest.approx(want, abs=1e-4)
    rs = await arm.token_rewards(prompt, ys)
    with torch.no_grad():
        v_root = float(torch.logsumexp(model(torch.tensor([prompt])).logits[0, -1].double(), -1))
    assert [float(r.sum()) for r in rs] == pytest.approx([w + v_root for w in want], abs=1e-4)
    assert (await arm.score_text("The quick brown", [" dog"]))[0] == pytest.approx(want[1], abs=1e-4)
    assert math.isfinite(float((await arm.score([], [ys[1]]))[0]))  # empty prompt: BOS


def test_arm_vocabulary_must_match_the_base_model(tiny_causal_lm, toy_codec):
    from engines.hf_codec import HFCodec
    from engines.toy_engine import ToyCodec

    assert isinstance(load_reward(f"arm:{tiny_causal_lm}", codec=HFCodec(tiny_causal_lm)), ARMReward)
    with pytest.raises(ValueError, match="share the base model's vocabulary"):
        load_reward(f"arm:{tiny_causal_lm}", codec=toy_codec)
    with pytest.raises(ValueError, match="EOS id 3 differs"):
        load_reward("arm:toy:vocab=4,len=3,seed=1", codec=toy_codec)  # toy_codec: vocab 8
    same = ToyCodec(ToyLM(vocab=4, max_len=3, seed=0))
    assert isinstance(load_reward("arm:toy:vocab=4,len=3,seed=1", codec=same), ARMReward)
    with pytest.raises(ValueError, match="must be an integer"):
        load_reward(f"arm:{tiny_causal_lm}:max_len=long")
