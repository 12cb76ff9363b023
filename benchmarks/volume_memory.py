"""Memory of a 3D prediction of a volume larger than memory: zarr in, zarr out (issue #16).

Usage::

    python benchmarks/volume_memory.py --shape 512,2048,2048 --work /tmp/p2p-volmem   # ~8 GB of uint16

Writes a uint16 zarr volume of `shape` (a smooth pattern with noise, written chunk by chunk),
then, in a fresh process, predicts it with a 3D model (``unet3d_tiny``, random weights: memory
does not depend on them) at the defaults (``tile_size="auto"``, ``precision="auto"``) into a
new zarr store (``out="....zarr"``), and reports the peak resident memory (``VmHWM``) above the
idle process (imports done, model built, input opened), the time, and the tile plan.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from peer_care import cpu_name  # noqa: E402

CHILD = r"""
import json, sys, time
import numpy as np, torch, zarr
import napari_pix2pix as p2p
from napari_pix2pix.engine.predict.tiled import _tile_plan, PredictOptions

src, dest = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = p2p.Pix2PixModel("denoise", "unet3d_tiny", channels=1)
vol = zarr.open_array(store=src, mode="r")
plans, batch = _tile_plan(model.config, tuple(vol.shape), PredictOptions())


def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))


idle = status("VmRSS")
t = time.perf_counter()
done = [0, 0]
out = model.predict(vol, out=dest, progress=lambda p: done.__setitem__(slice(0, 2), [p.done, p.total]))
seconds = time.perf_counter() - t
print(json.dumps({"idle_rss": idle, "peak_hwm": status("VmHWM"), "seconds": seconds, "tiles": done[1],
                  "tile": [p.tile for p in plans], "batch": batch, "out_shape": list(out.shape),
                  "out_dtype": str(out.dtype), "threads": torch.get_num_threads(),
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    import zarr

    z = zarr.open_array(store=str(path), mode="w", shape=shape, chunks=(16, 256, 256), dtype="uint16")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32)
    base = (np.sin(yy / 37) * np.cos(xx / 53) + 1) * 15000 + 5000
    for z0 in range(0, shape[0], 16):
        n = min(16, shape[0] - z0)
        planes = base[None] + 3000 * np.sin(np.arange(z0, z0 + n, dtype=np.float32) / 9)[:, None, None]
        planes = planes + rng.normal(0, 1500, planes.shape).astype(np.float32)
        z[z0 : z0 + n] = np.clip(planes, 0, 65535).astype(np.uint16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="512,2048,2048", help="Z,Y,X of the volume")
    ap.add_argument("--work", default="/tmp/p2p-volmem", help="folder for the input and output stores")
    ap.add_argument("--keep", action="store_true", help="keep the stores")
    ap.add_argument("--out", help="JSON results file")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    assert len(shape) == 3
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    src, dest = work / "input.zarr", work / "output.zarr"
    shutil.rmtree(dest, ignore_errors=True)
    if not src.exists():
        t = time.perf_counter()
        make_volume(src, shape)  # type: ignore[arg-type]
        print(f"wrote {src} {shape} uint16 in {time.perf_counter() - t:.0f} s", flush=True)
    res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(dest)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    r = json.loads(res.stdout.strip().splitlines()[-1])
    above = (r["peak_hwm"] - r["idle_rss"]) / 2**30
    voxels = float(np.prod(shape))
    print(f"# CPU: {cpu_name()}; torch threads {r['threads']}, capability {r['capability']}")
    print(f"volume {shape} uint16 ({voxels * 2 / 2**30:.1f} GiB) -> {r['out_shape']} {r['out_dtype']} zarr")
    print(f"automatic tile {r['tile']}, batch {r['batch']}, {r['tiles']} tiles; {r['seconds']:.0f} s "
          f"({voxels / r['seconds'] / 1e6:.2f} Mvoxel/s)")
    print(f"peak memory above the idle process: {above:.2f} GiB (VmHWM {r['peak_hwm'] / 2**30:.2f} GiB, "
          f"idle {r['idle_rss'] / 2**30:.2f} GiB)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "shape": shape, **r, "above_idle_gib": above},
                                             indent=1))
    if not args.keep:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
