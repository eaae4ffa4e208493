#!/usr/bin/env bash
# The largest check of the demo criterion (issue 5), on a seed not used to pick the model or
# beta: bench/eval_demo_confirm.sh with 128 samples per prompt (2048 per method, s.e. about
# 0.005-0.007) and seed 2; writes docs/eval/demo_large/ (later flags override earlier ones).
#   bash bench/eval_demo_large.sh     (about 3 min on a 2-core CPU)
set -euo pipefail
exec bash "$(dirname "$0")/eval_demo_confirm.sh" --out docs/eval/demo_large --n 128 --seed 2 \
  --title "demo base · VADER · T=20 · 16 prompts x 128 samples (seed 2)" "$@"
