#!/usr/bin/env bash
# The largest check of the demo criterion (issue 5), on a seed not used to pick the model or
# beta: base, token guidance and best-of-8, 128 samples per prompt (2048 per method, s.e.
# about 0.005-0.007), seed 2; writes docs/eval/demo_large/.
#   bash bench/eval_demo_large.sh     (about 3 min on a 2-core CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_LOGGING_LEVEL=WARNING
.venv/bin/tilt eval --model tilt/assets/demo-base --reward vader --value tilt/assets/demo-value \
  --prompts docs/eval/prompts.txt --out docs/eval/demo_large --max-tokens 20 --n 128 --seed 2 \
  --betas 0.155,0.16,0.165,0.17 --best-of 8 --methods base,token,best_of_n \
  --engine-options '{"max_num_seqs": 256, "max_model_len": 256, "max_num_batched_tokens": 16384}' \
  --title "demo base · VADER · T=20 · 16 prompts x 128 samples (seed 2)" --quiet "$@"
