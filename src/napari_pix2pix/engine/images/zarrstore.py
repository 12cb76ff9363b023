"""Results larger than memory: a zarr store written beside its destination and moved into place.

The store is an OME-Zarr-style multiscale group: the full-resolution result at ``"0"`` and,
when asked, a pyramid (``"1"``, ``"2"``, ... each half the size in Y and X) that napari shows
as a lazy, multiscale layer. ``multiscales`` attributes name the levels (NGFF 0.4 layout),
so OME-Zarr readers and :func:`napari_pix2pix.engine.images.io.open_zarr` find the levels.
A prediction that fails or is cancelled leaves nothing at the destination (its temporary
store is removed); one that completes leaves a whole store.
"""

from __future__ import annotations

import itertools
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PYRAMID_MIN = 256  # the pyramid stops once Y or X would fall below this many pixels
CHUNK = 256  # Y and X of a chunk (Z: 16 for volumes; leading axes 1; channels whole)


class ZarrTarget:
    """The output array of a prediction, written at a temporary path and moved into place by :meth:`commit`.

    Parameters
    ----------
    path : Path
        The store to create (``*.zarr``); it must not exist.
    shape, dtype
        The full-resolution result.
    yx : tuple of int
        Axes of Y and X (the axes the pyramid halves).
    depth_axis : int, optional
        A volume's Z axis (chunked 16 deep).
    channel_axis : int, optional
        Kept whole in every chunk.
    pyramid : bool
        Also write downsampled levels on commit.
    """

    def __init__(self, path: Path, shape: Sequence[int], dtype: Any, yx: tuple[int, int], *,
                 depth_axis: int | None = None, channel_axis: int | None = None, pyramid: bool = False) -> None:
        import zarr

        if path.exists():
            raise FileExistsError(f"{path} exists; choose a new name for the output store (or delete it first)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.shape, self.dtype = path, tuple(int(s) for s in shape), np.dtype(dtype)
        self.yx, self.channel_axis, self.pyramid = yx, channel_axis, pyramid
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        chunks = [1] * len(self.shape)
        for a in yx:
            chunks[a] = min(CHUNK, self.shape[a])
        if depth_axis is not None:
            chunks[depth_axis] = min(16, self.shape[depth_axis])
        if channel_axis is not None:
            chunks[channel_axis] = self.shape[channel_axis]
        self.chunks = tuple(chunks)
        try:
            self.group = zarr.open_group(store=str(self.tmp), mode="w")
            self.array = zarr.open_array(store=str(self.tmp / "0"), mode="w", shape=self.shape, chunks=self.chunks,
                                         dtype=self.dtype)
        except BaseException:
            self.discard()
            raise

    def __setitem__(self, index: Any, value: Any) -> None:
        self.array[index] = value

    def commit(self) -> Any:
        """Write the pyramid (if asked) and the attributes, move the store into place; level 0, for reading."""
        import zarr

        levels = [self.shape]
        if self.pyramid:
            levels += _write_pyramid(self.tmp, self.array, self.yx, self.chunks)
        self.group.attrs["multiscales"] = [_multiscales(levels, self.yx, self.channel_axis, self.path.stem)]
        os.replace(self.tmp, self.path)
        return zarr.open_array(store=str(self.path / "0"), mode="r")

    def discard(self) -> None:
        """Remove the temporary store (a failed or cancelled prediction)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_levels(path: str | os.PathLike[str]) -> list[Any]:
    """Every level of a multiscale store written by :class:`ZarrTarget` (full resolution first), lazily."""
    import zarr

    group = zarr.open_group(store=str(path), mode="r")
    attrs: dict[str, Any] = dict(group.attrs)
    datasets: list[dict[str, Any]] = attrs["multiscales"][0]["datasets"]
    return [zarr.open_array(store=str(Path(path) / d["path"]), mode="r") for d in datasets]


def _write_pyramid(root: Path, level0: Any, yx: tuple[int, int], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Levels 1, 2, ... (2x2 means of the level above, in Y and X) until Y or X would fall below PYRAMID_MIN."""
    import zarr

    shapes: list[tuple[int, ...]] = []
    src = level0
    k = 1
    while min(src.shape[a] for a in yx) // 2 >= PYRAMID_MIN:
        shape = list(src.shape)
        for a in yx:
            shape[a] = -(-src.shape[a] // 2)
        dst = zarr.open_array(store=str(root / str(k)), mode="w", shape=tuple(shape), chunks=chunks, dtype=src.dtype)
        # blocks of one destination chunk row (2 x CHUNK source rows, all of X) and one chunk of every other axis
        steps = [2 * CHUNK if a == yx[0] else n if a == yx[1] else c
                 for a, (n, c) in enumerate(zip(src.shape, chunks, strict=True))]
        for starts in itertools.product(*(range(0, n, s) for n, s in zip(src.shape, steps, strict=True))):
            idx = tuple(slice(s0, s0 + s) for s0, s in zip(starts, steps, strict=True))
            block = np.asarray(src[idx])
            out_idx = list(idx)
            for a in yx:
                out_idx[a] = slice(starts[a] // 2, starts[a] // 2 + -(-block.shape[a] // 2))
            dst[tuple(out_idx)] = _halve(block, yx)
        shapes.append(tuple(shape))
        src, k = dst, k + 1
    return shapes


def _halve(block: np.ndarray, yx: tuple[int, int]) -> np.ndarray:
    """2x2 means in Y and X (an odd last row or column is averaged with itself), in the block's dtype."""
    x = block.astype(np.float32)
    for a in yx:
        if x.shape[a] % 2:
            edge = np.take(x, [-1], axis=a)
            x = np.concatenate([x, edge], axis=a)
        n = x.shape[a] // 2
        x = x.reshape(*x.shape[:a], n, 2, *x.shape[a + 1:]).mean(axis=a + 1)
    if block.dtype.kind in "ui":
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(block.dtype)
    if block.dtype.kind == "b":
        return x >= 0.5
    return x.astype(block.dtype)


def _multiscales(levels: list[tuple[int, ...]], yx: tuple[int, int], channel_axis: int | None,
                 name: str) -> dict[str, Any]:
    ndim = len(levels[0])
    others = [a for a in range(ndim) if a not in yx and a != channel_axis]
    names = {yx[0]: "y", yx[1]: "x"}
    if channel_axis is not None:
        names[channel_axis] = "c"
    for a, n in zip(others[::-1], ("z", "t", "u", "v"), strict=False):  # the axis before Y is Z (or the only one)
        names[a] = n
    axes = [{"name": names[a], "type": "space" if names[a] in "zyx" else "time" if names[a] == "t" else
             "channel" if names[a] == "c" else "other"} for a in range(ndim)]
    datasets = []
    for k, shape in enumerate(levels):
        scale = [levels[0][a] / shape[a] for a in range(ndim)]
        datasets.append({"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"version": "0.4", "name": name, "axes": axes, "datasets": datasets}
