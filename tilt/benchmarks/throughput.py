"""Guided vs unguided decoding throughput on ONE engine, with the ideal ratio beside it.

    tilt bench throughput --engine vllm --json          (the command: tilt/cmd_bench.py)
    await run_throughput(engine="vllm")                  -> the result dict

Guidance runs a value model of m parameters next to the base model's M on every guided
step, so the best possible guided/unguided throughput ratio is  ideal = M / (M + m)
(compute proportional to parameters). The benchmark measures, on the same engine and
alternating rounds:

    unguided_tokens_per_s   ``concurrency`` sequences x ``max_tokens`` tokens (EOS ignored)
    guided_tokens_per_s     the same with native guidance (value model inside the sampler)
    ratio                   guided / unguided;  ratio_over_ideal = ratio / ideal_ratio
    guided_blocks_tokens_per_s  guided ``sample_blocks`` (adds the base-log-prob scoring pass)

Without ``value_model`` a random Llama value model of at most ``fraction`` x M parameters is
built for the base model in a temporary directory (same architecture as a trained one).
"""

from __future__ import annotations

import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPTS = ["The quick brown fox", "It was the best of times", "Once upon a time there was",
           "A journey of a thousand miles", "Knowledge is power and", "She sells sea shells",
           "Good things come to those", "The sun rises in the east"]


def llama_parameters(vocab: int, d: int, layers: int, ff: int, tied: bool = True) -> int:
    """Parameter count of a Llama with kv heads = heads: embeddings (+ untied head),
    per layer 4 d^2 + 3 d ff + 2 d, final norm d."""
    return vocab * d * (1 if tied else 2) + layers * (4 * d * d + 3 * d * ff + 2 * d) + d


def build_bench_value_model(base_dir: str | Path, out_dir: str | Path,
                            fraction: float = 0.25) -> Path:
    """The largest random Llama value model (head_dim 64, ff = 2 d, tied) with <= fraction x M
    parameters for the base model at ``base_dir``."""
    from engines.hf_codec import count_parameters
    from engines.testing import build_random_value_model

    cfg = json.loads((Path(base_dir) / "config.json").read_text())
    budget = fraction * count_parameters(Path(base_dir))
    vocab = int(cfg["vocab_size"])
    best = None
    for d in range(64, 1025, 64):
        for layers in range(1, 13):
            n = llama_parameters(vocab, d, layers, 2 * d)
            if n <= budget and (best is None or n > best[0]):
                best = (n, d, layers)
    if best is None:
        raise ValueError(f"no value model fits in {fraction} x the base model's parameters")
    _, d, layers = best
    return build_random_value_model(out_dir, base_dir, hidden=d, layers=layers, heads=d // 64,
                                    intermediate=2 * d, init=0.02, beta=1.0, tied=True)


async def _timed(fn, contexts, max_tokens, guidance) -> tuple[int, float]:
    t0 = time.perf_counter()
    outs = await fn(contexts, max_tokens, guidance)
    return sum(len(o) for o in outs), time.perf_counter() - t0


async def _measure(lm, fn, contexts, max_tokens, repeats, guidance, say) -> dict[str, Any]:
    """Alternating unguided/guided rounds over ``contexts``, then one guided sample_blocks."""
    from decoders.protocols import SamplingParams

    tot = {"u": [0, 0.0], "g": [0, 0.0]}
    for i in range(repeats):
        say(f"concurrency {len(contexts)}: round {i + 1}/{repeats}")
        for key, g in (("u", None), ("g", guidance)):
            n, dt = await _timed(fn, contexts, max_tokens, g)
            tot[key][0] += n
            tot[key][1] += dt
    t0 = time.perf_counter()
    blocks = await lm.sample_blocks(contexts, max_tokens, SamplingParams(),
                                    list(range(len(contexts))), guidance)
    blocks_rate = sum(len(b.tokens) for b in blocks) / (time.perf_counter() - t0)
    unguided, guided = tot["u"][0] / tot["u"][1], tot["g"][0] / tot["g"][1]
    return {"concurrency": len(contexts), "unguided_tokens_per_s": round(unguided, 1),
            "guided_tokens_per_s": round(guided, 1), "ratio": round(guided / unguided, 4),
            "guided_blocks_tokens_per_s": round(blocks_rate, 1) if math.isfinite(blocks_rate) else None}


async def run_throughput(engine: str = "vllm", model: str | None = None,
                         value_model: str | None = None, concurrency: int | list[int] = 16,
                         max_tokens: int = 64, repeats: int = 3, fraction: float = 0.25,
                         progress: Callable[[str], None] | None = None,
                         **options: Any) -> dict[str, Any]:
    """Open ``engine`` once and measure unguided and guided tokens/s (see module doc);
    ``progress`` gets one line when the engine is open and one per round. With a list of
    concurrency levels each is measured on the same engine, reported under ``levels`` (the
    top-level figures are then those of the last level)."""
    say = progress or (lambda _msg: None)
    from decoders.protocols import Guidance, SamplingParams
    from engines.hf_codec import read_hf_config
    from engines.loader import DEMO_BASE, open_engine, resolve_model_dir

    levels = [concurrency] if isinstance(concurrency, int) else list(concurrency)
    if not levels or min(levels) < 1:
        raise ValueError("concurrency levels must be >= 1")
    base_dir = resolve_model_dir(model or DEMO_BASE)
    with tempfile.TemporaryDirectory(prefix="tilt-bench-") as tmp:
        vm_dir = value_model or str(build_bench_value_model(base_dir, Path(tmp) / "vm", fraction))
        if engine == "vllm":
            options.setdefault("max_num_seqs", max(levels))
            # short prompts, a small KV cache; never past the model's own position limit
            positions = read_hf_config(base_dir)[1].get("max_position_embeddings") or 1024
            options.setdefault("max_model_len", min(1024, int(positions)))
        handle = await open_engine(str(base_dir), engine=engine,
                                   value_models={"bench": vm_dir}, **options)
        try:
            say(f"engine {engine} open ({handle.num_parameters} parameters)")
            lm = handle.lm
            guidance = Guidance("bench", 1.0)

            if hasattr(lm, "decode"):
                fn = lm.decode
            else:
                async def fn(ctxs, n, g):
                    blocks = await lm.sample_blocks(ctxs, n, SamplingParams(),
                                                    list(range(len(ctxs))), g)
                    return [b.tokens for b in blocks]

            warm = [handle.codec.encode(p) for p in PROMPTS[:4]]
            await _timed(fn, warm, 8, None)  # warm-up (both paths)
            await _timed(fn, warm, 8, guidance)
            await lm.sample_blocks(warm[:2], 4, SamplingParams(), [0, 1], guidance)
            measured = []
            for c in levels:
                contexts = [handle.codec.encode(PROMPTS[i % len(PROMPTS)]) for i in range(c)]
                measured.append(await _measure(lm, fn, contexts, max_tokens, repeats, guidance, say))
            big_m = int(handle.num_parameters)
            small_m = int(handle.value_models["bench"].num_parameters)
        finally:
            await handle.aclose()
    ideal = big_m / (big_m + small_m)
    for m in measured:
        m["ratio_over_ideal"] = round(m["ratio"] / ideal, 4)
    result = {
        "engine": engine, "model": str(base_dir), "value_model": value_model or "random",
        "base_parameters": big_m, "value_model_parameters": small_m,
        "max_tokens": max_tokens, "repeats": repeats, "ideal_ratio": round(ideal, 4),
        **measured[-1],
        "machine": platform.machine(), "processor": platform.processor() or None,
    }
    if len(measured) > 1:
        result["levels"] = measured
    return result
