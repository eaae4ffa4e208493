"""``tilt eval``: compare sampling methods on one base model, reward and prompt set.

For every method configuration and prompt, ``decoders.generate`` draws ``n`` samples; we record

    mean reward      mean of R(x, y) over prompts and samples (± standard error)
    KL to base       mean of Sample.kl_to_base: token = exact per-step KL summed along the path
                     (an unbiased estimate of KL(pi_theta || pi_ref)); best_of_n = the bound
                     log N - (N-1)/N; importance / smc = weighted E[R]/beta - log Z-hat; blockwise
                     = its bound; none = 0
    base tokens      tokens through the base model per returned sample (decode positions: one
                     per context of a ``logprobs`` call, len + EOS per natively sampled block)
    compute          base tokens + value-model tokens × (value params / base params), per sample
                     (token guidance runs the value model once per generated token)

and write ``eval.json``, ``table.md`` and two PNGs (reward vs KL, reward vs compute).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from decoders.counting import CountingLM, counting
from decoders.generate import generate
from decoders.methods import METHODS, method_info
from decoders.spec import GuidanceSpec
from training.config import ConfigError


@dataclass
class EvalConfig:
    model: str
    reward: str
    prompts: list[str]
    value: str | None = None
    engine: str = "vllm"
    max_tokens: int = 24
    n: int = 8
    betas: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5])
    best_of: list[int] = field(default_factory=lambda: [2, 4, 8])
    particles: int = 8
    particle_beta: float | None = None
    block_size: int = 4
    candidates: int = 4
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seed: int = 0
    out: str = "runs/eval"
    engine_options: dict[str, Any] = field(default_factory=dict)


def method_grid(cfg: EvalConfig, has_value: bool) -> list[tuple[str, GuidanceSpec]]:
    """(label, spec) for every method configuration to run."""
    bad = sorted(set(cfg.methods) - set(METHODS))
    if bad:
        hint = " (the base model's sampling is called 'none')" if "base" in bad else ""
        raise ConfigError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}{hint}")
    common = {"n": cfg.n, "max_tokens": cfg.max_tokens, "seed": cfg.seed}
    pbeta = cfg.particle_beta if cfg.particle_beta is not None else cfg.betas[len(cfg.betas) // 2]
    grid: list[tuple[str, GuidanceSpec]] = []
    for m in cfg.methods:
        if method_info(m).needs_value and not has_value:
            continue
        if m == "none":
            grid.append(("base", GuidanceSpec(method="none", **common)))
        elif m == "token":
            grid += [(f"token β={b:g}", GuidanceSpec(method="token", beta=b, **common)) for b in cfg.betas]
        elif m == "best_of_n":
            grid += [(f"best-of-{k}", GuidanceSpec(method="best_of_n", particles=k, **common))
                     for k in cfg.best_of]
        elif m == "importance":
            grid.append((f"importance N={cfg.particles} β={pbeta:g}",
                         GuidanceSpec(method="importance", particles=cfg.particles, beta=pbeta, **common)))
        elif m == "smc":
            grid.append((f"smc N={cfg.particles} β={pbeta:g}",
                         GuidanceSpec(method="smc", particles=cfg.particles, beta=pbeta, **common)))
        elif m == "blockwise":
            grid.append((f"blockwise K={cfg.candidates} M={cfg.block_size} β={pbeta:g}",
                         GuidanceSpec(method="blockwise", beta=pbeta, block_size=cfg.block_size,
                                      candidates=cfg.candidates, **common)))
    return grid


def _mean_sem(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("nan")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


async def run_method(lm: CountingLM, prompt_ids: list[list[int]], spec: GuidanceSpec, *,
                     value: Any, reward: Any, value_ratio: float) -> dict[str, Any]:
    """All prompts (concurrently) for one method; aggregate statistics."""
    lm.positions = 0
    t0 = time.time()
    info = method_info(spec.method)

    async def one(i: int, p: list[int]):
        s = GuidanceSpec(**{**asdict(spec), "seed": (spec.seed or 0) * 100_003 + i})
        return await generate(lm, p, s, value=value if info.uses_value else None,
                              reward=reward)

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompt_ids)))
    samples = [s for rs in results for s in rs]
    rewards = [float(s.reward) for s in samples if s.reward is not None]
    kls = [float(s.kl_to_base or 0.0) for s in samples]
    r_mean, r_sem = _mean_sem(rewards)
    kl_mean, kl_sem = _mean_sem(kls)
    n = max(1, len(samples))
    gen_tokens = sum(len(s.tokens) + int(s.finished) for s in samples)
    base_tokens = lm.positions / n
    vm_tokens = base_tokens if info.uses_value and value is not None else 0.0
    return {"method": spec.method, "beta": spec.beta, "particles": spec.particles,
            "mean_reward": r_mean, "sem_reward": r_sem, "kl_to_base": kl_mean, "sem_kl": kl_sem,
            "samples": len(samples), "mean_length": gen_tokens / n,
            "base_tokens": base_tokens, "value_tokens": vm_tokens,
            "compute": base_tokens + vm_tokens * value_ratio, "seconds": round(time.time() - t0, 2),
            "finite_rewards": len(rewards)}


def add_relative(rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if r["method"] == "none"), None)
    for r in rows:
        r["relative_compute"] = (r["compute"] / base["compute"]) if base and base["compute"] else None


def bon_kl_bound(n: int) -> float:
    return math.log(n) - (n - 1) / n


def checks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The demo's Done-when criterion, evaluated for every token-guidance beta:
    reward >= best-of-8's, compute <= 2x unguided, KL < log 8 - 7/8."""
    bon8 = next((r for r in rows if r["method"] == "best_of_n" and r["particles"] == 8), None)
    out: dict[str, Any] = {"bon8_kl_bound": bon_kl_bound(8),
                           "bon8_mean_reward": bon8["mean_reward"] if bon8 else None, "token": []}
    for r in rows:
        if r["method"] != "token":
            continue
        ok_r = bon8 is not None and r["mean_reward"] >= bon8["mean_reward"]
        ok_c = r["relative_compute"] is not None and r["relative_compute"] <= 2.0
        ok_k = r["kl_to_base"] < bon_kl_bound(8)
        out["token"].append({"label": r["label"], "reward_ge_bon8": ok_r, "compute_le_2x": ok_c,
                             "kl_lt_bon8_bound": ok_k, "all": ok_r and ok_c and ok_k})
    out["passed"] = any(t["all"] for t in out["token"])
    return out


def table_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| method | mean reward (± s.e.) | KL to base (nats) | base tokens / sample | compute vs base |\n"
    head += "| --- | --- | --- | --- | --- |\n"
    lines = []
    for r in rows:
        rel = r.get("relative_compute")
        lines.append(f"| {r['label']} | {r['mean_reward']:.3f} ± {r['sem_reward']:.3f} | "
                     f"{r['kl_to_base']:.3f} | {r['base_tokens']:.1f} | "
                     f"{'' if rel is None else f'{rel:.2f}x'} |")
    return head + "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out: Path, title: str) -> list[str]:
    """reward_vs_kl.png and reward_vs_compute.png (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"none": "black", "token": "tab:blue", "best_of_n": "tab:orange",
              "importance": "tab:green", "smc": "tab:red", "blockwise": "tab:purple"}
    files = []
    for x_key, x_label, name in (("kl_to_base", "KL to base (nats)", "reward_vs_kl.png"),
                                 ("compute", "compute per sample (base-model tokens, value model "
                                  "scaled by params)", "reward_vs_compute.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, color in colors.items():
            pts = [r for r in rows if r["method"] == method]
            if not pts:
                continue
            pts.sort(key=lambda r: r[x_key])
            xs, ys = [r[x_key] for r in pts], [r["mean_reward"] for r in pts]
            es = [0 if math.isnan(r["sem_reward"]) else r["sem_reward"] for r in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", color=color, capsize=3,
                        linestyle="-" if len(pts) > 1 else "none", label=method)
            for r in pts:
                ax.annotate(r["label"].replace(method, "").strip() or r["label"], (r[x_key], r["mean_reward"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        if x_key == "kl_to_base":
            ax.axvline(bon_kl_bound(8), color="tab:orange", linestyle=":", linewidth=1,
                       label="log 8 - 7/8")
        ax.set_xlabel(x_label)
        ax.set_ylabel("mean reward")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(str(out / name))
    return files


async def evaluate_async(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    from rich.progress import Progress

    from engines.loader import open_engine
    from rewards.loader import load_reward

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if not cfg.prompts:
        raise ConfigError("no prompts to evaluate")
    vm_path, toy = cfg.value, cfg.model.startswith("toy:")
    try:
        handle = await open_engine(cfg.model, engine=cfg.engine,
                                   value_models={"value": vm_path} if vm_path and not toy else None,
                                   **({} if toy else cfg.engine_options))
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"cannot load model {cfg.model!r} / value model {vm_path!r}: {exc}") from exc
    try:
        try:
            reward = load_reward(cfg.reward, codec=handle.codec)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot load reward {cfg.reward!r}: {exc}") from exc
        value, value_params = None, 0
        if vm_path and toy:
            from engines.value_model import TorchValueModel

            try:
                value = TorchValueModel(vm_path)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"cannot load value model {vm_path!r}: {exc}") from exc
            value_params = value.num_parameters
        elif vm_path:
            value = handle.value_models["value"]
            value_params = int(value.metadata().get("parameters") or 0)
        elif toy and "exact" in handle.value_models:
            value = handle.value_models["exact"]
        base_params = _base_parameters(cfg.model, handle)
        ratio = value_params / base_params if base_params and value_params else 0.0
        prompt_ids = []
        for p in cfg.prompts:
            try:
                prompt_ids.append(list(handle.codec.encode(p)))
            except ValueError as exc:
                raise ConfigError(f"cannot encode prompt {p!r}: {exc}") from exc
        lm = counting(handle.lm)
        grid = method_grid(cfg, value is not None)
        rows = []
        with Progress(disable=not progress, transient=False) as bar:
            task = bar.add_task("eval", total=len(grid))
            for label, spec in grid:
                bar.update(task, description=f"eval {label}")
                row = await run_method(lm, prompt_ids, spec, value=value, reward=reward, value_ratio=ratio)
                rows.append({"label": label, **row})
                bar.advance(task)
        add_relative(rows)
        return {"config": asdict(cfg), "base_parameters": base_params,
                "value_parameters": value_params, "value_to_base_ratio": ratio,
                "bon_kl_bounds": {str(k): bon_kl_bound(k) for k in cfg.best_of},
                "methods": rows, "checks": checks(rows)}
    finally:
        await handle.aclose()


def _base_parameters(model: str, handle: Any) -> int:
    meta = {}
    try:
        meta = handle.metadata() or {}
    except Exception:  # noqa: BLE001
        meta = {}
    if meta.get("parameters"):
        return int(meta["parameters"])
    if model.startswith("toy:"):
        return 0
    from safetensors import safe_open

    from engines.loader import resolve_model_dir

    total = 0
    for f in sorted(resolve_model_dir(model).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118
                total += math.prod(st.get_slice(k).get_shape())
    return total


def write_report(result: dict[str, Any], out: str | Path, title: str) -> dict[str, str]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(table_markdown(result["methods"]))
    pngs = plot(result["methods"], out, title)
    return {"json": str(out / "eval.json"), "table": str(out / "table.md"), "plots": ", ".join(pngs)}


def evaluate(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """``evaluate_async`` on a new event loop (``tilt eval`` runs it under ``tilt.runner``)."""
    return asyncio.run(evaluate_async(cfg, progress=progress))
