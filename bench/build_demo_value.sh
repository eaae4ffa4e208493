#!/usr/bin/env bash
# Train the bundled demo value model and install it at tilt/assets/demo-value/.
#   bash bench/build_demo_value.sh        (about 95 min on a 2-core CPU: 62 min rollouts, 3 min training set, 27 min training)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_LOGGING_LEVEL=WARNING
.venv/bin/tilt train --config bench/train_demo.yaml "$@"
mkdir -p tilt/assets/demo-value
for f in config.json generation_config.json model.safetensors tilt.json tokenizer.json tokenizer_config.json; do
  if [ -f "runs/demo-value/$f" ]; then cp "runs/demo-value/$f" tilt/assets/demo-value/; fi
done
cp runs/demo-value/train/summary.json tilt/assets/demo-value/train_summary.json
echo "installed tilt/assets/demo-value"
