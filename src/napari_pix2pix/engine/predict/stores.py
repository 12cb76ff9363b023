"""Predictions, routed: into memory (:mod:`.tiled`), or into a zarr store block by block, here or on a dask cluster.

A zarr prediction writes into a partial store beside its destination and records each block
there as it is written (:mod:`.blocks`); ``resume=True`` computes only the missing blocks; the
finished store is renamed into place and marked complete. With a dask ``client`` (or
``workers``) the blocks run on the cluster (:mod:`.distributed`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.network import Network
from ..core.progress import Progress
from ..images.zarrstore import ZarrTarget, _plain, open_levels, partial_path, store_record
from .blocks import Block, local_blocks_iter, output_axes, plan_blocks, record_of
from .runner import Runner
from .tiled import Setup, prepare
from .tiled import predict_iter as predict_array_iter


def predict_iter(model: Network, image: Any, mask: Any = None, *, out: Any = None, pyramid: bool = False,
                 resume: bool = False, client: Any = None, workers: int | None = None,
                 ome: dict[str, Any] | None = None, **options: Any) -> Generator[Progress, None, Any]:
    """Predict `image`, yielding :class:`Progress`; returns the output array.

    The arguments are those of :meth:`Pix2PixModel.predict` (`options`: those of
    :func:`.tiled.predict_iter`: channel_axis, run, cancel and the fields of
    :class:`~napari_pix2pix.engine.predict.tiled.PredictOptions`). An `out` naming a zarr store
    is written block by block: resumable (`resume`), and on a dask cluster with `client` (a
    ``distributed.Client`` or a scheduler's address) or `workers` (a local cluster of that many
    processes); `ome` gives the output's axes (names, scale, translation, units) when the input
    is not an OME-Zarr that has them. Anything else: :func:`.tiled.predict_iter`.
    """
    if not (isinstance(out, (str, os.PathLike)) and Path(out).suffix.lower() == ".zarr"):
        if client is not None or workers is not None or resume or ome:
            raise ValueError("client=, workers=, resume= and ome= are for predictions into a zarr store: give "
                             "out='name.zarr'")
        if pyramid:
            raise ValueError("pyramid=True builds the levels of a zarr store: give out='name.zarr'")
        return (yield from predict_array_iter(model, image, mask, out=out, **options))
    channel_axis, run, cancel = options.pop("channel_axis", None), options.pop("run", None), options.pop("cancel", None)
    source = image
    if isinstance(image, (str, os.PathLike)):
        from ..images.io import open_lazy

        image = open_lazy(image)
    setup = prepare(model, image, mask, channel_axis=channel_axis, **options)
    return (yield from predict_blocks_iter(setup, Path(out), source=source, pyramid=pyramid, run=run,
                                           cancel=cancel, resume=resume, client=client, workers=workers, ome=ome))


def predict_blocks_iter(setup: Setup, path: Path, *, source: Any = None, pyramid: bool = False,
                        run: Runner | None = None, cancel: Any = None, resume: bool = False, client: Any = None,
                        workers: int | None = None, ome: dict[str, Any] | None = None
                        ) -> Generator[Progress, None, Any]:
    """Predict into the zarr store `path` block by block (on a dask cluster with `client`/`workers`).

    Yields :class:`Progress` (tiles here, blocks on a cluster); returns the result (level 0,
    read lazily). Cancelled or interrupted, it leaves the partial store, which ``resume=True``
    continues; failing before any block is written, it leaves nothing.
    """
    if client is not None and workers is not None:
        raise ValueError("give either client= (a dask Client or a scheduler address) or workers= (a local cluster), "
                         "not both")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"workers must be a number of worker processes >= 1, got {workers!r}")
    record = record_of(setup, source if source is not None else setup.image)
    found = store_record(partial_path(path)) if resume else None
    if found is not None and found.get("prediction", {}).get("blocks"):  # continue with the blocks it was cut into
        blocks = [Block.from_list(i, b) for i, b in enumerate(found["prediction"]["blocks"])]
    else:
        blocks = plan_blocks(setup, parts=_parts(setup, client, workers))
    record["blocks"] = [b.to_list() for b in blocks]
    if resume and found is None and path.exists():
        done = store_record(path)
        if done and done.get("complete") and _same(done.get("prediction"), record):  # nothing left to do
            yield Progress(0, 0, "already complete")
            return open_levels(path)[0]
    out = setup.output
    lay = out.layout
    target = ZarrTarget(path, out.shape, out.dtype, (lay.spatial[-2], lay.spatial[-1]),
                        depth_axis=lay.spatial[0] if lay.dims == 3 else None, channel_axis=lay.channel_axis,
                        pyramid=pyramid, record=record, blocks=len(blocks), resume=resume,
                        axes=output_axes(setup, source, ome))
    todo = [b for b in blocks if b.index not in target.done_blocks()]
    wrote = False
    try:
        if client is not None or workers is not None:
            from .distributed import distributed_blocks_iter

            wrote = yield from distributed_blocks_iter(setup, target, todo, source, client, workers, cancel)
        else:
            wrote = yield from local_blocks_iter(setup, target, todo, run, cancel)
        return target.commit()
    except BaseException:
        if not wrote and not target.resumed and not target.done_blocks():  # nothing computed: nothing to keep
            target.discard()
        raise


def _parts(setup: Setup, client: Any, workers: int | None) -> int:
    """Blocks wanted per plane: enough for 4 per worker across the stack (1 in this process)."""
    if client is None and workers is None:
        return 1
    n = workers or _n_workers(client)
    planes = int(np.prod(setup.stack_shape))
    return max(1, math.ceil(4 * n / planes))


def _n_workers(client: Any) -> int:
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    except AttributeError:  # an address: asked when connected
        return 1


def _same(a: Any, b: Any) -> bool:
    return bool(_plain(a) == _plain(b))
