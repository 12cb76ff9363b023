"""Denoising judged on real noise: photon-counting images with an independent real reference.

The data are real acquisitions shipped inside packages on PyPI (benchmarks/EVAL_DATA.md;
``bash benchmarks/fetch_real_noise.sh DIR`` downloads the wheels and writes the count images):

- ``hazelnut_z{N}``: a PicoQuant TCSPC (FLIM) z-stack of a hazelnut section, 256 x 256, 5 frames
  per plane (napari-flim-phasor-plotter 0.0.6, BSD-3-Clause); summed over the TCSPC time bins,
  each pixel is a photon count;
- ``seminal``: a Becker & Hickl TCSPC image of a Drosophila seminal receptacle (NAD(P)H
  autofluorescence), 512 x 512, one acquisition (napari-flim-phasor-plotter 0.2.3).

Two ways to get an input, a second acquisition and a reference that are independent:

- *thinning* (one acquisition of counts ``N``): ``a = Binomial(N, p)``, ``b = Binomial(N − a, p / (1 − p))``,
  ``c = N − a − b`` are independent Poisson images of the same field with means ``p λ``, ``p λ``,
  ``(1 − 2p) λ``: input ``a``, second acquisition ``b``, reference ``c``. (Exact for Poisson counts;
  the brightest hazelnut pixels are slightly sub-Poisson — TCSPC dead time — so the dim planes are
  thinned and the bright plane uses its repeated frames.)
- *frames*: input frame 0, second acquisition frame 1, reference the mean of frames 2-4.

Scores are PSNR in dB against the unknown clean image, from the unbiased MSE
``mean((pred · s − ref)²) − mean(Var ref)`` (``s`` scales the prediction to the reference's
photons; ``Var ref`` is the reference's own Poisson variance, its value for counts), in units of
the input, with the peak the 99.9th percentile of the (smoothed) signal.

Methods: the noisy input; the bundled denoiser zero-shot (``p2p.denoise``, and with
``noise="auto"``); BM3D after the Anscombe transform (``bm3d`` package, σ 1, exact unbiased
inverse); CAREamics Noise2Void at its defaults on the noisy image (``--care-venv``); ours from
the noisy image alone (``p2p.train(input=noisy, task="denoise", minutes=1)``) and with the second
acquisition (``recipe="noise2noise"``), each run twice.

Usage::

    python benchmarks/real_noise.py --data /tmp/p2p-realnoise --care-venv /work/peers/venv \\
        --out benchmarks/results/real_noise.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
CASES = {  # name: (file, how, p): p the thinning share of the input (and of the second acquisition)
    "hazelnut-z10-thinned": ("hazelnut_z10_frames.npy", "thin", 0.35),  # dim
    "hazelnut-z9-thinned": ("hazelnut_z9_frames.npy", "thin", 0.45),
    "hazelnut-z5-frames": ("hazelnut_z5_frames.npy", "frames", None),  # bright: its own repeated frames
    "seminal-thinned": ("seminal_counts.npy", "thin", 0.4),
}


def split(counts: np.ndarray, how: str, p: float | None, seed: int = 0) -> dict[str, Any]:
    """(input, second acquisition, reference, scale of the reference to the input, Var of the reference)."""
    rng = np.random.default_rng(seed)
    if how == "frames":
        frames = counts.astype(np.float64)
        ref = frames[2:].mean(axis=0)
        return {"input": frames[0], "second": frames[1], "ref": ref, "scale": 1.0, "ref_var": ref / (len(frames) - 2),
                "signal": ndimage.gaussian_filter(frames.mean(axis=0), 1)}
    n = (counts.sum(axis=0) if counts.ndim == 3 else counts).astype(np.int64)
    a = rng.binomial(n, p)
    b = rng.binomial(n - a, p / (1 - p))
    c = n - a - b
    q = 1 - 2 * p
    return {"input": a.astype(np.float64), "second": b.astype(np.float64), "ref": c.astype(np.float64),
            "scale": q / p, "ref_var": c.astype(np.float64), "signal": ndimage.gaussian_filter(n * p, 1)}


def psnr(pred: np.ndarray, case: dict[str, Any]) -> float:
    """PSNR (dB) of `pred` (in input units) against the unknown clean image, from the unbiased MSE."""
    s = case["scale"]
    mse_ref = float(np.mean((pred * s - case["ref"]) ** 2) - np.mean(case["ref_var"]))
    mse = max(mse_ref / s**2, 1e-12)
    peak = float(np.percentile(case["signal"], 99.9))
    return 10 * np.log10(peak**2 / mse)


def bm3d_vst(y: np.ndarray) -> np.ndarray:
    """BM3D after the Anscombe transform (counts: gain 1), with the exact unbiased inverse."""
    import bm3d

    from napari_pix2pix.engine.images.noise import NoiseModel, stabilize, unstabilize

    model = NoiseModel(1.0, 0.0, 0.0)
    return unstabilize(bm3d.bm3d(stabilize(y, model), 1.0), model)


def n2v(y: np.ndarray, venv: str) -> np.ndarray | None:
    """CAREamics Noise2Void at its defaults on the noisy image (None without its venv)."""
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", y.astype(np.float32))
        subprocess.run([str(python), str(HERE / "_care_runner.py"), "--mode", "n2v", "--train-input",
                        str(Path(tmp) / "x.npy"), "--test-input", str(Path(tmp) / "x.npy"), "--out",
                        str(Path(tmp) / "p.npy"), "--defaults"], check=True, capture_output=True, text=True)
        return np.load(Path(tmp) / "p.npy").astype(np.float64)


def ours(y: np.ndarray, second: np.ndarray | None, minutes: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Ours: trained on the noisy image alone, or with the second acquisition (noise2noise); then predict."""
    import napari_pix2pix as p2p

    t = time.perf_counter()
    kw: dict[str, Any] = {"target": second.astype(np.float32), "recipe": "noise2noise"} if second is not None else {}
    model = p2p.train(input=y.astype(np.float32), task="denoise", minutes=minutes, **kw)
    seconds = time.perf_counter() - t
    tr = model.training_summary
    pred = model.predict(y.astype(np.float32)).astype(np.float64)
    return pred, {"seconds": round(seconds, 1), "steps": tr["steps_done"], "recipe": tr["plan"]["recipe"],
                  "weights_of_step": tr["weights_of_step"], "noise": tr["plan"].get("noise_model")}


def run_case(name: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    import napari_pix2pix as p2p

    file, how, p = CASES[name]
    case = split(np.load(data / file), how, p)
    y = case["input"]
    row: dict[str, Any] = {"case": name, "shape": list(y.shape), "mean_photons": round(float(y.mean()), 2),
                           "top10_photons": round(float(np.percentile(y, 90)), 1)}
    scores: dict[str, Any] = {"noisy": psnr(y, case)}
    t = time.perf_counter()
    scores["zero-shot"] = psnr(p2p.denoise(y.astype(np.float32)).astype(np.float64), case)
    row["zero_shot_seconds"] = round(time.perf_counter() - t, 1)
    scores["zero-shot noise=auto"] = psnr(p2p.denoise(y.astype(np.float32), noise="auto").astype(np.float64), case)
    scores["VST+BM3D"] = psnr(bm3d_vst(y), case)
    pred = n2v(y, args.care_venv)
    scores["CAREamics N2V"] = psnr(pred, case) if pred is not None else None
    for label, second in (("ours noise2self", None), ("ours noise2noise", case["second"])):
        runs = []
        for _ in range(args.runs):
            pred, info = ours(y, second, args.minutes)
            runs.append({"psnr": psnr(pred, case), **info})
        scores[label] = [r["psnr"] for r in runs]
        row[label] = runs
    row["scores"] = scores
    best_peer = max(v for k, v in scores.items() if k in ("zero-shot", "VST+BM3D", "CAREamics N2V") and v is not None)
    row["target"] = best_peer + 0.5
    return row


def cpu_name() -> str:
    sys.path.insert(0, str(HERE))
    from peer_care import cpu_name as name

    return name()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder written by benchmarks/fetch_real_noise.sh")
    ap.add_argument("--care-venv", default="/work/peers/venv", help="CAREamics venv (../shared/peers/care_env.sh)")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    ap.add_argument("--minutes", type=float, default=1.0, help="our training budget")
    ap.add_argument("--runs", type=int, default=2, help="runs of each of our trainings (reliability)")
    ap.add_argument("--out", help="JSON results file")
    args = ap.parse_args()
    import torch

    print(f"# CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"training {args.minutes:g} min per run, {args.runs} runs", flush=True)
    rows = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        row = run_case(name, Path(args.data), args)
        rows.append(row)
        s = row["scores"]
        fmt = {k: (f"{v:.2f}" if isinstance(v, float) else "/".join(f"{x:.2f}" for x in v) if isinstance(v, list)
                   else "-") for k, v in s.items()}
        print(f"{name:30s} mean {row['mean_photons']:6.2f} ph/px (top 10 % {row['top10_photons']:g}): "
              + " | ".join(f"{k} {v}" for k, v in fmt.items()) + f" | target {row['target']:.2f}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "minutes": args.minutes, "rows": rows},
                                                 indent=1, default=float))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
