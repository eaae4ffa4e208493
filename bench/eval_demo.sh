#!/usr/bin/env bash
# tilt eval of the demo task (issue 5): demo base + VADER + the bundled demo value model over
# docs/eval/prompts.txt; writes docs/eval/demo/{eval.json,table.md,reward_vs_kl.png,reward_vs_compute.png}.
#   bash bench/eval_demo.sh               (about 5 min on a shared 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_LOGGING_LEVEL=WARNING
.venv/bin/tilt eval --model tilt/assets/demo-base --reward vader --value tilt/assets/demo-value \
  --prompts docs/eval/prompts.txt --out docs/eval/demo --max-tokens 20 --n 8 \
  --betas 0.1,0.15,0.165,0.17,0.1725,0.175,0.19,0.3 --best-of 2,4,8 --particles 8 --particle-beta 0.2 \
  --engine-options '{"max_num_seqs": 256, "max_model_len": 256, "max_num_batched_tokens": 16384}' \
  --title "demo base · VADER · T=20 · 16 prompts x 8 samples" --quiet "$@"
