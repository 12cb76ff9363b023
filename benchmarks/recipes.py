"""Recipes and the realism recipe's stabilizers, measured on the development images (issue #15).

Usage::

    python benchmarks/recipes.py --seconds 60 --out benchmarks/results/recipes.json

Protocol: the same pairs as ``benchmarks/peer_care.py`` (top half trains, bottom half is held
out) on scikit-image's bundled images and a phantom (``--set dev``: nothing of the held-out
evaluation set is looked at), cases ``denoise`` (Gaussian 0.1) and ``translate`` (blur 1.5 px +
photon noise). Every variant trains from scratch (``start_from="scratch"``: the recipes are
compared, not the bundled model) for the same wall-clock. Measured on the held-out half:

- PSNR and SSIM against the clean image (fidelity);
- sharpness: the mean gradient magnitude of the output over the clean image's (1.0: as sharp
  as the truth; blur gives < 1, hallucinated or noisy texture > 1), and the error of the
  high-frequency part (the output minus its Gaussian blur, sigma 1.5 px, against the clean
  image's), in dB: how well fine structure is reproduced — what a realism recipe is for.

Variants: ``fidelity``, ``paper``, ``realism``, and ``realism`` with each stabilizer added
(EMA 0.999; a 2-scale PatchGAN with spectral norm and feature matching 10; R1 1.0;
resize-convolution upsampling).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
from peer_care import cpu_name, images, make_case, psnr  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "fidelity": {"recipe": "fidelity"},
    "paper": {"recipe": "paper"},
    "realism": {"recipe": "realism"},
    "realism + EMA": {"recipe": "realism", "ema": 0.999},
    "realism + multi-scale D, SN, FM": {"recipe": "realism", "d_scales": 2, "spectral_norm": True,
                                        "feature_matching": 10.0},
    "realism + R1": {"recipe": "realism", "r1": 1.0},
    "realism + resize-conv": {"recipe": "realism", "generator": {"upsample": "resize"}},
}


def sharpness(x: np.ndarray, ref: np.ndarray) -> float:
    def grad(a: np.ndarray) -> float:
        return float(np.mean(np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))))

    return grad(x.astype(np.float64)) / max(grad(ref.astype(np.float64)), 1e-12)


def high_freq_psnr(x: np.ndarray, ref: np.ndarray) -> float:
    def hp(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float64)
        return a - ndimage.gaussian_filter(a, 1.5)

    mse = float(np.mean((hp(x) - hp(ref)) ** 2))
    return 10 * float(np.log10(1.0 / max(mse, 1e-20)))


def main() -> None:
    import torch
    from skimage.metrics import structural_similarity

    import napari_pix2pix as p2p

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--images", default="dev/cell,dev/moon")
    ap.add_argument("--cases", default="denoise,translate")
    ap.add_argument("--variants", help="comma-separated names (default: all)")
    ap.add_argument("--out")
    args = ap.parse_args()
    print(f"# CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.seconds:g} s per run, from scratch", flush=True)
    imgs = images("dev", None)
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    rows: list[dict[str, Any]] = []
    for case in args.cases.split(","):
        for name in args.images.split(","):
            pair = make_case(imgs[name], case)
            clean = pair["test_clean"]
            print(f"{case:9s} {name:10s} {'input':32s} PSNR {psnr(pair['test_input'], clean):6.2f}", flush=True)
            for variant in names:
                opts = {"start_from": "scratch", **VARIANTS[variant]}
                t = time.perf_counter()
                model = p2p.train(input=pair["train_input"], target=pair["train_target"],
                                  task="translate" if case == "translate" else "denoise",
                                  minutes=args.seconds / 60, **opts)
                s = time.perf_counter() - t
                pred = np.asarray(model.predict(pair["test_input"]), np.float32)
                row = {"case": case, "image": name, "variant": variant, "psnr": psnr(pred, clean),
                       "ssim": float(structural_similarity(pred, clean, data_range=1.0)),
                       "sharpness": sharpness(pred, clean), "hf_psnr": high_freq_psnr(pred, clean),
                       "seconds": round(s, 1), "steps": model.training_summary["steps_done"]}
                rows.append(row)
                print(f"{case:9s} {name:10s} {variant:32s} PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  "
                      f"sharpness {row['sharpness']:.2f}  high-freq {row['hf_psnr']:6.2f} dB  "
                      f"({row['steps']} steps, {s:.0f} s)", flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "seconds": args.seconds,
                                                          "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
