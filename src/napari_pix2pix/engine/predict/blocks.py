"""Predictions into zarr stores, block by block: each block recorded when written, resumable, and on a dask cluster.

The output is cut into blocks: one plane (or volume) of the stack each, split along the
spatial axis with the most tiles into runs of 8-16 tiles, at boundaries that are multiples of
the store's chunks, so that no two blocks write into one chunk. A block is computed from the
same tiles of the same grid as the whole image's prediction (see
:func:`~napari_pix2pix.engine.predict.tiling.iter_bands` with a region), so the result is
that of an uninterrupted, single-process prediction: only the tiles at a block's edges are
computed twice (by both neighbours). Each block is recorded inside the store once written
(:class:`~napari_pix2pix.engine.images.zarrstore.ZarrTarget`); ``resume=True`` computes the
missing ones. :mod:`.stores` runs them here or on a dask cluster (:mod:`.distributed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.progress import Progress
from ..images.zarrstore import CHUNK, DEPTH_CHUNK, AxesInfo, ZarrTarget, read_axes
from .runner import Runner
from .tiled import Ranges, Setup
from .tiling import AxisPlan

MIN_TILES = 8  # a block spans at least this many tiles along its split axis: the tiles at its edges are computed
# twice (a 32 x 1024² volume cut into blocks of 4 tiles computed 25 % more tiles than whole; of 8: 12.5 %)
MAX_TILES = 16  # and at most this many: a block is a unit of progress, of resuming and of scheduling


@dataclass(frozen=True)
class Block:
    """One block of the output: plane `stack` of the stack, pixels `region` ((start, end) per spatial axis)."""

    index: int
    stack: tuple[int, ...]
    region: tuple[tuple[int, int], ...]

    def to_list(self) -> list[Any]:
        """The block as stored in the record (JSON): [stack, region]."""
        return [list(self.stack), [list(r) for r in self.region]]

    @classmethod
    def from_list(cls, index: int, item: list[Any]) -> Block:
        """Block `index` of a stored record (the inverse of `to_list`)."""
        return cls(index, tuple(int(i) for i in item[0]), tuple((int(a), int(b)) for a, b in item[1]))


def spatial_chunks(setup: Setup) -> tuple[int, ...]:
    """The output store's chunk size along each spatial axis (Z 16 for volumes, Y and X 256)."""
    dims = setup.model.config.spatial_dims
    return ((DEPTH_CHUNK,) if dims == 3 else ()) + (CHUNK, CHUNK)


def plan_blocks(setup: Setup, parts: int = 1) -> list[Block]:
    """The blocks of a prediction: `parts` (or more) per plane where its tiles allow, at chunk boundaries.

    The split axis is the spatial axis with the most tiles; each block spans
    :data:`MIN_TILES`-:data:`MAX_TILES` of them (a plane with fewer is one block).
    """
    plans = setup.plans
    chunks = spatial_chunks(setup)
    axis = max(range(len(plans)), key=lambda a: (len(plans[a].starts), -a))
    cuts = _cuts(plans[axis], chunks[axis], parts)
    blocks: list[Block] = []
    for stack in np.ndindex(*setup.stack_shape):
        for a, b in zip(cuts, cuts[1:], strict=False):
            region = tuple((a, b) if k == axis else (0, p.size) for k, p in enumerate(plans))
            blocks.append(Block(len(blocks), tuple(int(i) for i in stack), region))
    return blocks


def _cuts(plan: AxisPlan, chunk: int, parts: int) -> list[int]:
    """Block boundaries along one axis: in the middle of the overlap of two tiles, rounded to a chunk multiple."""
    n = len(plan.starts)
    per = min(max(MIN_TILES, math.ceil(n / max(parts, 1))), MAX_TILES)
    cuts = [0]
    for i in range(per, n, per):
        if n - i < MIN_TILES // 2:  # a last run of one tile: joined to the one before
            break
        middle = (plan.starts[i - 1] + plan.tile + plan.starts[i]) // 2 - plan.pad
        cut = int(round(middle / chunk)) * chunk
        if cuts[-1] < cut < plan.size:
            cuts.append(cut)
    return cuts + [plan.size]


def block_tiles(setup: Setup, block: Block) -> int:
    """Tiles a block computes (all channel passes)."""
    n = 1
    for plan, (a, b) in zip(setup.plans, block.region, strict=True):
        n *= sum(1 for s in plan.starts if s < b + plan.pad and s + plan.tile > a + plan.pad)
    return n * len(setup.jobs)


def _digest(setup: Setup) -> str:
    h = hashlib.sha256()
    for k, t in sorted(setup.model.generator.state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def _mask_digest(mask: Any) -> str | None:
    if mask is None:
        return None
    m = np.ascontiguousarray(np.asarray(mask)).astype(bool)
    return hashlib.sha256(np.packbits(m).tobytes() + str(m.shape).encode()).hexdigest()[:32]


def record_of(setup: Setup, source: Any) -> dict[str, Any]:
    """What a prediction is (model, input, options): a resumed one must be the same."""
    o = setup.opts
    options = {"tile_size": o.tile_size, "overlap": o.overlap, "batch_size": setup.batch_size,
               "precision": o.precision, "tta": o.tta, "mc_dropout": o.mc_dropout, "augment": o.augment,
               "output_dtype": str(np.dtype(o.output_dtype)) if o.output_dtype is not None else None,
               "noise": dataclasses.asdict(setup.noise) if setup.noise is not None else None}
    src = str(Path(source).resolve()) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    return {"model": _digest(setup), "task": setup.model.task.name, "input": src,
            "shape": list(np.shape(setup.image)), "dtype": str(setup.dtype),
            "channel_axis": setup.layout.channel_axis, "mask": _mask_digest(setup.mask), "options": options,
            "tiles": [list(p.starts) + [p.tile] for p in setup.plans]}


def output_axes(setup: Setup, source: Any, ome: dict[str, Any] | None) -> AxesInfo:
    """The output's axes: from `ome` (names, scale, translation, units) or the input's OME-Zarr metadata."""
    out = setup.output
    lay = out.layout
    yx = (lay.spatial[-2], lay.spatial[-1])
    default = AxesInfo.default(len(out.shape), yx, lay.channel_axis)
    given = AxesInfo.from_dict({"names": default.names, **ome}) if ome else (
        read_axes(source) if isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".zarr"
        else None)
    if given is None:
        return default
    n_in = len(setup.image.shape)
    if len(given.names) == len(out.shape):
        return given
    if len(given.names) == n_in and len(out.shape) == n_in + 1:  # a channel axis added last (colorize)
        return AxesInfo([*given.names, "c"], [*given.scale, 1.0], [*given.translation, 0.0], given.units)
    return default


def local_blocks_iter(setup: Setup, target: ZarrTarget, todo: list[Block], run: Runner | None, cancel: Any
                       ) -> Generator[Progress, None, bool]:
    """The blocks one after the other in this process; returns whether any was written."""
    run = run or setup.runner(cancel)
    total = sum(block_tiles(setup, b) for b in todo)
    done = 0
    ranges: dict[tuple[int, ...], list[Ranges]] = {}
    wrote = False
    yield Progress(0, total, "starting")
    for b in todo:
        if b.stack not in ranges:
            ranges.clear()  # one plane's at a time (blocks come plane by plane)
            ranges[b.stack] = setup.ranges(b.stack)
        for tiles in setup.predict_region(b.stack, run, target, b.region, ranges[b.stack]):
            done += tiles
            yield Progress(done, total)
        target.mark_done(b.index)
        wrote = True
    return wrote
