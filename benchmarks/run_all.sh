#!/usr/bin/env bash
# Run every benchmark and keep the logs and JSON in benchmarks/results/ (takes ~30-40 min on 2 CPU cores).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=benchmarks/results
mkdir -p $R
$PY benchmarks/inference.py --preset unet_256 --size 4096 --tile auto --mem-size 8192 --json $R/inference_unet_256_auto.json 2>&1 | tee $R/inference_unet_256_auto.log
$PY benchmarks/inference.py --preset unet_tiny --size 4096 --tile auto --mem-size 8192 --json $R/inference_unet_tiny_auto.json 2>&1 | tee $R/inference_unet_tiny_auto.log
$PY benchmarks/training.py --presets unet_small unet_tiny --json $R/training_small.json 2>&1 | tee $R/training_small.log
$PY benchmarks/training.py --presets unet_256 --batches 1 --steps 4 --l1-steps 0 --json $R/training_unet_256.json 2>&1 | tee $R/training_unet_256.log
