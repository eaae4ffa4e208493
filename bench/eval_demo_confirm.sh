#!/usr/bin/env bash
# A larger, independent check of the demo criterion (issue 5): none (base sampling), token guidance and
# best-of-8 only, 32 samples per prompt (512 per method, 4x the table of bench/eval_demo.sh)
# with a different seed; writes docs/eval/demo_confirm/.
#   bash bench/eval_demo_confirm.sh [--betas 0.17,0.175]    (about 2 min on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_LOGGING_LEVEL=WARNING
.venv/bin/tilt eval --model tilt/assets/demo-base --reward vader --value tilt/assets/demo-value \
  --prompts docs/eval/prompts.txt --out docs/eval/demo_confirm --max-tokens 20 --n 32 --seed 1 \
  --betas 0.165,0.17,0.1725,0.175 --best-of 8 --methods none,token,best_of_n \
  --engine-options '{"max_num_seqs": 256, "max_model_len": 256, "max_num_batched_tokens": 16384}' \
  --title "demo base · VADER · T=20 · 16 prompts x 32 samples (seed 1)" --quiet "$@"
