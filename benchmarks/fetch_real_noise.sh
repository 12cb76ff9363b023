#!/usr/bin/env bash
# Real photon-counting images for benchmarks/real_noise.py, from wheels on PyPI (nothing is fetched at run
# time): PicoQuant and Becker & Hickl TCSPC (FLIM) files shipped as sample data by napari-flim-phasor-plotter
# (BSD-3-Clause). Summed over the TCSPC time bins, each pixel is a photon count. ~130 MB downloaded.
# Sources, licences and what was checked: benchmarks/EVAL_DATA.md. Needs ptufile and sdtfile (the
# `benchmarks` extra). Usage: bash benchmarks/fetch_real_noise.sh [OUT=/tmp/p2p-realnoise]
set -euo pipefail
OUT=${1:-/tmp/p2p-realnoise}; mkdir -p "$OUT/dl"
PY=${PY:-.venv/bin/python}
"$PY" -m pip download -q napari-flim-phasor-plotter==0.0.6 --no-deps -d "$OUT/dl"   # hazelnut z-stack, 5 frames a plane
"$PY" -m pip download -q napari-flim-phasor-plotter==0.2.3 --no-deps -d "$OUT/dl"   # the seminal receptacle SDT
"$PY" - "$OUT" <<'PYEOF'
import io, sys, zipfile
from pathlib import Path
import numpy as np, ptufile, sdtfile
out = Path(sys.argv[1])
wheel = zipfile.ZipFile(next((out / "dl").glob("napari_flim_phasor_plotter-0.0.6-*.whl")))
stack = zipfile.ZipFile(io.BytesIO(wheel.read("napari_flim_phasor_plotter/data/hazelnut_FLIM_z_stack.zip")))
for z in range(1, 12):
    path = out / f"z{z}.ptu"
    path.write_bytes(stack.read(f"hazelnut_FLIM_z_stack/ptu_stack_FLIM_z{z}.ptu"))
    with ptufile.PtuFile(path) as f:
        frames = f.decode_image(channel=0).sum(axis=(-1, -2)).astype(np.float32)  # (T, Y, X, C, H) -> counts (T, Y, X)
    np.save(out / f"hazelnut_z{z}_frames.npy", frames)
    path.unlink()
    print(f"hazelnut z{z}: {frames.shape}, {frames.sum(0).mean():.1f} photons/px over {len(frames)} frames")
wheel = zipfile.ZipFile(next((out / "dl").glob("napari_flim_phasor_plotter-0.2.3-*.whl")))
path = out / "seminal.sdt"
path.write_bytes(wheel.read("napari_flim_phasor_plotter/data/seminal_receptacle_FLIM_single_image.sdt"))
counts = sdtfile.SdtFile(path).data[0].sum(-1).astype(np.float32)  # (Y, X, time bins) -> counts (Y, X)
np.save(out / "seminal_counts.npy", counts)
path.unlink()
print(f"seminal receptacle: {counts.shape}, {counts.mean():.1f} photons/px")
PYEOF
echo "real-noise data in $OUT"
