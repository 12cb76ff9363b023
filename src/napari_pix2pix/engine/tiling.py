"""Overlapping tiles aligned to the network's size multiple, blended without seams.

A plane is cut into tiles whose sides are multiples of the U-Net's ``2**levels``; neighbours
overlap and are blended with smooth weights. Tiles are processed one row of tiles at a
time and finished rows are handed on at once, so memory stays bounded by one band of
``tile`` rows whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one axis of ``size`` pixels.

    The axis is reflect-padded to ``padded`` (the next multiple of the network's size
    multiple), ``pad`` pixels before and the rest after, exactly as an untiled prediction
    pads it. Tiles of ``tile`` pixels start at ``starts`` in padded coordinates, all on
    multiples of the network's size multiple: a strided network is not shift-invariant,
    so tiles on the same grid as the whole image give the same result as the whole image.
    """

    size: int
    tile: int
    starts: tuple[int, ...]
    pad: int
    padded: int

    @property
    def overlap(self) -> int:
        """Smallest overlap between neighbouring tiles (0 for a single tile)."""
        if len(self.starts) < 2:
            return 0
        return min(self.tile - (b - a) for a, b in zip(self.starts, self.starts[1:], strict=False))


def _starts(padded: int, tile: int, multiple: int, min_overlap: int) -> tuple[int, ...]:
    """Grid-aligned tile starts covering [0, padded) with overlaps of at least `min_overlap`."""
    n = max(2, math.ceil((padded - min_overlap) / (tile - min_overlap)))
    while True:
        steps = (padded - tile) // multiple
        starts = tuple(int(round(i * steps / (n - 1))) * multiple for i in range(n))
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        if all(tile - g >= min_overlap for g in gaps) or n > padded // multiple:
            return tuple(sorted(set(starts)))
        n += 1


def plan_axis(size: int, multiple: int, max_tile: int, min_overlap: int) -> AxisPlan:
    """Plan the tiles of one axis, processing the fewest pixels.

    Tiles are a multiple of `multiple`, at most `max_tile`, and neighbours overlap by at
    least `min_overlap` (capped at a quarter of the tile).
    """
    if size < 1:
        raise ValueError(f"cannot tile an axis of size {size}")
    padded = math.ceil(size / multiple) * multiple
    pad = (padded - size) // 2
    max_tile = max(multiple, (max_tile // multiple) * multiple)
    min_overlap = min(min_overlap, max_tile // 4)  # a small tile size wins over a large overlap
    if padded <= max_tile:  # one tile
        return AxisPlan(size, padded, (0,), pad, padded)
    best: tuple[int, int, tuple[int, ...]] | None = None  # (cost, tile, starts)
    for tile in range(multiple, max_tile + 1, multiple):
        if tile >= padded or tile - min_overlap < multiple:
            continue
        starts = _starts(padded, tile, multiple, min_overlap)
        cost = len(starts) * tile
        if best is None or cost < best[0] or (cost == best[0] and tile > best[1]):
            best = (cost, tile, starts)
    if best is None:
        raise ValueError(
            f"cannot tile {size} pixels with tiles of at most {max_tile} and overlap {min_overlap} "
            f"(network size multiple {multiple}); use a larger tile size or a smaller overlap"
        )
    return AxisPlan(size, best[1], best[2], pad, padded)


def blend_window(plan: AxisPlan) -> np.ndarray:
    """1-D blending weights of one tile: a smooth sin² ramp over the overlap, never zero."""
    ramp = max(plan.overlap, 1)
    i = np.arange(plan.tile, dtype=np.float64) + 0.5
    t = np.clip(np.minimum(i, plan.tile - i) / ramp, 0.0, 1.0)
    return np.maximum(np.sin(0.5 * np.pi * t) ** 2, 1e-4).astype(np.float32)


@dataclass(frozen=True)
class Band:
    """What :func:`iter_bands` yields after each batch of tiles.

    Attributes
    ----------
    tiles : int
        Tiles just processed (progress; 0 for the last item, which only hands on rows).
    y0, y1 : int
        Image rows of `rows` (meaningless when `rows` is None).
    rows : ndarray or None
        Output rows ``y0:y1`` in image coordinates, (C, y1-y0, W), that no later tile
        touches: final, to be written out. None when this batch finished no rows.
    """

    tiles: int
    y0: int = 0
    y1: int = 0
    rows: np.ndarray | None = None


def iter_bands(
    plans: tuple[AxisPlan, AxisPlan],
    read: Callable[[int, int, int, int], np.ndarray],
    run: Callable[[np.ndarray], np.ndarray],
    out_channels: int,
    batch_size: int = 4,
) -> Iterator[Band]:
    """Run `run` over all tiles, yielding a :class:`Band` after every batch (a point to stop at).

    Rows are handed on as soon as no later tile touches them, so memory stays bounded by one
    band of tile rows.

    Parameters
    ----------
    plans : (AxisPlan, AxisPlan)
        Tiling of the y and x axes.
    read : callable
        ``read(y0, y1, x0, x1)`` returns the network input (C, y1-y0, x1-x0) of the padded
        plane (padded coordinates; the caller pads when an axis is shorter than a tile).
    run : callable
        Maps a batch (B, C, ty, tx) of float32 to (B, out_channels, ty, tx).
    out_channels : int
        Channels of the output.
    batch_size : int
        Tiles per call of `run`.
    """
    py, px = plans
    wy, wx = blend_window(py), blend_window(px)
    width = px.padded
    acc = np.zeros((out_channels, py.tile, width), np.float32)
    wsum = np.zeros((py.tile, width), np.float32)
    weight = wy[:, None] * wx[None, :]
    base = py.starts[0]
    finished: Band | None = None  # rows finished by the previous tile row, handed on with the next batch
    for r, y in enumerate(py.starts):
        if r > 0:  # rows above this tile row are final: hand them on, shift the band
            shift = y - base
            finished = _finished(acc[:, :shift], wsum[:shift], base, py, px)
            acc[:, :-shift] = acc[:, shift:].copy()
            wsum[:-shift] = wsum[shift:].copy()
            acc[:, -shift:] = 0
            wsum[-shift:] = 0
            base = y
        xs = list(px.starts)
        for b0 in range(0, len(xs), batch_size):
            chunk = xs[b0 : b0 + batch_size]
            batch = np.stack([read(y, y + py.tile, x, x + px.tile) for x in chunk])
            pred = run(batch)
            for x, p in zip(chunk, pred, strict=True):
                acc[:, :, x : x + px.tile] += p * weight
                wsum[:, x : x + px.tile] += weight
            if finished is not None:
                yield Band(len(chunk), finished.y0, finished.y1, finished.rows)
                finished = None
            else:
                yield Band(len(chunk))
    last = _finished(acc, wsum, base, py, px)
    if last is not None:
        yield last


def _finished(acc: np.ndarray, wsum: np.ndarray, base: int, py: AxisPlan, px: AxisPlan) -> Band | None:
    """Normalise accumulated rows and crop the padding away (padded -> image coordinates); None if none are left."""
    y0, y1 = base - py.pad, base - py.pad + acc.shape[1]
    a, b = max(y0, 0), min(y1, py.size)
    if b <= a:
        return None
    rows = acc[:, a - y0 : b - y0, px.pad : px.pad + px.size] / wsum[a - y0 : b - y0, px.pad : px.pad + px.size]
    return Band(0, a, b, rows)


def n_tiles(plans: tuple[AxisPlan, AxisPlan]) -> int:
    """Number of tiles in a plan."""
    return len(plans[0].starts) * len(plans[1].starts)
