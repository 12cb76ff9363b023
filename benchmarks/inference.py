"""Inference benchmark: tiled prediction vs a plain fp32 forward of the same generator.

Prints measured numbers (and writes them as JSON with --json):
- plain: the untouched generator, fp32, NCHW, one forward of the whole image (the baseline);
- tiled: ``Pix2PixModel.predict`` (precision "auto", tiles, BN folded, channels_last), and
  its PSNR against the plain fp32 result;
- tiling overhead: tiled vs untiled ``predict`` at the same precision;
- peak memory of predicting a large uint16 image, in a fresh subprocess, above the idle
  process (model loaded, input in memory).

Usage: python benchmarks/inference.py [--preset unet_256] [--size 4096] [--mem-size 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

from napari_pix2pix import Pix2PixModel
from napari_pix2pix.engine.core.device import cpu_has_fast_bf16, resolve_precision
from napari_pix2pix.engine.core.normalization import from_network, plane_percentiles, to_network

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_care import cpu_name  # noqa: E402

MEM_CODE = r"""
import resource, sys, numpy as np, torch
from napari_pix2pix import Pix2PixModel
torch.manual_seed(0)
m = Pix2PixModel("denoise", sys.argv[1])
n = int(sys.argv[2])
img = (np.random.default_rng(0).random((n, n)) * 60000).astype(np.uint16)
tile = sys.argv[3] if sys.argv[3] == "auto" else int(sys.argv[3])
m.predict(img[:512, :512], tile_size=tile)  # warm up: weights prepared, allocator primed
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
base = rss()
out = m.predict(img, tile_size=tile)
# VmHWM: the peak RSS of this process image (ru_maxrss would carry over the parent's RSS from fork)
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(base, peak, out.shape)
"""


def image(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] / 97.0
    rng = np.random.default_rng(0)
    im = (np.sin(yy) * np.cos(xx * 1.3) + 1) * 20000 + rng.normal(0, 2000, (n, n)) + 5000
    return np.clip(im, 0, 65535).astype(np.uint16)


def plain_forward(model: Pix2PixModel, img: np.ndarray) -> tuple[np.ndarray, float]:
    """The baseline: untouched generator, fp32, whole image in one forward."""
    h = img.shape[0]
    flat = img[..., None]
    lo, hi = plane_percentiles(lambda a, b: flat[a:b], h, img.dtype, (0.5, 99.9))
    x = torch.from_numpy(to_network(img, lo, hi))[None, None]
    g = model.generator.eval()
    with torch.inference_mode():
        g(x[..., :256, :256])
        t = time.perf_counter()
        y = g(x)
        dt = time.perf_counter() - t
    return from_network(y[0, 0].numpy(), lo, hi), dt


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="unet_256")
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", default="auto", help="tile size in pixels, or 'auto' (the default of predict)")
    ap.add_argument("--mem-size", type=int, default=8192)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = Pix2PixModel("denoise", args.preset)
    # non-trivial running statistics so that BN folding is exercised
    with torch.no_grad():
        for mod in model.generator.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.05, 0.05)
                mod.running_var.uniform_(0.5, 2.0)
    img = image(args.size)
    mp = img.size / 1e6
    from napari_pix2pix.engine.predict.tiled import auto_tile_size
    from napari_pix2pix.engine.predict.tiling import plan_axis

    tile = args.tile if args.tile == "auto" else int(args.tile)
    itemsize = resolve_precision("auto", torch.device("cpu")).itemsize
    t_px = auto_tile_size(model.config, itemsize)[-1] if tile == "auto" else tile
    plan = plan_axis(args.size, model.config.multiple, t_px, 64)
    pixels = (len(plan.starts) * plan.tile / args.size) ** 2
    res: dict[str, object] = {
        "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
        "cpu_native_bf16": cpu_has_fast_bf16(),
        "auto_precision": str(resolve_precision("auto", torch.device("cpu"))),
        "preset": args.preset,
        "size": args.size,
        "torch": torch.__version__,
        "loadavg_at_start": os.getloadavg()[0],
        "tile": args.tile,
        "tile_px": plan.tile,
        "tiles_per_axis": len(plan.starts),
        "pixels_computed_per_image_pixel": pixels,
    }
    print(json.dumps(res))

    ref, t_plain = plain_forward(model, img)
    res["plain_fp32_mp_s"] = mp / t_plain
    print(f"plain fp32 forward, whole {args.size}²: {t_plain:.1f} s, {mp / t_plain:.3f} MP/s")

    t = time.perf_counter()
    tiled = model.predict(img, tile_size=tile)
    t_tiled = time.perf_counter() - t
    res["tiled_auto_mp_s"] = mp / t_tiled
    res["speedup_vs_plain"] = t_plain / t_tiled
    rng = float(ref.max() - ref.min())
    res["tiled_psnr_vs_plain_fp32"] = psnr(tiled, np.clip(np.rint(ref), 0, 65535), rng)
    print(f"tiled predict (auto, tile {args.tile} = {plan.tile} px, {len(plan.starts)}² tiles, "
          f"{pixels:.2f} pixels computed per pixel): {t_tiled:.1f} s, {mp / t_tiled:.3f} MP/s, "
          f"{t_plain / t_tiled:.2f}x plain; PSNR vs plain fp32 {res['tiled_psnr_vs_plain_fp32']:.1f} dB")

    t = time.perf_counter()
    model.predict(img, tile_size=None)
    t_untiled = time.perf_counter() - t
    res["untiled_auto_mp_s"] = mp / t_untiled
    res["tiling_overhead"] = t_tiled / t_untiled - 1
    print(f"untiled predict (auto): {t_untiled:.1f} s; tiling overhead {100 * (t_tiled / t_untiled - 1):.1f}%")

    out = subprocess.run([sys.executable, "-c", MEM_CODE, args.preset, str(args.mem_size), str(args.tile)],
                         capture_output=True, text=True, check=True)
    base, peak, _ = out.stdout.split(maxsplit=2)
    res["mem_size"] = args.mem_size
    res["peak_mem_above_idle_mb"] = (int(peak) - int(base)) / 2**20
    print(f"peak memory predicting {args.mem_size}² uint16: {res['peak_mem_above_idle_mb']:.0f} MB above idle")
    res["loadavg_at_end"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
