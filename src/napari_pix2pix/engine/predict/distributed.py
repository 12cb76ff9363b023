"""The blocks of a zarr prediction on a dask cluster (``dask.distributed``).

A laptop's cores, a workstation's GPUs, SLURM/PBS.

The client (this process) plans the blocks and opens the output store; the model goes to
every worker once (its settings and safetensors weights, broadcast; each worker process builds
the network once and keeps it); each plane's (volume's) intensity ranges are computed once, as
a reduction: tasks read slabs of ~1 GB and return histograms (8/16-bit) or subsamples, one
task merges them into the same percentiles a single process computes; then one
task per block reads its input from the source (a zarr/OME-Zarr store or a TIFF, opened on
the worker; an in-memory array is scattered once), computes the block with the same tiled
predictor as a single process and writes it, and records it as done, inside the store. A
worker that dies is replaced and its tasks rerun (dask's retries); a client that dies leaves
a store whose finished blocks are recorded, which ``resume=True`` continues.

Clusters: ``workers=N`` starts a local cluster of N single-threaded worker processes;
``client=`` takes a ``distributed.Client`` or a scheduler address (``tcp://host:8786``), e.g.
of dask-cuda's ``LocalCUDACluster`` (one worker per GPU) or of dask-jobqueue's
``SLURMCluster``/``PBSCluster`` (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.network import Network
from ..core.progress import Cancelled, Progress, is_cancelled
from ..images.zarrstore import ZarrTarget, open_partial
from .blocks import Block
from .tiled import Setup, prepare

RETRIES = 3  # a block's task is retried this often (a worker lost mid-block: its block is computed again)
EXTRA = 'pip install "napari-pix2pix[cluster]"'


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ImportError(f"predicting on a dask cluster needs dask.distributed: {EXTRA}") from e
    return distributed


def connect(client: Any = None, workers: int | None = None) -> tuple[Any, Any]:
    """(a Client, a function closing what was opened here) for `client` (a Client or an address) or `workers`."""
    distributed = _distributed()
    if client is not None and not isinstance(client, str):
        return client, lambda: None
    if isinstance(client, str):
        c = distributed.Client(client, timeout="30s")
        return c, c.close
    cluster = local_cluster(int(workers or 1))
    c = distributed.Client(cluster)

    def close() -> None:
        c.close()
        cluster.close()

    return c, close


def local_cluster(workers: int, **kwargs: Any) -> Any:
    """A ``LocalCluster`` of `workers` single-threaded processes, with glibc's own allocator thresholds.

    dask sets ``MALLOC_TRIM_THRESHOLD_`` in its workers (to give memory back to the system), which
    turns off glibc's adaptive mmap threshold: every large array is then mapped and faulted in
    afresh, and a prediction ran 15-25 % slower in a worker than in a plain process (measured:
    30.5 s without it, 37.0 s with it, for 6 planes of 2048² with the bundled denoiser). For
    workers started elsewhere, start them without it (``MALLOC_TRIM_THRESHOLD_`` unset;
    dask config ``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null``).
    """
    import dask

    distributed = _distributed()
    options = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
               "silence_logs": 40, **kwargs}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(**options)


def model_bytes(model: Network) -> bytes:
    """The network as plain data for the workers: its settings (JSON) and weights (safetensors), never a pickle."""
    from safetensors.torch import save

    spec = {"task": model.task.name, "preset": model.preset, "config": model.config.to_dict(),
            "normalization": model.normalization.to_dict(), "z_context": model.z_context, "name": model.name}
    weights = save({k: v.detach().cpu().contiguous() for k, v in model.generator.state_dict().items()})
    spec["digest"] = hashlib.sha256(weights).hexdigest()  # once, here: workers key their network by it
    head = json.dumps(spec).encode()
    return len(head).to_bytes(8, "little") + head + weights


def _source_spec(source: Any, image: Any, client: Any) -> tuple[str, Any]:
    """How a worker opens the input: a path (zarr, TIFF), a zarr array's store, or an array scattered once."""
    if isinstance(source, (str, os.PathLike)):
        return "path", str(Path(source).resolve())
    store = _zarr_location(image)
    if store is not None:
        return "zarr", store
    return "array", client.scatter(np.asarray(image), broadcast=True)


def _zarr_location(image: Any) -> tuple[str, str] | None:
    """(root folder, array path) of a zarr array in a local folder; None for anything else."""
    try:
        import zarr
    except ImportError:
        return None
    if not isinstance(image, zarr.Array):
        return None
    store = image.store
    root = getattr(store, "root", None) or getattr(store, "path", None)
    if root is None or not Path(str(root)).is_dir():
        return None
    return str(root), str(getattr(image, "path", "") or "")


def _open(spec: tuple[str, Any]) -> Any:
    kind, value = spec
    if kind == "path":
        from ..images.io import open_lazy

        return open_lazy(value)
    if kind == "zarr":
        import zarr

        root, path = value
        return zarr.open_array(store=str(root), path=str(path), mode="r") if path else zarr.open_array(
            store=str(root), mode="r")
    return value  # a scattered array, resolved by dask


# ---------------------------------------------------------------------- on the workers
_lock = threading.Lock()
_models: dict[bytes, Network] = {}


def _worker_model(data: bytes) -> Network:
    """The network of :func:`model_bytes`, built once per worker process."""
    from safetensors.torch import load

    from ...nn.unet import UNetConfig
    from ..core.normalization import Normalization

    n = int.from_bytes(data[:8], "little")
    key = data[8 : 8 + n]  # the settings with the weights' digest: no hashing of the weights in every task
    with _lock:
        if key not in _models:
            spec = json.loads(key)
            net = Network(spec["task"], spec["preset"], config=UNetConfig(**spec["config"]),
                          normalization=Normalization(**spec["normalization"]), name=spec["name"],
                          z_context=int(spec["z_context"]))
            net.generator.load_state_dict(load(data[8 + n :]), strict=True)
            net.generator.eval()
            _models[key] = net
        return _models[key]


def _threads() -> None:
    """Torch uses the worker's threads, not every core (several workers share a machine)."""
    import torch

    try:
        from distributed import get_worker

        w = get_worker()
        n = int(getattr(w, "nthreads", None) or w.state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(max(n, 1))


def _worker_setup(data: bytes, image: tuple[str, Any], mask: Any, channel_axis: int | None,
                  options: dict[str, Any]) -> Setup:
    _threads()
    return prepare(_worker_model(data), _open(image), mask, channel_axis=channel_axis, **options)


def range_part_task(data: bytes, image: tuple[str, Any], mask: Any, channel_axis: int | None,
                    options: dict[str, Any], stack: tuple[int, ...], slab: tuple[int, int, int]) -> Any:
    """What one slab of rows adds to its plane's percentiles (a histogram, or a subsample)."""
    k, y0, y1 = slab
    return k, _worker_setup(data, image, mask, channel_axis, options).range_part(stack, k, y0, y1)


def plane_ranges_task(data: bytes, image: tuple[str, Any], mask: Any, channel_axis: int | None,
                      options: dict[str, Any], stack: tuple[int, ...], *parts: Any) -> Any:
    """A plane's intensity ranges (each channel pass's) from its slabs' parts: once for all its blocks."""
    return _worker_setup(data, image, mask, channel_axis, options).ranges_from(parts)


def block_task(data: bytes, image: tuple[str, Any], mask: Any, channel_axis: int | None, options: dict[str, Any],
               store: str, block: Block, ranges: Any) -> dict[str, float]:
    """Compute one block, write it into the partial store and record it; returns its time and the worker's memory."""
    import resource

    t = time.perf_counter()
    setup = _worker_setup(data, image, mask, channel_axis, options)
    out, done = open_partial(store)
    for _ in setup.predict_region(block.stack, setup.runner(), out, block.region, ranges):
        pass
    done[block.index] = 1
    return {"block": block.index, "seconds": time.perf_counter() - t, "pid": os.getpid(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------------- on the client
def _wait_one(pending: Any, seconds: float = 0.2) -> list[Any]:
    """The futures that finish within `seconds` (none: an empty list, so that cancel is checked again)."""
    if not pending.has_ready():
        time.sleep(seconds)
    return list(pending.next_batch(block=False))


def distributed_blocks_iter(setup: Setup, target: ZarrTarget, todo: list[Block], source: Any, client: Any,
                            workers: int | None, cancel: Any) -> Generator[Progress, None, bool]:
    """Compute `todo` on a cluster, yielding :class:`Progress` in blocks; returns whether any block was written.

    `cancel` (checked as blocks finish) cancels what is not running yet and raises
    :class:`~napari_pix2pix.engine.core.progress.Cancelled`: the store keeps the finished blocks.
    """
    distributed = _distributed()
    c, close = connect(client, workers)
    futures: list[Any] = []
    try:
        yield Progress(0, len(todo), "starting the cluster's work", unit="blocks")
        data = c.scatter(model_bytes(setup.model), broadcast=True)
        image = _source_spec(source, setup.image, c)
        mask = c.scatter(np.asarray(setup.mask), broadcast=True) if setup.mask is not None else None
        options = {f.name: getattr(setup.opts, f.name) for f in dataclasses.fields(setup.opts)}
        options["noise"] = setup.noise  # resolved here once ("auto": estimated from this image)
        ca = setup.layout.channel_axis
        planes = sorted({b.stack for b in todo})
        ranges = {}  # each plane's percentiles: a reduction over slabs of rows read by the workers
        for p in planes:
            parts = [c.submit(range_part_task, data, image, mask, ca, options, p, slab, pure=False, retries=RETRIES)
                     for slab in setup.range_slabs(p)]
            ranges[p] = c.submit(plane_ranges_task, data, image, mask, ca, options, p, *parts, pure=False,
                                 retries=RETRIES)
        futures = [c.submit(block_task, data, image, mask, ca, options, str(target.tmp), b, ranges[b.stack],
                            pure=False, retries=RETRIES, key=f"p2p-block-{b.index}-{os.urandom(4).hex()}")
                   for b in todo]
        done = 0
        stats: list[dict[str, float]] = []
        pending = distributed.as_completed(futures, with_results=False)
        while not pending.is_empty():
            if is_cancelled(cancel):  # checked 5 times a second, however long a block takes
                raise Cancelled("prediction cancelled")
            for f in pending.next_batch(block=False) or _wait_one(pending):
                stats.append(f.result())  # a task's error (after its retries) is raised here
                done += 1
                yield Progress(done, len(todo), f"block {done}/{len(todo)}", unit="blocks")
        target.stats = stats  # type: ignore[attr-defined]  # per-block times and worker memory (benchmarks)
        return bool(todo)
    finally:
        for f in futures:
            if not f.done():
                f.cancel()
        close()
