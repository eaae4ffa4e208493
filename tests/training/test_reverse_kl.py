"""The on-policy objective reverse_kl: its gradient is exact in expectation, its episodes are
draws of the guided policy, and `tilt train --objective reverse_kl` moves a toy value model
towards pi* (exact KL by enumeration)."""

from __future__ import annotations

import asyncio
import itertools

import torch

from decoders.exact import enumerate_tree, policy_sequence_logprobs
from decoders.toy import ToyLM
from engines.lean_llama import LeanLlama
from tests.decoders.stats import chisq_pvalue, power
from tests.training.train_helpers import toy_config
from training import objectives, onpolicy, value_net
from training.exact_eval import model_q_fn
from training.trainer import train


def _toy_problem(seed: int = 0):
    """Vocab {0, 1, EOS=2}, T = 2: decision states (), (0,), (1,); 7 completions."""
    g = torch.Generator().manual_seed(seed)
    states = [(), (0,), (1,)]
    base = {s: torch.log_softmax(torch.randn(3, generator=g, dtype=torch.float64), 0) for s in states}
    q = {s: torch.randn(3, generator=g, dtype=torch.float64).requires_grad_() for s in states}
    seqs = [((), True), ((0,), True), ((1,), True)] + [((a, b), False) for a in (0, 1) for b in (0, 1)]
    rewards = {y: float(torch.randn(1, generator=g, dtype=torch.float64)) for y, _ in seqs}
    return base, q, seqs, rewards


def _decisions(tokens, finished):
    steps = [(tokens[:t], tokens[t]) for t in range(len(tokens))]
    return steps + ([(tokens, 2)] if finished else [])


def test_loo_surrogate_has_the_exact_reverse_kl_gradient():
    """E over pairs of draws of grad(reverse_kl_loss with leave-one-out advantages) equals the
    gradient of KL(pi_theta || pi*) computed in closed form (all 7 x 7 pairs enumerated)."""
    base, q, seqs, rewards = _toy_problem()
    beta = 0.7

    def guided(s):
        return torch.log_softmax(base[s] + q[s] / beta, 0)

    def logp(y, fin, table):
        return sum(table(s)[a] for s, a in _decisions(y, fin))

    # closed form: sum_y p(y) [log p(y) - log p_ref(y) - R(y)/beta]  (+ log Z, constant)
    exact = sum(logp(y, f, guided).exp() * (logp(y, f, guided) - logp(y, f, base.__getitem__)
                                            - rewards[y] / beta) for y, f in seqs)
    want = torch.autograd.grad(exact, list(q.values()))

    total = 0.0
    for (y1, f1), (y2, f2) in itertools.product(seqs, repeat=2):
        weight = (logp(y1, f1, guided) + logp(y2, f2, guided)).exp().detach()
        entries = [(i, t, s, a) for i, (y, f) in enumerate([(y1, f1), (y2, f2)])
                   for t, (s, a) in enumerate(_decisions(y, f))]
        rows = torch.tensor([e[0] for e in entries])
        ts = torch.tensor([e[1] for e in entries])
        b = torch.stack([base[e[2]] for e in entries])
        qq = torch.stack([q[e[2]] for e in entries])
        acts = torch.tensor([e[3] for e in entries])
        with torch.no_grad():
            lp = objectives.guided_logprobs(b, qq, beta)
            kl_e = (lp.exp() * (lp - b)).sum(-1)
        kl = torch.zeros(2, 2, dtype=torch.float64)
        kl[rows, ts] = kl_e
        r = torch.tensor([rewards[y1], rewards[y2]], dtype=torch.float64)
        adv = onpolicy.rloo_advantages(kl, r, beta, group=2)[rows, ts]
        loss, kl_out = objectives.reverse_kl_loss(b, qq, acts, adv, beta, n_sequences=2)
        assert torch.allclose(kl_out, kl_e)
        total = total + weight * loss
    got = torch.autograd.grad(total, list(q.values()))
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-12), (g, w)


def test_rloo_advantages_are_reward_to_go_minus_the_other_rows_mean():
    kl = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.0, 0.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    r = torch.tensor([1.0, 0.0, 2.0, -1.0])
    beta = 0.5
    adv = onpolicy.rloo_advantages(kl, r, beta, group=2)
    g = torch.tensor([[2.0 - 0.2, 2.0, 2.0], [0.0, 0.0, 0.0], [4.0 - 1.0, 4.0 - 0.5, 4.0],
                      [-2.0, -2.0, -2.0]])
    want = torch.stack([g[0] - g[1], g[1] - g[0], g[2] - g[3], g[3] - g[2]])
    assert torch.allclose(adv, want)


def test_episodes_are_draws_of_the_guided_policy():
    """20,000 episodes of softmax(log pi_ref + Q_theta/beta) (toy base, a random Llama value
    model through the lean forward) against the exact law of that policy, computed with the
    Hugging Face forward: chi-square over all 40 completions; the test rejects draws of pi_ref
    itself at level 1e-3 with power > 0.999."""
    torch.set_num_threads(1)
    lm = ToyLM(vocab=4, max_len=3, seed=0)
    model = value_net.new_value_model(4, hidden=32, layers=1, heads=2, intermediate=64, seed=0)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
    beta, prompt, n = 0.8, [0], 20_000
    value = onpolicy.LeanStepper(LeanLlama.from_weights(model.config.to_dict(), model.state_dict()))
    ep = asyncio.run(onpolicy.sample_episodes(
        onpolicy.ProtocolStepper(lm), value, [prompt] * n, beta=beta, max_tokens=3,
        eos=lm.eos_token_id, gen=torch.Generator().manual_seed(0)))

    tree = asyncio.run(enumerate_tree(lm, prompt, 3))
    q_fn = model_q_fn(model)

    async def policy(contexts):
        return torch.log_softmax(await lm.logprobs(contexts) + q_fn(contexts) / beta, dim=-1)

    law = asyncio.run(policy_sequence_logprobs(tree, policy)).exp()
    counts = torch.zeros(tree.num_sequences)
    for toks, fin in zip(ep.tokens, ep.finished, strict=True):
        assert fin or len(toks) == 3  # a row ends with a sampled EOS or at the cap
        counts[tree.index(toks)] += 1
    assert chisq_pvalue(counts, law)[1] > 1e-3
    assert power(law, asyncio.run(policy_sequence_logprobs(tree, lm.logprobs)).exp(), n) > 0.999
    # the stored base rows are log pi_ref at the visited states (zeros after the last decision)
    for i in range(5):
        for t in range(ep.decisions()[i]):
            want = lm.logprobs_row(prompt + ep.tokens[i][:t]).float()
            assert torch.allclose(ep.base_logp[i, t], want, atol=1e-6)
        assert not ep.base_logp[i, ep.decisions()[i]:].any()


def test_reverse_kl_training_moves_the_toy_guided_policy_to_pi_star(tmp_path):
    """From a zero head (guided = pi_ref), on-policy steps (value-model baseline) bring the exact
    KL(pi_theta || pi*) below 0.05 nats and the paper's 2T bound holds."""
    cfg = toy_config(tmp_path / "rk", objective="reverse_kl", steps=600, batch_size=256, group=8,
                     lr=0.003, baseline="value", eval_every=600)
    summary = train(cfg, progress=False)
    final = summary["final"]
    assert final["kl_theta_star"] <= 0.05, final
    assert final["kl_star_ref"] > 5 * final["kl_theta_star"]
    assert final["kl_theta_star"] <= final["bound_shift"]
    assert summary["objective"] == "reverse_kl" and summary["episodes"] == 600 * 256


def test_reverse_kl_starts_from_a_saved_model_and_resumes_to_the_same_weights(tmp_path, toy_value):
    """init_from = the session's soft_q toy model; stop at 4 and resume to 8 = 8 straight."""
    src, _ = toy_value
    kw = dict(objective="reverse_kl", steps=8, batch_size=32, group=4, lr=0.003, eval_every=100,
              ckpt_every=2, init_from=src.out)
    train(toy_config(tmp_path / "a", **kw), progress=False)
    split = toy_config(tmp_path / "b", **kw)
    assert train(split, progress=False, stop_after=4)["stopped_at"] == 4
    summary = train(split, progress=False, resume=True)
    assert summary["steps"] == 8 and summary["init_from"] == src.out
    a = torch.load(tmp_path / "a" / "train" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "train" / "checkpoint.pt", weights_only=False)["model"]
    start = value_net.load_value_model(src.out, src.model, 4).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # it trained from the saved weights
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
