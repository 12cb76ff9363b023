"""Scale-out prediction: one process vs a local dask cluster of 1 and 2 worker processes (issue #26).

Usage::

    python benchmarks/scale_out.py --shape 64,2048,2048 --models denoise,denoise3d --work /tmp/p2p-scale

Writes a uint16 zarr volume of `shape` (a smooth pattern with noise, chunks of 1 plane for the
2D model, (16, 512, 512) for the 3D one), then predicts it with each bundled model into a zarr
store, each configuration in a fresh process:

- ``process-1t`` / ``process-2t``: ``model.predict(src, out=...)`` in one process with 1 / 2 torch threads;
- ``cluster-1w`` / ``cluster-2w``: the same call with ``client=`` a ``LocalCluster`` of 1 / 2 worker
  processes of 1 thread each (started before the clock: a cluster is started once and reused).

It prints the wall time, the throughput (Mvoxel/s), the peak resident memory of the process and
of each worker (``ru_maxrss``), the blocks and the scheduler's overhead per block (wall time ×
workers − the blocks' own compute time, per block), and checks every result against the
1-thread process's (PSNR, or bit-identical). Then a projection, on paper, from the measured
per-block cost and overhead to 10–100 workers and a 1 TB volume.
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
import json, resource, sys, time
import numpy as np, torch
import napari_pix2pix as p2p
from napari_pix2pix.engine.images import zarrstore
from napari_pix2pix.engine.images.io import open_lazy

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
model = p2p.load_model(cfg["model"])
stats = []
commit = zarrstore.ZarrTarget.commit
def keep_stats(self):
    stats.extend(getattr(self, "stats", []))
    return commit(self)
zarrstore.ZarrTarget.commit = keep_stats
kw = {}
if cfg["workers"]:
    from distributed import Client
    from napari_pix2pix.engine.predict.distributed import local_cluster
    cluster = local_cluster(cfg["workers"], silence_logs=50)  # what workers=N starts
    client = Client(cluster)
    client.wait_for_workers(cfg["workers"])
    client.run(lambda: __import__("torch").zeros(1))  # workers started, torch imported: before the clock
    kw["client"] = client
blocks = [0]
t = time.perf_counter()
out = model.predict(cfg["src"], out=cfg["dest"], progress=lambda p: blocks.__setitem__(0, p.total), **kw)
seconds = time.perf_counter() - t
rec = zarrstore.store_record(cfg["dest"])
print(json.dumps({"seconds": seconds, "blocks": rec["blocks"], "stats": stats,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""

CONFIGS = (("process-1t", 1, 0), ("process-2t", 2, 0), ("cluster-1w", 1, 1), ("cluster-2w", 1, 2))


def make_volume(path: Path, shape: tuple[int, int, int], chunks: tuple[int, int, int]) -> None:
    import zarr

    z = zarr.open_array(store=str(path), mode="w", shape=shape, chunks=chunks, dtype="uint16")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]].astype(np.float32)
    base = (np.sin(yy / 37) * np.cos(xx / 53) + 1) * 15000 + 5000
    for z0 in range(0, shape[0], 8):
        n = min(8, shape[0] - z0)
        planes = base[None] + 3000 * np.sin(np.arange(z0, z0 + n, dtype=np.float32) / 9)[:, None, None]
        planes = planes + rng.normal(0, 1500, planes.shape).astype(np.float32)
        z[z0 : z0 + n] = np.clip(planes, 0, 65535).astype(np.uint16)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(65535.0**2 / mse)


def compare(a: Path, b: Path) -> float:
    """PSNR of store `a` against store `b`, plane by plane (inf: bit-identical)."""
    from napari_pix2pix.engine.images.io import open_zarr

    za, zb = open_zarr(a), open_zarr(b)
    worst = float("inf")
    for z in range(za.shape[0]):
        worst = min(worst, psnr(np.asarray(za[z]), np.asarray(zb[z])))
    return worst


def run(model: str, src: Path, dest: Path, threads: int, workers: int) -> dict:
    cfg = {"model": model, "src": str(src), "dest": str(dest), "threads": threads, "workers": workers}
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="64,2048,2048", help="Z,Y,X of the volume")
    ap.add_argument("--models", default="denoise,denoise3d", help="bundled models, comma-separated")
    ap.add_argument("--configs", default=",".join(c[0] for c in CONFIGS), help="which of " +
                    ", ".join(c[0] for c in CONFIGS))
    ap.add_argument("--work", default="/tmp/p2p-scale", help="folder for the input and output stores")
    ap.add_argument("--out", help="JSON results file")
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    voxels = float(np.prod(shape))
    import torch

    print(f"# CPU: {cpu_name()}; torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}; "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    print(f"# volume {shape} uint16 ({voxels * 2 / 2**30:.2f} GiB); precision and tile size at their defaults",
          flush=True)
    results: dict[str, dict[str, dict]] = {}
    for model in args.models.split(","):
        chunks = (16, 512, 512) if model.endswith("3d") else (1, 512, 512)
        src = work / f"input-{'x'.join(map(str, chunks))}.zarr"
        if not src.exists():
            make_volume(src, shape, chunks)  # type: ignore[arg-type]
        results[model] = {}
        ref = None
        for name, threads, workers in CONFIGS:
            if name not in args.configs.split(","):
                continue
            dest = work / f"{model}-{name}.zarr"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(dest.with_name(f".{dest.name}.partial"), ignore_errors=True)  # an interrupted run's
            r = run(model, src, dest, threads, workers)
            r["mvox_s"] = voxels / r["seconds"] / 1e6
            stats = r.pop("stats")
            if workers:
                busy = sum(s["seconds"] for s in stats)
                r["block_seconds_mean"] = busy / len(stats)
                r["overhead_per_block_s"] = (r["seconds"] * workers - busy) / len(stats)
                r["worker_peak_rss_mb"] = max(s["peak_rss_mb"] for s in stats)
            r["psnr_vs_process_1t"] = compare(dest, ref) if ref is not None else float("inf")
            ref = ref or dest
            results[model][name] = r
            line = (f"{model:10s} {name:11s} {r['seconds']:7.1f} s  {r['mvox_s']:6.2f} Mvoxel/s  "
                    f"{r['blocks']:4d} blocks  client/process peak {r['peak_rss_mb']:6.0f} MB")
            if workers:
                line += (f"  worker peak {r['worker_peak_rss_mb']:6.0f} MB  block {r['block_seconds_mean']:.2f} s  "
                         f"overhead/block {r['overhead_per_block_s']:.3f} s")
            line += f"  vs process-1t: {r['psnr_vs_process_1t']:.1f} dB"
            print(line, flush=True)
        rows = results[model]
        if {"cluster-1w", "cluster-2w"} <= set(rows):
            ratio = rows["cluster-2w"]["mvox_s"] / rows["cluster-1w"]["mvox_s"]
            print(f"{model}: 2 workers / 1 worker throughput {ratio:.2f}x", flush=True)
        for w, p in (("cluster-1w", "process-1t"), ("cluster-2w", "process-2t")):
            if {w, p} <= set(rows):
                print(f"{model}: {w} / {p} (same threads) {rows[w]['mvox_s'] / rows[p]['mvox_s']:.0%}", flush=True)
        project(model, rows)
    for model in results:
        for name in results[model]:
            results[model][name]["psnr_vs_process_1t"] = str(results[model][name]["psnr_vs_process_1t"])
    if args.out:
        Path(args.out).write_text(json.dumps({"cpu": cpu_name(), "shape": shape, "results": results}, indent=1))


def project(model: str, rows: dict[str, dict]) -> None:
    """On paper: a 1 TB uint16 volume on W workers, from the measured per-block cost and overhead."""
    r = rows.get("cluster-2w") or rows.get("cluster-1w")
    if r is None:
        return
    tb_vox = 2**40 / 2  # uint16
    per_block_vox = float(r["seconds"] * r["mvox_s"] * 1e6 / r["blocks"])
    blocks = tb_vox / per_block_vox
    cpu_rate = per_block_vox / r["block_seconds_mean"] / 1e6  # Mvoxel/s of one single-threaded worker, in a block
    over = max(r["overhead_per_block_s"], 0.0)
    print(f"{model}: projection (on paper, not measured): 1 TB = {tb_vox / 1e12:.2f} Tvoxel = {blocks:,.0f} blocks "
          f"of {per_block_vox / 1e6:.1f} Mvoxel; measured per block {r['block_seconds_mean']:.2f} s compute "
          f"({cpu_rate:.2f} Mvoxel/s per 1-thread CPU worker) + {over:.3f} s overhead", flush=True)
    for label, rate in (("1-thread CPU workers (measured rate)", cpu_rate), ("GPU workers at an assumed 50 Mvoxel/s",
                                                                              50.0),
                        ("GPU workers at an assumed 200 Mvoxel/s", 200.0)):
        cells = []
        for w in (10, 100):
            per_block = per_block_vox / rate / 1e6 + over
            hours = blocks * per_block / w / 3600
            sched = blocks * 0.001 / 3600  # dask's scheduler: about 1 ms per task (its docs), one core
            cells.append(f"{w} workers {max(hours, sched):.1f} h")
        print(f"  {label}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
