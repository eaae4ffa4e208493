"""Toy benchmark of ``tilt train`` (issue 5): both objectives on the same rollout budget.

    .venv/bin/python bench/toy_train.py            # -> docs/eval/toy/toy_train.json + toy_kl.png

Trains with bench/train_toy.yaml once per objective, reloads each saved value model from disk
through ``engines.value_model.TorchValueModel`` (the serving format) and computes, exactly by
enumeration, KL(pi_theta || pi*) and the paper's bound 2T·max|q* - q_theta|.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import torch

from decoders.toy import ToyLM, ToyReward
from engines.value_model import TorchValueModel
from training.config import load_config
from training.trainer import exact_report, train

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "eval" / "toy"


def reload_q_fn(path: Path):
    vm = TorchValueModel(path)

    def q_fn(contexts):
        return vm.last_logits(contexts).double()
    return q_fn


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    results = {}
    for objective in ("soft_q", "iw_fkl"):
        cfg = load_config(REPO / "bench" / "train_toy.yaml",
                          {"objective": objective, "out": f"runs/toy-value-{objective}"})
        summary = train(cfg, progress=False)
        lm, reward = ToyLM.from_spec(cfg.model), ToyReward.from_spec(cfg.reward)
        prompt = lm.encode(cfg.prompts[0])
        report = asyncio.run(exact_report(lm, reward, prompt, cfg.max_tokens, cfg.beta,
                                          reload_q_fn(Path(cfg.out))))
        history = [json.loads(ln) for ln in (Path(cfg.out) / "train" / "metrics.jsonl").read_text().splitlines()]
        results[objective] = {"config": cfg.to_dict(), "summary": summary, "reloaded_exact": report,
                              "history": history,
                              "kl_le_0.05": report["kl_theta_star"] <= 0.05,
                              "bound_holds": report["kl_theta_star"] <= report["bound"]}
        print(objective, json.dumps({k: round(v, 4) for k, v in report.items()}))
    (OUT / "toy_train.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results)


def plot(results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for objective, res in results.items():
        h = res["history"]
        ax.plot([r["step"] for r in h], [r["kl_theta_star"] for r in h], marker="o", label=objective)
    ax.axhline(0.05, color="gray", linestyle=":", label="0.05 nats")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("exact KL(pi_theta || pi*) (nats)")
    ax.set_title("toy:vocab=8,len=4,seed=0 · reward toy:seed=0 · beta=1")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "toy_kl.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
