"""Add value-model variants to the demo comparison in docs/eval/demo_objectives/.

Each variant is a ``tilt eval`` output directory (its eval.json); the token-guidance rows are
recorded under a label in objectives.json and the table in objectives.md is re-rendered
(the text around the table is kept).

    python bench/demo_objectives.py "soft_q (mse), 496 prompts x 32 rollouts=runs/eval-E" ...
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "docs" / "eval" / "demo_objectives"
HEAD = ("| value model | token β | mean VADER (± s.e.) | KL to base (± s.e.) | reward gain per nat |\n"
        "| --- | --- | --- | --- | --- |\n")


def entry(eval_dir: Path) -> dict:
    """The objectives.json record of one tilt eval run."""
    ev = json.loads((eval_dir / "eval.json").read_text())
    rows = ev["methods"]
    base = next(r for r in rows if r["method"] == "none")
    keep = ("beta", "mean_reward", "sem_reward", "kl_to_base", "sem_kl", "relative_compute")
    return {"eval_config": ev["config"], "base_mean_reward": base["mean_reward"],
            "best_of_8": ev["checks"]["bon8_mean_reward"],
            "token": [{k: r.get(k) for k in keep} for r in rows if r["method"] == "token"]}


def table(data: dict) -> str:
    lines = []
    for label, e in data.items():
        for t in e["token"]:
            gain = (t["mean_reward"] - e["base_mean_reward"]) / t["kl_to_base"] if t["kl_to_base"] >= 0.05 else math.nan
            kl = f"{t['kl_to_base']:.3f}" + (f" ± {t['sem_kl']:.3f}" if t.get("sem_kl") is not None else "")
            lines.append(f"| {label} | {t['beta']:g} | {t['mean_reward']:.3f} ± {t['sem_reward']:.3f} | {kl} | {gain:.3f} |")
    return HEAD + "\n".join(lines) + "\n"


def main(pairs: list[str]) -> None:
    path = DIR / "objectives.json"
    data = json.loads(path.read_text())
    for pair in pairs:
        label, _, eval_dir = pair.rpartition("=")
        if not label or not (Path(eval_dir) / "eval.json").is_file():
            print(f"error: expected LABEL=EVAL_DIR with EVAL_DIR/eval.json, got {pair!r}", file=sys.stderr)
            sys.exit(2)
        data[label] = entry(Path(eval_dir))
    path.write_text(json.dumps(data, indent=2) + "\n")
    md = (DIR / "objectives.md").read_text()
    start = md.index("| value model |")
    end = md.index("\n\n", start) + 1
    (DIR / "objectives.md").write_text(md[:start] + table(data) + md[end:])
    print(f"{len(data)} variants in {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
