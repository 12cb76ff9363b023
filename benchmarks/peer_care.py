"""CARE (CAREamics) and napari-pix2pix side by side: the same pairs, the same wall-clock.

Each image is split in two: the top half trains, the bottom half is held out. Cases:

- ``denoise``: Gaussian noise σ = 0.1 (images in [0, 1]) → clean;
- ``translate``: blur (Gaussian σ 1.5 px) + photon noise (30 photons at 1.0, read noise 0.02) → clean;
- ``n2n``: Noise2Noise, two independent noisy acquisitions (20 photons, read noise 0.02) as
  input and target; scored against the clean image. CAREamics' N2N is the peer.

Budgets: ``default`` (CARE at its defaults — early stopping — and ours with ``minutes`` =
CARE's measured training time of that run), or a number of seconds (both trained for that
long; ours with ``minutes=seconds/60``, which includes its data preparation and saving).
CARE runs in its own virtual environment (``../shared/peers/care_env.sh DIR`` makes
``DIR/venv``) through ``benchmarks/_care_runner.py``. Ours is ``p2p.train(input=..., target=...,
task=..., minutes=...)`` and nothing else, unless ``--ours`` adds options.

Image sets: ``eval`` — the held-out real images of ``benchmarks/eval_data.py`` (fluorescence,
medical, a gray photograph; fetch them with ``benchmarks/fetch_eval_data.sh``) — and ``dev``,
scikit-image's bundled images and a phantom, for choosing defaults without looking at ``eval``.

Usage::

    python benchmarks/peer_care.py --data /tmp/p2p-evaldata --care-venv /work/peers/venv \\
        --cases denoise,translate,n2n --budgets default,90 --out benchmarks/results/peer_care.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
EVAL_IMAGES = ("fluo/dsb2018_nuclei", "fluo/mahotas_nuclear", "fluo/purkinje_mip", "med/ct_head", "med/mr_shoulder",
               "med/xray_chest", "nat/ascent")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of `a` against `b`, both in [0, 1] units (data range 1)."""
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def images(which: str, data: str | None) -> dict[str, np.ndarray]:
    """Float32 images in [0, 1], at most 512² (their most textured crop)."""
    if which == "dev":
        from skimage import data as skd

        from napari_pix2pix.engine.images import phantoms

        sys.path.insert(0, str(HERE))
        from eval_data import _pnorm, crop

        return {"dev/cell": crop(_pnorm(skd.cell()), 512), "dev/coins": crop(_pnorm(skd.coins()), 512),
                "dev/moon": crop(_pnorm(skd.moon()), 512),
                "dev/phantom": _pnorm(phantoms.fluorescence((512, 512), seed=11))}
    sys.path.insert(0, str(HERE))
    import eval_data

    if data is None:
        raise SystemExit("the eval set needs --data (bash benchmarks/fetch_eval_data.sh DIR)")
    found = eval_data.load(data, size=512)
    return {k: found[k] for k in EVAL_IMAGES}


def photons(x: np.ndarray, n: float, read: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.poisson(np.clip(x, 0, None) * n) / n + rng.normal(0, read, x.shape)).astype(np.float32)


def make_case(img: np.ndarray, case: str, seed: int = 0) -> dict[str, np.ndarray]:
    """train_input, train_target (top half), test_input, test_clean (bottom half)."""
    h = img.shape[0] // 2
    top, bottom = img[:h], img[h:]
    rng = np.random.default_rng(seed)
    if case == "denoise":
        def deg(x: np.ndarray) -> np.ndarray:
            return (x + rng.normal(0, 0.1, x.shape)).astype(np.float32)

        return {"train_input": deg(top), "train_target": top, "test_input": deg(bottom), "test_clean": bottom}
    if case == "translate":
        def deg(x: np.ndarray) -> np.ndarray:
            return photons(ndimage.gaussian_filter(x, 1.5), 30.0, 0.02, rng)

        return {"train_input": deg(top), "train_target": top, "test_input": deg(bottom), "test_clean": bottom}
    if case == "n2n":
        return {"train_input": photons(top, 20.0, 0.02, rng), "train_target": photons(top, 20.0, 0.02, rng),
                "test_input": photons(bottom, 20.0, 0.02, rng), "test_clean": bottom}
    raise ValueError(f"unknown case {case!r}")


def run_care(venv: str, mode: str, pair: dict[str, np.ndarray], seconds: float | None, seed: int | None
             ) -> dict[str, Any]:
    """Train and predict with CAREamics in its own environment; its prediction and timings."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {k: str(Path(tmp) / f"{k}.npy") for k in ("train_input", "train_target", "test_input")}
        for k, p in paths.items():
            np.save(p, pair[k])
        out = str(Path(tmp) / "pred.npy")
        cmd = [str(Path(venv) / "bin" / "python"), str(HERE / "_care_runner.py"), "--mode", mode,
               "--train-input", paths["train_input"], "--train-target", paths["train_target"],
               "--test-input", paths["test_input"], "--out", out]
        cmd += ["--seconds", str(seconds)] if seconds else ["--defaults"]
        if seed is not None and seconds:
            cmd += ["--seed", str(seed)]
        t = time.perf_counter()
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env)
        wall = time.perf_counter() - t
        if res.returncode:
            raise RuntimeError(f"CAREamics failed:\n{res.stderr[-3000:]}")
        info = json.loads(res.stdout.strip().splitlines()[-1])
        pred = np.load(out)
    return {"pred": pred, "train_s": info["train_seconds"], "wall_s": wall, "epochs": info.get("epochs")}


def run_ours(pair: dict[str, np.ndarray], case: str, minutes: float, options: dict[str, Any],
             tta: bool = False) -> dict[str, Any]:
    import napari_pix2pix as p2p

    task = "translate" if case == "translate" else "denoise"
    kwargs: dict[str, Any] = {"recipe": "noise2noise"} if case == "n2n" else {}
    kwargs.update(options)
    t = time.perf_counter()
    model = p2p.train(input=pair["train_input"], target=pair["train_target"], task=task, minutes=minutes, **kwargs)
    call_s = time.perf_counter() - t
    t = time.perf_counter()
    pred = model.predict(pair["test_input"])
    predict_s = time.perf_counter() - t
    averaged = model.predict(pair["test_input"], tta=True) if tta else None  # after training, not in its time
    return {"pred": pred, "pred_tta": averaged, "call_s": call_s, "predict_s": predict_s,
            "steps": model.training_summary["steps_done"], "recipe": model.training_settings["recipe"],
            "started_from": model.training_summary.get("started_from")}


def cpu_name() -> str:
    """The CPU's model name and its bf16 hardware ("AMX", "AVX-512 BF16", or "AVX2 only"), for benchmark logs."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    feats = [f for f, flag in (("AMX", "amx_bf16"), ("AVX-512 BF16", "avx512_bf16")) if flag in flags]
    if not feats and flags:
        feats = ["AVX-512, no bf16" if "avx512f" in flags else "AVX2 only" if "avx2" in flags else "no AVX2"]
    return f"{name} ({', '.join(feats)})" if feats else name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=["eval", "dev"], default="eval")
    ap.add_argument("--data", help="evaluation data folder (benchmarks/fetch_eval_data.sh)")
    ap.add_argument("--images", help="comma-separated image names (default: all of the set)")
    ap.add_argument("--care-venv", default="/work/peers/venv")
    ap.add_argument("--cases", default="denoise,translate,n2n")
    ap.add_argument("--budgets", default="default,90", help="'default' and/or seconds, comma-separated")
    ap.add_argument("--care-runs", type=int, default=3, help="CARE runs per setting (it varies a lot from run to run)")
    ap.add_argument("--no-care", action="store_true", help="ours only (with --care-seconds for the default budget)")
    ap.add_argument("--care-seconds", type=float, default=6.0, help="with --no-care: the 'default' budget in seconds")
    ap.add_argument("--ours", default="{}", help="JSON of extra p2p.train options (default: none)")
    ap.add_argument("--tta", action="store_true",
                    help="also score our model predicting with tta=True (8 flips/rotations averaged)")
    ap.add_argument("--out", help="JSON results file")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --out (same options) and measure only the missing ones")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    imgs = images(args.set, args.data)
    if args.images:
        imgs = {k: imgs[k] for k in args.images.split(",")}
    options = json.loads(args.ours)
    rows: list[dict[str, Any]] = []
    if args.resume and args.out and Path(args.out).exists():
        earlier = json.loads(Path(args.out).read_text())
        if earlier.get("options") != options:
            raise SystemExit(f"--resume: {args.out} was measured with options {earlier.get('options')}, not {options}")
        rows = earlier["rows"]
    done = {(r["case"], r["image"], r["budget"]) for r in rows}
    print(f"# CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bf16: {torch.backends.cpu.get_cpu_capability()}; ours {options or 'at defaults'}", flush=True)
    for case in args.cases.split(","):
        for name, img in imgs.items():
            pair = make_case(img, case)
            base = psnr(pair["test_input"], pair["test_clean"])
            for budget in args.budgets.split(","):
                if (case, name, budget) in done:
                    print(f"{case:9s} {name:22s} {budget:>7s}  (measured earlier: kept from {args.out})", flush=True)
                    continue
                seconds = None if budget == "default" else float(budget)
                care: list[dict[str, Any]] = []
                if not args.no_care:
                    for r in range(args.care_runs):
                        c = run_care(args.care_venv, "n2n" if case == "n2n" else "care", pair, seconds,
                                     r + 1 if seconds else None)
                        care.append({"psnr": psnr(c["pred"], pair["test_clean"]), "train_s": c["train_s"],
                                     "epochs": c["epochs"]})
                care_s = float(np.median([c["train_s"] for c in care])) if care else (seconds or args.care_seconds)
                ours = run_ours(pair, case, (seconds or care_s) / 60, options, args.tta)
                row = {"case": case, "image": name, "budget": budget, "input_psnr": base,
                       "care_psnr": [c["psnr"] for c in care], "care_train_s": [c["train_s"] for c in care],
                       "care_median": float(np.median([c["psnr"] for c in care])) if care else None,
                       "ours_psnr": psnr(ours["pred"], pair["test_clean"]), "ours_call_s": ours["call_s"],
                       "ours_budget_s": seconds or care_s, "ours_steps": ours["steps"], "recipe": ours["recipe"],
                       "started_from": ours["started_from"]}
                if ours["pred_tta"] is not None:
                    row["ours_psnr_tta"] = psnr(ours["pred_tta"], pair["test_clean"])
                rows.append(row)
                runs = ", ".join(f"{p:.2f}" for p in row["care_psnr"])
                care_txt = f"CARE median {row['care_median']:.2f} dB ({runs}; {care_s:.1f} s)" if care else "CARE -"
                start = f", from {ours['started_from']}" if ours["started_from"] else ""
                print(f"{case:9s} {name:22s} {budget:>7s}  input {base:.2f}  {care_txt}  "
                      f"ours {row['ours_psnr']:.2f} dB ({ours['call_s']:.1f} s of {row['ours_budget_s']:.1f}, "
                      f"{ours['steps']} steps, {ours['recipe']}{start})"
                      + (f"; with tta {row['ours_psnr_tta']:.2f} dB" if "ours_psnr_tta" in row else ""), flush=True)
                if args.out:  # after every row: a long run that stops keeps what it measured
                    Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "options": options, "rows": rows},
                                                         indent=1))


if __name__ == "__main__":
    main()
