"""Build the demo value model's training prompts: bench/demo_train_prompts.txt.

The value model must generalise to prompts it never saw (the eval set docs/eval/prompts.txt
is disjoint from these), so it is trained on many short openings rather than a few long
ones. They come from the demo base model's own corpus (Debian ``fortunes`` and
``wordnet-base``, read by scripts/build_demo_base.py): the first 1-4 words of a sentence,
letters only, deduplicated, with every eval prompt (and anything starting with one) left out.
The hand-written openings already in the file are kept first.

    apt-get install -y fortunes wordnet-base
    python scripts/build_demo_prompts.py [--n 7952] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_demo_base as corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "demo_train_prompts.txt"
EVAL = ROOT / "docs" / "eval" / "prompts.txt"
HAND_WRITTEN = 48  # the first lines of OUT were written by hand and are kept


def sentence_starts(text: str) -> list[str]:
    """Sentences of a document that start with a capital letter."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s[:1].isupper()]


def opening(sentence: str, rng: random.Random) -> str | None:
    """The first 1-4 words (a seeded choice): letters and apostrophes, no all-caps words."""
    words = sentence.split()[:rng.randint(1, 4)]
    if not words or not all(re.fullmatch(r"[A-Za-z][A-Za-z']*", w) for w in words):
        return None
    if any(len(w) > 1 and w.isupper() for w in words):  # headings, code
        return None
    return " ".join(words)


def build(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = corpus.read_fortunes() + [s for _, s in corpus.read_wordnet_examples()]
    hand = OUT.read_text().splitlines()[:HAND_WRITTEN]
    held_out = [p.lower() for p in EVAL.read_text().splitlines() if p.strip()]
    seen = {p.lower() for p in hand}
    found = []
    for doc in docs:
        for s in sentence_starts(doc):
            o = opening(s, rng)
            if o is None or o.lower() in seen:
                continue
            if any(o.lower().startswith(h) or h.startswith(o.lower()) for h in held_out):
                continue
            seen.add(o.lower())
            found.append(o)
    rng.shuffle(found)
    return hand + found[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=7952, help="openings to add to the hand-written ones")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.n < 0:
        ap.error("--n must be >= 0")  # exit code 2
    corpus.check_corpus_installed()
    prompts = build(args.n, args.seed)
    OUT.write_text("\n".join(prompts) + "\n")
    print(f"wrote {len(prompts)} prompts to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
