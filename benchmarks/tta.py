"""Test-time augmentation (``predict(..., tta=N)``): what averaging over flips adds, and costs.

Usage::

    bash benchmarks/fetch_eval_data.sh /tmp/p2p-evaldata      # once
    python benchmarks/tta.py --data /tmp/p2p-evaldata --out benchmarks/results/tta.json

Protocol (seeded, no training): Gaussian noise sigma 0.1 on [0, 1] images. 2D: every gray
evaluation image of ``benchmarks/eval_data.py`` (fluorescence and medical; colour images as
their luminance), 320² crops, the bundled ``denoise``. With ``--volumes``, 3D too: the held-out
halves of ``benchmarks/volumes.py``'s volumes, the bundled ``denoise3d`` (and ``denoise`` plane
by plane). PSNR (data range 1) for tta = 1 (off), 2, 4, 8 (and 16 for 3D), and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from peer_care import cpu_name  # noqa: E402
from volumes import SIGMA, psnr, volumes  # noqa: E402

import napari_pix2pix as p2p  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=None)
    ap.add_argument("--volumes", action="store_true",
                    help="also the volumes (slow: 16 predictions of each; volumes.py --methods tta measures them too)")
    args = ap.parse_args()
    import eval_data

    print(f"# CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bf16: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    rows: list[dict[str, Any]] = []

    def measure(kind: str, name: str, model: str, clean: np.ndarray, noisy: np.ndarray,
                counts: tuple[int, ...]) -> None:
        m = p2p.load_model(model)
        got = {}
        for n in counts:
            t = time.perf_counter()
            pred = m.predict(noisy, tta=n)
            got[n] = (psnr(pred, clean), time.perf_counter() - t)
        rows.append({"kind": kind, "image": name, "model": model, "input": psnr(noisy, clean),
                     **{f"tta{n}": round(v[0], 3) for n, v in got.items()},
                     **{f"tta{n}_s": round(v[1], 2) for n, v in got.items()}})
        cells = "  ".join(f"tta {n:2d} {v[0]:6.2f} dB ({v[1]:5.1f} s)" for n, v in got.items())
        print(f"{kind} {name:26s} {model:9s} input {psnr(noisy, clean):5.2f}  {cells}", flush=True)

    rng = np.random.default_rng(0)
    for name, img in eval_data.load(args.data, size=320).items():
        if name.startswith(("histo/", "nat/")) and name not in ("nat/ascent",):
            continue  # gray images only: the colour ones are photographs and stains
        img = eval_data.luminance(img) if img.ndim == 3 else img
        noisy = (img + rng.normal(0, SIGMA, img.shape)).astype(np.float32)
        measure("2D", name, "denoise", img, noisy, (1, 2, 4, 8))
    for name, vol in volumes(Path(args.data)).items() if args.volumes else ():
        r = np.random.default_rng(0)  # as benchmarks/volumes.py: the same noisy held-out half
        noisy = (vol + r.normal(0, SIGMA, vol.shape)).astype(np.float32)
        half = vol.shape[0] // 2
        measure("3D", name, "denoise3d", vol[half:], noisy[half:], (1, 2, 4, 8, 16))
        measure("3D", name, "denoise", vol[half:], noisy[half:], (1, 8))
    for kind in ("2D", "3D"):
        sel = [r for r in rows if r["kind"] == kind]
        for n in (2, 4, 8, 16):
            gains = [r[f"tta{n}"] - r["tta1"] for r in sel if f"tta{n}" in r]
            if gains:
                print(f"# {kind}: tta {n:2d} gains {np.mean(gains):+.2f} dB on average (min {min(gains):+.2f}, "
                      f"max {max(gains):+.2f}, {len(gains)} images)")
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
