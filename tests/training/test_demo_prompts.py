"""The demo value model's training prompts are held out from the eval prompts.

bench/demo_train_prompts.txt is built by scripts/build_demo_prompts.py; the demo criterion
(issue 5) is measured on docs/eval/prompts.txt, so no eval prompt may be (a prefix of) a
training prompt or the other way round."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lines(path: Path) -> list[str]:
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


def test_train_prompts_are_unique_and_disjoint_from_eval_prompts():
    train = [s.lower() for s in lines(ROOT / "bench" / "demo_train_prompts.txt")]
    held_out = [s.lower() for s in lines(ROOT / "docs" / "eval" / "prompts.txt")]
    assert len(train) >= 400 and len(set(train)) == len(train)
    clashes = [(t, e) for t in train for e in held_out if t.startswith(e) or e.startswith(t)]
    assert not clashes
