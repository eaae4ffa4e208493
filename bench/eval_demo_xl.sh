#!/usr/bin/env bash
# The decisive check of the demo criterion (issue 5): bench/eval_demo_confirm.sh with 512
# samples per prompt (8192 per method: s.e. about 0.0035 for token guidance, 0.0025 for
# best-of-8) on seed 3, used for nothing else; writes docs/eval/demo_xl/.
#   bash bench/eval_demo_xl.sh     (about 9 min on a 2-core CPU)
set -euo pipefail
exec bash "$(dirname "$0")/eval_demo_confirm.sh" --out docs/eval/demo_xl --n 512 --seed 3 \
  --title "demo base · VADER · T=20 · 16 prompts x 512 samples (seed 3)" "$@"
