"""Screen demo value models without vLLM: token guidance sampled by the lean forward of
``training.onpolicy`` (base and value model, KV-cached), scored by VADER.

For every model and serve beta it prints one JSON line per prompt set:
mean reward R, mean exact KL(pi_theta || pi_ref) along the sampled paths, their standard
errors, and J_c = R - c·KL for c = 0.16 and 0.19 (the frontier's slope near best-of-8's KL
bound is about 0.16, so J16 ranks models at matched KL). Prompt sets: ``eval`` (the 16
prompts of docs/eval/prompts.txt x 128 completions) and ``train`` (the last 256 lines of
bench/demo_train_prompts.txt x 8). Every model sees the same random numbers (seed), so
differences between models are measured more precisely than the standard errors suggest.

    python bench/screen_value_models.py --betas 0.16,0.17 runs/demo-value-spi1 runs/demo-value-spi2
    (about 20 s per model and beta on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE = "tilt/assets/demo-base"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="value model directories")
    ap.add_argument("--betas", default="0.16,0.17", help="comma-separated serve betas")
    ap.add_argument("--sets", default="eval,train", help="prompt sets: eval, train")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=20)
    args = ap.parse_args(argv)
    try:
        args.betas = [float(b) for b in args.betas.split(",")]
    except ValueError:
        ap.error(f"--betas must be comma-separated numbers, got {args.betas!r}")
    if any(b <= 0 for b in args.betas):
        ap.error("--betas must be > 0")
    args.sets = args.sets.split(",")
    if set(args.sets) - {"eval", "train"}:
        ap.error("--sets must name eval and/or train")
    return args


async def guided_stats(base, model, reward, prompts, *, beta, k, seed, max_tokens, eos):
    from training import onpolicy
    from training.reverse_kl import score_episodes

    gen = torch.Generator().manual_seed(seed)
    value = onpolicy.value_stepper(model)
    rs, kls = [], []
    for c0 in range(0, len(prompts), 32):
        batch = [p for p in prompts[c0:c0 + 32] for _ in range(k)]
        ep = await onpolicy.sample_episodes(base, value, batch, beta=beta, max_tokens=max_tokens,
                                            eos=eos, gen=gen, keep_rows=False)
        rs.append(await score_episodes(reward, ep, k))
        kls.append(ep.kl.sum(1).double())
    r, kl = torch.cat(rs), torch.cat(kls)
    n = len(r) ** 0.5
    return {"R": float(r.mean()), "KL": float(kl.mean()), "se_R": float(r.std() / n),
            "se_KL": float(kl.std() / n), "J16": float(r.mean() - 0.16 * kl.mean()),
            "J19": float(r.mean() - 0.19 * kl.mean()), "samples": len(r)}


async def main(args: argparse.Namespace) -> None:
    from engines.hf_codec import HFCodec
    from rewards.vader import VaderReward
    from training import onpolicy, value_net

    torch.set_num_threads(2)
    codec = HFCodec(REPO / BASE)
    reward, eos = VaderReward(codec=codec), codec.eos_token_id
    lines = [ln for ln in (REPO / "bench/demo_train_prompts.txt").read_text().splitlines() if ln.strip()]
    sets = {"eval": ([codec.encode(p) for p in (REPO / "docs/eval/prompts.txt").read_text().splitlines()
                      if p.strip()], 128),
            "train": ([codec.encode(p) for p in lines[-256:]], 8)}
    base = onpolicy.base_stepper(str(REPO / BASE), None)
    for path in args.models:
        try:
            model = value_net.load_value_model(path, BASE, codec.vocab_size)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        for beta in args.betas:
            for name in args.sets:
                prompts, k = sets[name]
                st = await guided_stats(base, model, reward, prompts, beta=beta, k=k, seed=args.seed,
                                        max_tokens=args.max_tokens, eos=eos)
                print(json.dumps({"model": path, "beta": beta, "set": name,
                                  **{k2: round(v, 4) if isinstance(v, float) else v for k2, v in st.items()}}),
                      flush=True)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
