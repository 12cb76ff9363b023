"""Results larger than memory: OME-Zarr stores written in blocks, recorded as they finish, resumable.

A prediction into ``result.zarr`` writes an OME-Zarr (NGFF 0.4, zarr format 2: the version
napari's ome-zarr reader, Fiji's MoBIE/BigDataViewer and most other viewers read) at a
partial path beside it, ``.result.zarr.partial``. Its blocks (see
:mod:`~napari_pix2pix.engine.predict.blocks`) are recorded inside the store as each one
finishes, so an interrupted prediction (Ctrl-C, a crash, a lost cluster) leaves a store that
``resume=True`` continues, computing only the missing blocks. When every block is done the
pyramid (if asked) is built from the finished result, the store is marked complete and moved
into place: ``result.zarr`` exists only whole.

The arrays are stored in NGFF's axis order (time, channel, then space: ``t c z y x``); a
result whose channels come last (RGB, Y X C) is stored as C Y X and read back through
:class:`Reordered`, in the result's own order, lazily.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

PYRAMID_MIN = 256  # the pyramid stops once Y or X would fall below this many pixels
CHUNK = 256  # Y and X of a chunk (Z: 16 for volumes; leading axes 1; channels whole)
DEPTH_CHUNK = 16
RECORD = "napari_pix2pix"  # the group attribute holding the prediction's record
DONE = "blocks_done"  # the array recording finished blocks (one chunk per block: no two writers share one)


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where the prediction into `path` is written until it is complete."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def _zarr_kwargs() -> dict[str, Any]:
    import zarr

    return {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}


def open_group(path: str | os.PathLike[str], mode: Literal["r", "r+", "a", "w", "w-"] = "r") -> Any:
    """A zarr group of format 2 (the format of NGFF 0.4)."""
    import zarr

    return zarr.open_group(store=str(path), mode=mode, **(_zarr_kwargs() if mode != "r" else {}))


def open_array(path: str | os.PathLike[str], mode: str = "r", **kwargs: Any) -> Any:
    """A zarr array (format 2 when created)."""
    import zarr

    return zarr.open_array(store=str(path), mode=mode, **(_zarr_kwargs() if mode in ("w", "w-") else {}), **kwargs)


class AxesInfo:
    """Names, types, units and the physical scale and offset of a result's axes (NGFF ``axes``).

    Built from the input's OME-Zarr metadata where there is one (:func:`read_axes`), else from
    the layout (the axis before Y is Z, the one before that T; channels ``c``).
    """

    def __init__(self, names: Sequence[str], scale: Sequence[float] | None = None,
                 translation: Sequence[float] | None = None, units: dict[str, str] | None = None) -> None:
        self.names = [str(n) for n in names]
        self.scale = [float(s) for s in scale] if scale is not None else [1.0] * len(self.names)
        self.translation = [float(t) for t in translation] if translation is not None else [0.0] * len(self.names)
        self.units = dict(units or {})
        if not len(self.names) == len(self.scale) == len(self.translation):
            raise ValueError("axes, scale and translation must have one entry per axis")

    @classmethod
    def default(cls, ndim: int, yx: tuple[int, int], channel_axis: int | None) -> AxesInfo:
        """Names for an array that brings none: y, x, c where given, then z, t, ... before them."""
        names = {yx[0]: "y", yx[1]: "x"}
        if channel_axis is not None:
            names[channel_axis] = "c"
        others = [a for a in range(ndim) if a not in names]
        for a, n in zip(others[::-1], ("z", "t", "u", "v"), strict=False):  # the axis before Y is Z (or the only one)
            names[a] = n
        return cls([names[a] for a in range(ndim)])

    def to_dict(self) -> dict[str, Any]:
        """The axes as stored in the prediction record (JSON)."""
        return {"names": self.names, "scale": self.scale, "translation": self.translation, "units": self.units}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AxesInfo:
        """The axes of a stored record (the inverse of `to_dict`)."""
        return cls(d["names"], d.get("scale"), d.get("translation"), d.get("units"))


def ngff_order(names: Sequence[str]) -> list[int]:
    """The stored order of axes named `names`: NGFF's t, c, then z y x (other axes first, as they come)."""
    rank = {"t": 1, "c": 2, "z": 3, "y": 4, "x": 5}
    return sorted(range(len(names)), key=lambda a: (rank.get(names[a], 0), a))


def read_axes(path: str | os.PathLike[str]) -> AxesInfo | None:
    """The axes, scale and translation of an OME-Zarr's first level (NGFF 0.4 or 0.5); None if it has none."""
    try:
        group = open_group(path)
    except Exception:  # noqa: BLE001 - an array, not a group: no OME metadata
        return None
    attrs: dict[str, Any] = dict(group.attrs)
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not ms or "axes" not in ms[0]:
        return None
    axes = ms[0]["axes"]
    names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    units = {a["name"]: a["unit"] for a in axes if isinstance(a, dict) and a.get("unit")}
    scale = translation = None
    for t in ms[0]["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = t.get("scale")
        elif t.get("type") == "translation":
            translation = t.get("translation")
    return AxesInfo(names, scale, translation, units)


class Reordered:
    """A stored array read in another axis order, lazily (``__getitem__`` reads only what is asked)."""

    def __init__(self, stored: Any, order: Sequence[int]) -> None:
        self.stored, self.order = stored, list(order)  # order[k]: the logical axis stored at position k
        self.inverse = [self.order.index(a) for a in range(len(self.order))]
        self.shape = tuple(int(stored.shape[self.inverse[a]]) for a in range(len(self.order)))
        self.dtype = np.dtype(stored.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(stored.chunks[self.inverse[a]]) for a in range(len(self.order)))

    def __getitem__(self, index: Any) -> np.ndarray:
        idx = _full_index(index, self.ndim)
        block = np.asarray(self.stored[tuple(idx[a] for a in self.order)])
        kept = [a for a in self.order if not isinstance(idx[a], (int, np.integer))]  # stored order of what is left
        return np.transpose(block, [kept.index(a) for a in sorted(kept)])

    def __setitem__(self, index: Any, value: Any) -> None:
        idx = _full_index(index, self.ndim)
        kept = [a for a in range(self.ndim) if not isinstance(idx[a], (int, np.integer))]
        stored_kept = [a for a in self.order if a in kept]
        value = np.asarray(value)
        if value.ndim == len(kept):
            value = np.transpose(value, [kept.index(a) for a in stored_kept])
        self.stored[tuple(idx[a] for a in self.order)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[tuple(slice(None) for _ in range(self.ndim))]
        return out.astype(dtype) if dtype is not None else out

    def __len__(self) -> int:
        return self.shape[0]


def _full_index(index: Any, ndim: int) -> list[Any]:
    idx = list(index) if isinstance(index, tuple) else [index]
    if any(i is Ellipsis for i in idx):
        k = idx.index(Ellipsis)
        idx = idx[:k] + [slice(None)] * (ndim - len(idx) + 1) + idx[k + 1:]
    return idx + [slice(None)] * (ndim - len(idx))


def _view(stored: Any, order: list[int]) -> Any:
    return stored if order == sorted(order) else Reordered(stored, order)


class ZarrTarget:
    """The output of a prediction into a zarr store: written at :func:`partial_path`, moved into place whole.

    Parameters
    ----------
    path : Path
        The store to create (``*.zarr``); it must not exist.
    shape, dtype
        The full-resolution result (in the result's own axis order).
    yx : tuple of int
        Axes of Y and X (the axes the pyramid halves).
    depth_axis : int, optional
        A volume's Z axis (chunked 16 deep).
    channel_axis : int, optional
        Kept whole in every chunk.
    pyramid : bool
        Also write downsampled levels on commit.
    record : dict, optional
        What the prediction is (model, input, options, blocks): stored in the group; a resumed
        prediction must have the same.
    blocks : int
        The number of blocks whose completion is recorded.
    resume : bool
        Continue an interrupted prediction into `path` (its partial store, with the same
        record). Without it, an interrupted prediction left there is an error (nothing is lost).
    axes : AxesInfo, optional
        Names, scale and translation of the axes (default: from the layout, unit scale).
    """

    def __init__(self, path: Path, shape: Sequence[int], dtype: Any, yx: tuple[int, int], *,
                 depth_axis: int | None = None, channel_axis: int | None = None, pyramid: bool = False,
                 record: dict[str, Any] | None = None, blocks: int = 1, resume: bool = False,
                 axes: AxesInfo | None = None) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        self.yx, self.channel_axis, self.pyramid = yx, channel_axis, pyramid
        self.tmp = partial_path(self.path)
        self.axes = axes or AxesInfo.default(len(self.shape), yx, channel_axis)
        if len(self.axes.names) != len(self.shape):
            raise ValueError(f"the result has {len(self.shape)} axes; the axes given name {len(self.axes.names)}")
        self.order = ngff_order(self.axes.names)
        self.record: dict[str, Any] = {"prediction": record or {}, "blocks": int(blocks), "complete": False,
                                       "order": self.order}
        chunks = [1] * len(self.shape)
        for a in yx:
            chunks[a] = min(CHUNK, self.shape[a])
        if depth_axis is not None:
            chunks[depth_axis] = min(DEPTH_CHUNK, self.shape[depth_axis])
        if channel_axis is not None:
            chunks[channel_axis] = self.shape[channel_axis]
        self.chunks = tuple(chunks)
        self.resumed = False
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; choose a new name for the output store (or delete it first)")
        if self.tmp.exists():
            self._reopen(resume)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.group = open_group(self.tmp, mode="w")
            stored = open_array(self.tmp / "0", mode="w", shape=self._stored(self.shape),
                                chunks=self._stored(self.chunks), dtype=self.dtype)
            self.done = open_array(self.tmp / DONE, mode="w", shape=(max(int(blocks), 1),), chunks=(1,),
                                   dtype=np.uint8, fill_value=0)
            self.group.attrs[RECORD] = _plain(self.record)
        except BaseException:
            self.discard()
            raise
        self.array = _view(stored, self.order)

    def _stored(self, values: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(values[a]) for a in self.order)

    def _reopen(self, resume: bool) -> None:
        if not resume:
            raise FileExistsError(
                f"an interrupted prediction into {self.path.name} is at {self.tmp}: continue it with resume=True "
                "(command line: --resume), or delete it to start again")
        self.group = open_group(self.tmp, mode="r+")
        found = dict(self.group.attrs).get(RECORD, {})
        if _plain(found.get("prediction")) != _plain(self.record["prediction"]) or \
                found.get("blocks") != self.record["blocks"]:
            diff = _differences(found.get("prediction") or {}, self.record["prediction"])
            raise ValueError(f"the interrupted prediction at {self.tmp} was made differently ({diff}): it cannot be "
                             "continued with these settings; use its settings, or delete it to start again")
        stored = open_array(self.tmp / "0", mode="r+")
        if tuple(stored.shape) != self._stored(self.shape) or np.dtype(stored.dtype) != self.dtype:
            raise ValueError(f"the interrupted prediction at {self.tmp} holds another shape or dtype; delete it")
        self.done = open_array(self.tmp / DONE, mode="r+")
        self.array = _view(stored, self.order)
        self.resumed = True

    def __setitem__(self, index: Any, value: Any) -> None:
        self.array[index] = value

    def done_blocks(self) -> set[int]:
        """The blocks recorded as finished."""
        return {int(i) for i in np.flatnonzero(np.asarray(self.done[:]))}

    def mark_done(self, block: int) -> None:
        """Record block `block` as finished (after its data are written)."""
        self.done[block] = 1

    def commit(self) -> Any:
        """Write the pyramid (if asked) and the metadata, mark the store complete and move it into place.

        Returns level 0, for reading (in the result's axis order).
        """
        levels = [self.shape]
        stored0 = open_array(self.tmp / "0", mode="r")
        if self.pyramid:
            stored_yx = (self.order.index(self.yx[0]), self.order.index(self.yx[1]))
            levels += [tuple(s[self.order.index(a)] for a in range(len(self.shape)))
                       for s in _write_pyramid(self.tmp, stored0, stored_yx, self._stored(self.chunks))]
        self.group.attrs["multiscales"] = [_multiscales(levels, self.axes, self.order, self.path.stem)]
        self.record["complete"] = True
        self.group.attrs[RECORD] = _plain(self.record)
        os.replace(self.tmp, self.path)
        return _view(open_array(self.path / "0", mode="r"), self.order)

    def discard(self) -> None:
        """Remove the partial store (nothing of it is worth keeping: nothing was computed yet)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_partial(tmp: str | os.PathLike[str]) -> tuple[Any, Any]:
    """(the result array in its own axis order, the block record) of a partial store: what a worker writes to."""
    record = dict(open_group(tmp).attrs)[RECORD]
    return _view(open_array(Path(tmp) / "0", mode="r+"), list(record["order"])), open_array(Path(tmp) / DONE,
                                                                                              mode="r+")


def store_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What a store (complete, or a partial one) says of its prediction; None if it is not one of ours."""
    try:
        return dict(open_group(path).attrs).get(RECORD)
    except Exception:  # noqa: BLE001 - not a zarr group
        return None


def open_levels(path: str | os.PathLike[str]) -> list[Any]:
    """Every level of a multiscale store (full resolution first), lazily, in the result's axis order."""
    group = open_group(path)
    attrs: dict[str, Any] = dict(group.attrs)
    ms = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    if not ms:
        raise ValueError(f"{path} is not a multiscale (OME-Zarr) store: it has no 'multiscales' metadata")
    datasets: list[dict[str, Any]] = ms[0]["datasets"]
    order = ms[0].get("napari_pix2pix_order")
    arrays = [open_array(Path(path) / d["path"], mode="r") for d in datasets]
    return [_view(a, list(order)) if order else a for a in arrays]


def _write_pyramid(root: Path, level0: Any, yx: tuple[int, int], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Levels 1, 2, ... (2x2 means of the level above, in Y and X) until Y or X would fall below PYRAMID_MIN."""
    shapes: list[tuple[int, ...]] = []
    src = level0
    k = 1
    while min(src.shape[a] for a in yx) // 2 >= PYRAMID_MIN:
        shape = list(src.shape)
        for a in yx:
            shape[a] = -(-src.shape[a] // 2)
        dst = open_array(root / str(k), mode="w", shape=tuple(shape), chunks=chunks, dtype=src.dtype)
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


def _multiscales(levels: list[tuple[int, ...]], axes: AxesInfo, order: list[int], name: str) -> dict[str, Any]:
    """NGFF 0.4 multiscales of the stored (reordered) levels; the result's own order is kept beside it."""
    types = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    stored_axes = []
    for a in order:
        n = axes.names[a]
        entry = {"name": n, "type": types.get(n, "other")}
        if n in axes.units:
            entry["unit"] = axes.units[n]
        stored_axes.append(entry)
    datasets = []
    for k, shape in enumerate(levels):
        scale = [axes.scale[a] * levels[0][a] / shape[a] for a in order]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        # a level's pixel centres: offset by half its pixel minus half the full-resolution pixel
        shift = [axes.translation[a] + 0.5 * (axes.scale[a] * levels[0][a] / shape[a] - axes.scale[a]) for a in order]
        if any(shift):
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    out: dict[str, Any] = {"version": "0.4", "name": name, "axes": stored_axes, "datasets": datasets}
    if order != sorted(order):
        out["napari_pix2pix_order"] = order  # stored axis k is the result's axis order[k]
    return out


def _plain(x: Any) -> Any:
    """JSON-plain form (tuples to lists, numpy scalars to numbers): what zarr attributes hold."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _differences(found: dict[str, Any], given: dict[str, Any]) -> str:
    keys = sorted(set(found) | set(given))
    diffs = [f"{k}: {found.get(k)!r} there, {given.get(k)!r} now" for k in keys
             if _plain(found.get(k)) != _plain(given.get(k))]
    return "; ".join(diffs[:3]) or "another block layout"
