"""Overlapping tiles aligned to the network's size multiple, blended without seams.

A plane is cut into tiles whose sides are multiples of the U-Net's ``2**levels``; neighbours
overlap and are blended with smooth weights. Tiles are processed one row of tiles at a
time and finished rows are handed on at once, so memory stays bounded by one band of
``tile`` rows whatever the image size.
"""

from __future__ import annotations

import itertools
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
        Image rows (along the first tiled axis: Y of an image, Z of a volume) of `rows`
        (meaningless when `rows` is None).
    rows : ndarray or None
        Output rows ``y0:y1`` in image coordinates, (C, y1-y0, ...rest), that no later tile
        touches: final, to be written out. None when this batch finished no rows.
    """

    tiles: int
    y0: int = 0
    y1: int = 0
    rows: np.ndarray | None = None


def iter_bands(
    plans: tuple[AxisPlan, ...],
    read: Callable[..., np.ndarray],
    run: Callable[[np.ndarray], np.ndarray],
    out_channels: int,
    batch_size: int = 4,
    region: tuple[tuple[int, int], ...] | None = None,
) -> Iterator[Band]:
    """Run `run` over all tiles, yielding a :class:`Band` after every batch (a point to stop at).

    Tiles form bands along the first axis (rows of an image, slabs of a volume); a band's
    output is handed on as soon as no later tile touches it, so memory stays bounded by one
    band of tiles whatever the image size.

    With a `region` ((start, end) per axis, image coordinates) only the tiles that touch it
    run and only its pixels are handed on (`rows` cropped to the region's other axes): the
    same tiles of the same grid, blended with the same weights in the same order, so a
    region's pixels are those of the whole image's prediction. Blocks of a large output are
    computed this way, each on its own (:mod:`~napari_pix2pix.engine.predict.blocks`).

    Parameters
    ----------
    plans : tuple of AxisPlan
        Tiling of every spatial axis: (y, x), or (z, y, x).
    read : callable
        ``read(a0, a1, b0, b1, ...)``, start and end per axis, returns the network input
        (C, a1-a0, b1-b0, ...) of the padded image (padded coordinates).
    run : callable
        Maps a batch (B, C, *tile) of float32 to (B, out_channels, *tile).
    out_channels : int
        Channels of the output.
    batch_size : int
        Tiles per call of `run`.
    """
    first, rest = plans[0], plans[1:]
    if region is None:
        region = tuple((0, p.size) for p in plans)
    if len(region) != len(plans) or any(not 0 <= a < b <= p.size for (a, b), p in zip(region, plans, strict=False)):
        raise ValueError(f"region {region} is not inside the image {tuple(p.size for p in plans)}")
    touching = [_touching(p, a, b) for p, (a, b) in zip(plans, region, strict=True)]  # each axis's tiles
    weight = blend_window(first)
    for plan in rest:  # the product of the axes' windows
        weight = np.multiply.outer(weight, blend_window(plan))
    lows = tuple(s[0] for s in touching[1:])  # padded coordinate of the accumulators' first pixel (0: whole)
    spans = tuple(s[-1] + p.tile - lo for s, p, lo in zip(touching[1:], rest, lows, strict=True))
    acc = np.zeros((out_channels, first.tile, *spans), np.float32)
    wsum = np.zeros((first.tile, *spans), np.float32)
    base = touching[0][0]
    finished: Band | None = None  # rows finished by the previous band, handed on with the next batch
    rest_starts = list(itertools.product(*touching[1:]))
    for r, y in enumerate(touching[0]):
        if r > 0:  # rows before this band are final: hand them on, shift the band
            shift = y - base
            finished = _finished(acc[:, :shift], wsum[:shift], base, plans, region, lows)
            for i in range(first.tile - shift):  # plane by plane: no copy of the whole band
                acc[:, i] = acc[:, i + shift]
                wsum[i] = wsum[i + shift]
            acc[:, -shift:] = 0
            wsum[-shift:] = 0
            base = y
        for b0 in range(0, len(rest_starts), batch_size):
            chunk = rest_starts[b0 : b0 + batch_size]
            batch = np.stack([read(y, y + first.tile, *_bounds(c, rest)) for c in chunk])
            pred = run(batch)
            for c, p in zip(chunk, pred, strict=True):
                box = tuple(slice(s - lo, s - lo + plan.tile) for s, lo, plan in zip(c, lows, rest, strict=True))
                acc[(slice(None), slice(None), *box)] += p * weight
                wsum[(slice(None), *box)] += weight
            if finished is not None:
                yield Band(len(chunk), finished.y0, finished.y1, finished.rows)
                finished = None
            else:
                yield Band(len(chunk))
    last = _finished(acc, wsum, base, plans, region, lows)
    if last is not None:
        yield last


def _touching(plan: AxisPlan, a: int, b: int) -> tuple[int, ...]:
    """The tile starts of one axis whose tiles touch image pixels [a, b)."""
    return tuple(s for s in plan.starts if s < b + plan.pad and s + plan.tile > a + plan.pad)


def _bounds(starts: tuple[int, ...], plans: tuple[AxisPlan, ...]) -> list[int]:
    """(start, end) of a tile along each axis, flattened."""
    out: list[int] = []
    for s, plan in zip(starts, plans, strict=True):
        out += [s, s + plan.tile]
    return out


def _finished(acc: np.ndarray, wsum: np.ndarray, base: int, plans: tuple[AxisPlan, ...],
              region: tuple[tuple[int, int], ...], lows: tuple[int, ...]) -> Band | None:
    """Normalise accumulated rows and crop them to the region (padded -> image coordinates); None if none are left."""
    first, rest = plans[0], plans[1:]
    y0, y1 = base - first.pad, base - first.pad + acc.shape[1]
    a, b = max(y0, region[0][0]), min(y1, region[0][1])
    if b <= a:
        return None
    crop = tuple(slice(p.pad + r0 - lo, p.pad + r1 - lo)
                 for p, (r0, r1), lo in zip(rest, region[1:], lows, strict=True))
    rows = acc[(slice(None), slice(a - y0, b - y0), *crop)] / wsum[(slice(a - y0, b - y0), *crop)]
    return Band(0, a, b, rows)


def n_tiles(plans: tuple[AxisPlan, ...]) -> int:
    """Number of tiles in a plan."""
    return int(np.prod([len(p.starts) for p in plans]))


# ---------------------------------------------------------------------- 2.5D: a plane's neighbours
def reflect(i: int, n: int) -> int:
    """Index `i` reflected into [0, n) (-1 -> 1, n -> n - 2), as the planes beyond a stack's ends."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return period - i if i >= n else i


def context_order(z: int, n: int, k: int) -> list[int]:
    """The planes a 2.5D network sees for plane `z` of `n`, for training and prediction alike.

    z itself first (a residual generator's base), then z-k ... z-1, z+1 ... z+k, reflected at the
    first and last planes.
    """
    return [z] + [reflect(z + d, n) for d in range(-k, k + 1) if d]

