#!/usr/bin/env bash
# Train the four bundled models one after the other (resumable: rerun to continue).
# About 4 hours of a 2-core CPU (denoise 100 min, inpaint ~65, colorize 47, colorize-he 27); logs go to
# runs/pretrained/<name>/train.log
# and, for finished models, scripts/pretrained_logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
run() {  # task steps
  local resume=""
  [ -f "runs/pretrained/$1/model.checkpoints/checkpoint.safetensors" ] && resume="--resume"
  "$PY" scripts/train_pretrained.py "$1" --steps "$2" $resume
}
run denoise "${DENOISE_STEPS:-16000}"
run inpaint "${INPAINT_STEPS:-8000}"
run colorize "${COLORIZE_STEPS:-4500}"
run colorize-he "${COLORIZE_HE_STEPS:-3000}"
