#!/usr/bin/env bash
# Create .venv (if missing) and install napari-pix2pix with everything the tests and the demo need.
# CPU-only machines: the small CPU build of torch is installed first (override with P2P_TORCH,
# e.g. P2P_TORCH="torch" to let pip choose a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "${P2P_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[testing]"
echo "napari-pix2pix installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
