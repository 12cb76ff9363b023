#!/usr/bin/env bash
# The GPU paths, end to end, on a CUDA machine: device and precision choice, prediction, training
# (autocast; fp16 with loss scaling on GPUs without bf16), resume, a time budget, export and DDP
# with NCCL where there are 2+ GPUs. Prints what it measured; exits non-zero on the first failure.
# Usage (from the repository root, with the package installed, e.g. P2P_TORCH=torch bash scripts/setup.sh):
#   bash benchmarks/gpu_check.sh [OUT=/tmp/p2p-gpu-check] 2>&1 | tee benchmarks/results/gpu_check.log
set -euo pipefail
OUT=${1:-/tmp/p2p-gpu-check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
echo "# $(date -u +%F) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
"$PY" -m napari_pix2pix.cli info

"$PY" - "$OUT" <<'EOF'
import sys, time
import numpy as np, torch
import napari_pix2pix as p2p
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.core.device import resolve_device, resolve_precision

out = sys.argv[1]
assert torch.cuda.is_available(), "no CUDA GPU visible"
dev = resolve_device("auto")
print("device:", dev, torch.cuda.get_device_name(dev), "| auto precision:", resolve_precision("auto", dev),
      "| native bf16:", torch.cuda.is_bf16_supported(including_emulation=False))

# prediction: the bundled denoiser on a 4096² uint16 image, each precision, GPU vs CPU
img = phantoms.to_uint16(phantoms.fluorescence((4096, 4096), seed=1))
m = p2p.load_model("denoise")
ref = m.predict(img[:1024, :1024], device="cpu", precision="fp32").astype(np.float64)
for precision in ("fp32", "bf16", "fp16", "auto"):
    torch.cuda.synchronize(); t = time.perf_counter()
    res = m.predict(img, device="cuda", precision=precision)
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    err = np.abs(res[:1024, :1024].astype(np.float64) - ref).max()
    print(f"predict 4096² {precision:4s}: {dt:.2f} s ({16.8 / dt:.1f} MP/s), max |Δ| vs CPU fp32 on a crop {err:.0f}"
          f" of {int(img.max())}, peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    torch.cuda.reset_peak_memory_stats()

# training on the GPU: auto precision, fp16 explicitly (loss scaling), resume, minutes
clean = phantoms.fluorescence((512, 512), seed=2)
noisy = (clean + np.random.default_rng(0).normal(0, 0.1, clean.shape)).astype(np.float32)
for precision in ("auto", "fp16", "fp32"):
    t = time.perf_counter()
    model = p2p.train(input=noisy, target=clean, task="denoise", start_from="scratch", steps=300, device="cuda",
                      precision=precision, model_path=f"{out}/gpu-{precision}.safetensors")
    print(f"train 300 steps {precision:4s}: {time.perf_counter() - t:.1f} s, best validation "
          f"{model.training['best_val_psnr']:.2f} dB")
resumed = p2p.train(input=noisy, target=clean, resume=f"{out}/gpu-fp16.checkpoints/checkpoint.safetensors",
                    steps=400, model_path=f"{out}/gpu-fp16.safetensors")
print("resume fp16 300 -> 400 steps:", resumed.training["steps_done"])
t = time.perf_counter()
timed = p2p.train(input=noisy, target=clean, task="denoise", minutes=0.5, device="cuda")
print(f"minutes=0.5: {time.perf_counter() - t:.1f} s, {timed.training['steps_done']} steps")
for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt"), ("bioimageio", ".zip")):
    try:
        print(fmt, model.export(f"{out}/gpu{suffix}", fmt))
    except ImportError as e:
        print(fmt, "skipped:", e)
EOF

if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  "$PY" - "$OUT" <<'EOF'
import sys, tifffile
from napari_pix2pix.engine.images import phantoms
import os
os.makedirs(sys.argv[1] + "/clean", exist_ok=True)
for i in range(4):
    tifffile.imwrite(f"{sys.argv[1]}/clean/{i}.tif", phantoms.to_uint16(phantoms.nuclei((256, 256), i)))
EOF
  "$PY" -m torch.distributed.run --nproc_per_node 2 -m napari_pix2pix.cli train --clean-dir "$OUT/clean" \
    --task denoise --start-from scratch --preset unet_small --steps 200 -o "$OUT/ddp.safetensors"
fi

echo "gpu check done: $OUT (benchmarks/inference.py and training.py measure the CPU paths)"
