"""Tiled prediction of any image: dtypes, channels, stacks, masks, arrays larger than RAM.

The core is :func:`predict_iter`, a generator that yields :class:`Progress` after every
batch of tiles and returns the result; :func:`run_to_end` drains it for scripts, the napari
widgets run it in a worker thread and can stop it between any two batches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .device import resolve_device, resolve_precision
from .normalization import cast_to, from_network, plane_percentiles, safe_range, to_network
from .tiling import AxisPlan, iter_bands, n_tiles, plan_axis

if TYPE_CHECKING:
    from .model import Pix2PixModel

LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)  # as skimage.color.rgb2gray


class PredictionCancelled(RuntimeError):
    """Raised by :func:`run_to_end` when the `cancel` hook asks to stop."""


@dataclass(frozen=True)
class Progress:
    """Progress of a prediction: `done` of `total` tiles."""

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        """Share finished, 0 to 1."""
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class _Layout:
    """Where the axes of an image are."""

    ndim: int
    channel_axis: int | None

    @property
    def spatial(self) -> tuple[int, int]:
        axes = [a for a in range(self.ndim) if a != self.channel_axis]
        return axes[-2], axes[-1]

    @property
    def stack(self) -> tuple[int, ...]:
        return tuple(a for a in range(self.ndim) if a != self.channel_axis and a not in self.spatial)

    def index(self, stack_idx: tuple[int, ...], ch: Any, ys: slice, xs: slice) -> tuple[Any, ...]:
        idx: list[Any] = [slice(None)] * self.ndim
        for a, i in zip(self.stack, stack_idx, strict=True):
            idx[a] = i
        if self.channel_axis is not None:
            idx[self.channel_axis] = ch
        y, x = self.spatial
        idx[y], idx[x] = ys, xs
        return tuple(idx)

    def to_cyx(self, block: np.ndarray) -> np.ndarray:
        """Reorder an indexed block (remaining axes in original order) to (C, y, x)."""
        if self.channel_axis is None:
            return block[None]
        kept = [self.channel_axis, *self.spatial]
        order = sorted(kept)
        return np.transpose(block, [order.index(a) for a in kept])

    def from_cyx(self, block: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_cyx`."""
        if self.channel_axis is None:
            return block[0]
        kept = [self.channel_axis, *self.spatial]
        order = sorted(kept)
        return np.transpose(block, [kept.index(a) for a in order])


def _check_image(image: Any, channel_axis: int | None) -> tuple[tuple[int, ...], np.dtype, int | None]:
    shape = tuple(int(s) for s in getattr(image, "shape", ()))
    if not shape:
        raise TypeError(
            f"image must be an array (numpy, dask, zarr, memmap), got {type(image).__name__}"
        )
    dtype = np.dtype(getattr(image, "dtype", np.float32))
    if dtype.kind not in "uifb":
        raise TypeError(f"image dtype {dtype} is not numeric; convert it to an integer or float array")
    if 0 in shape:
        raise ValueError(f"image is empty (shape {shape})")
    ndim = len(shape)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for an image with {ndim} axes")
        channel_axis = channel_axis % ndim
    if ndim - (channel_axis is not None) < 2:
        raise ValueError(
            f"image of shape {shape} has fewer than 2 spatial axes"
            + (f" besides channel_axis={channel_axis}" if channel_axis is not None else "")
        )
    return shape, dtype, channel_axis


def _read_padded(
    get: Callable[[slice, slice], np.ndarray], py: AxisPlan, px: AxisPlan, y0: int, y1: int, x0: int, x1: int
) -> np.ndarray:
    """Read padded-coordinate rectangle [y0:y1, x0:x1] as (C, h, w), reflect-padding the image."""
    iy0, iy1, ix0, ix1 = y0 - py.pad, y1 - py.pad, x0 - px.pad, x1 - px.pad
    cy0, cy1, cx0, cx1 = max(iy0, 0), min(iy1, py.size), max(ix0, 0), min(ix1, px.size)
    block = get(slice(cy0, cy1), slice(cx0, cx1))
    pads = [(cy0 - iy0, iy1 - cy1), (cx0 - ix0, ix1 - cx1)]
    if any(p for pair in pads for p in pair):
        widths = [(0, 0)] * (block.ndim - 2) + pads
        mode = "reflect" if min(block.shape[-2:]) > 1 else "edge"
        block = np.pad(block, widths, mode=mode)  # type: ignore[call-overload]
    return block


def _jobs(task: str, image_c: int, k: int, out_k: int, channel_axis: int | None) -> list[tuple[Any, bool, Any]]:
    """Channel jobs (channels read, reduce to gray, channels written) and checks."""
    where = f"along channel_axis={channel_axis}" if channel_axis is not None else "(no channel_axis)"
    if task == "colorize":
        if image_c == 1:
            return [(slice(None), False, slice(None))]
        if image_c in (3, 4):
            return [(slice(0, 3), True, slice(None))]
        raise ValueError(f"colorize takes a grayscale or RGB image; this one has {image_c} channels {where}")
    if image_c == k:
        return [(slice(None), False, slice(None))]
    if k == 1 and out_k == 1:  # apply a single-channel model to each channel
        return [(slice(c, c + 1), False, slice(c, c + 1)) for c in range(image_c)]
    raise ValueError(
        f"the model takes {k}-channel images but this image has {image_c} channel(s) {where}; "
        "pass channel_axis= for multi-channel images or choose a model trained for this many channels"
    )


ACTIVATION_BUDGET = 512 * 2**20  # bytes of activations per forward pass when tiles/batch are automatic
MAX_AUTO_TILE = 2048  # automatic tiles stay at most this large: progress and cancel stay responsive


def activation_bytes(cfg: Any, ty: int, tx: int, itemsize: int = 4) -> int:
    """Estimated activation memory of one (ty, tx) tile in a forward pass.

    The skip tensors of every level plus the largest decoder concatenation, twice (input and
    output of a layer), at `itemsize` bytes per value (measured: 8192² with ``unet_256`` in
    bf16 and 2048-px tiles peaked at 1.0 GB above idle, this estimate says 0.79 GB for the net).
    """
    w = cfg.widths()
    skips = sum(c * (ty >> (i + 1)) * (tx >> (i + 1)) for i, c in enumerate(w))
    top = 2 * w[0] * (ty >> 1) * (tx >> 1)
    if getattr(cfg, "full_res_convs", 0):  # the stem's features are kept; the tail concatenates two
        skips += cfg.ngf * ty * tx
        top = max(top, 2 * cfg.ngf * ty * tx)
    return itemsize * (skips + 2 * top)


def auto_tile_size(cfg: Any, itemsize: int = 4, budget: int = ACTIVATION_BUDGET, limit: int = MAX_AUTO_TILE) -> int:
    """The largest square tile (a multiple of the network's size multiple) within `budget`.

    Large tiles waste less compute on overlaps: tiles start on the network's size grid, so
    neighbours overlap by at least one size multiple (256 px for ``unet_256``).
    """
    m = cfg.multiple
    tile = max(m, limit // m * m)
    while tile > m and activation_bytes(cfg, tile, tile, itemsize) > budget:
        tile -= m
    return tile


def auto_batch_size(cfg: Any, ty: int, tx: int, limit: int = 4, budget: int = ACTIVATION_BUDGET,
                    itemsize: int = 4) -> int:
    """Tiles per forward pass so that activations stay within `budget` (at most `limit`).

    (Larger batches fragmented memory: 5.3 GB peak on an 8192² image with 4 tiles of 1024².)
    """
    return int(max(1, min(limit, budget // max(activation_bytes(cfg, ty, tx, itemsize), 1))))


def predict_iter(
    model: Pix2PixModel,
    image: Any,
    mask: Any = None,
    *,
    channel_axis: int | None = None,
    tile_size: int | str | None = "auto",
    overlap: int = 64,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
    out: Any = None,
    mc_dropout: bool = False,
    augment: int = 0,
    output_dtype: Any = None,
) -> Generator[Progress, None, Any]:
    """Predict `image` tile by tile, yielding :class:`Progress`; returns the output array.

    Parameters are those of :meth:`Pix2PixModel.predict`; `mc_dropout` keeps dropout on
    and `augment` (0-7) applies that flip/rotation of the dihedral group to each tile and
    undoes it on the output (both used for uncertainty estimates); `output_dtype`
    overrides the output dtype (default: the input's).
    """
    task = model.task.name
    shape, dtype, channel_axis = _check_image(image, channel_axis)
    layout = _Layout(len(shape), channel_axis)
    ys_axis, xs_axis = layout.spatial
    H, W = shape[ys_axis], shape[xs_axis]
    stack_shape = tuple(shape[a] for a in layout.stack)
    image_c = shape[channel_axis] if channel_axis is not None else 1
    cfg = model.config
    k = model.task.image_channels(cfg.in_channels)
    jobs = _jobs(task, image_c, k, cfg.out_channels, channel_axis)
    out_c = cfg.out_channels * len(jobs) if len(jobs) > 1 else cfg.out_channels

    # mask: (H, W) for every plane, or the image's shape without channels
    mask_arr = None
    if task == "inpaint":
        if mask is None:
            data = np.asarray(image)
            if dtype.kind == "f" and not np.isfinite(data).all():
                finite = np.isfinite(data)
                mask_arr = ~(finite if channel_axis is None else finite.all(axis=channel_axis))
            else:
                raise ValueError(
                    "inpaint needs a mask: an array of the image's shape (or (Y, X)) that is non-zero "
                    "where pixels are to be filled (in napari: a Labels or Shapes layer)"
                )
        else:
            mask_arr = mask
        m_shape = tuple(getattr(mask_arr, "shape", ()))
        nochan = tuple(s for a, s in enumerate(shape) if a != channel_axis)
        if m_shape not in (nochan, (H, W)):
            raise ValueError(
                f"mask shape {m_shape} does not match the image: expected {nochan} or {(H, W)} "
                f"(image shape {shape}, channel_axis={channel_axis})"
            )
    elif mask is not None:
        raise ValueError(f"a mask is only used by inpaint models; this model's task is {task!r}")

    # output array and its layout
    if task == "colorize" and channel_axis is None:
        out_shape, out_layout = (*shape, 3), _Layout(len(shape) + 1, len(shape))
    elif channel_axis is None and out_c > 1:
        out_shape, out_layout = (*shape, out_c), _Layout(len(shape) + 1, len(shape))
    elif channel_axis is not None:
        out_shape = tuple(out_c if a == channel_axis else s for a, s in enumerate(shape))
        out_layout = layout
    else:
        out_shape, out_layout = shape, layout
    # outputs on a learnt target scale (translate between modalities) may not fit the input's dtype
    out_dtype = np.dtype(np.float32) if dtype.kind == "b" or model.normalization.output == "fixed" else dtype
    if output_dtype is not None:
        out_dtype = np.dtype(output_dtype)
    if out is None:
        out = np.empty(out_shape, out_dtype)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; this prediction needs {out_shape}")

    multiple = cfg.multiple
    itemsize = resolve_precision(precision, resolve_device(device)).itemsize
    if tile_size == "auto":
        tile_size = auto_tile_size(cfg, itemsize, ACTIVATION_BUDGET, MAX_AUTO_TILE)
    elif tile_size is not None and not isinstance(tile_size, (int, np.integer)):
        raise ValueError(f"tile_size must be a number of pixels, 'auto' or None, got {tile_size!r}")
    size_limit = tile_size if tile_size is not None else 10**9
    if tile_size is not None and tile_size < multiple:
        raise ValueError(f"tile_size {tile_size} is smaller than this network's size multiple {multiple}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    plans = (
        plan_axis(H, multiple, size_limit, overlap),
        plan_axis(W, multiple, size_limit, overlap),
    )
    py, px = plans
    if batch_size is None:
        batch_size = auto_batch_size(cfg, py.tile, px.tile, itemsize=itemsize)
    n_planes = int(np.prod(stack_shape)) if stack_shape else 1
    total = n_planes * len(jobs) * n_tiles(plans)
    run = model._runner(device, precision, mc_dropout=mc_dropout, augment=augment)
    norm = model.normalization
    done = 0
    yield Progress(0, total, "starting")

    for stack_idx in np.ndindex(*stack_shape) if stack_shape else [()]:
        m_plane = None
        if mask_arr is not None:
            m_idx = stack_idx if tuple(mask_arr.shape) != (H, W) else ()
            m_plane = np.asarray(mask_arr[m_idx] if m_idx else mask_arr).astype(bool)
        for in_ch, to_gray, out_ch in jobs:

            def get(
                ys: slice, xs: slice, in_ch: Any = in_ch, to_gray: bool = to_gray, stack_idx: Any = stack_idx
            ) -> np.ndarray:
                block = layout.to_cyx(np.asarray(image[layout.index(stack_idx, in_ch, ys, xs)]))
                block = block.astype(np.float32, copy=False)
                if to_gray:
                    block = np.tensordot(LUMA, block[:3], axes=1)[None]
                return block

            def rows(y0: int, y1: int, get: Callable[[slice, slice], np.ndarray] = get) -> np.ndarray:
                return np.moveaxis(get(slice(y0, y1), slice(0, W)), 0, -1)

            lo, hi = safe_range(
                *plane_percentiles(rows, H, dtype if not to_gray else np.dtype(np.float32),
                                   (norm.low, norm.high), exclude=m_plane)
            )
            if norm.output == "fixed":
                olo, ohi = safe_range(norm.out_lo, norm.out_hi)
            else:
                olo, ohi = lo, hi

            def read(
                y0: int, y1: int, x0: int, x1: int, get: Any = get, lo: float = lo, hi: float = hi,
                m_plane: np.ndarray | None = m_plane,
            ) -> np.ndarray:
                x = to_network(_read_padded(get, py, px, y0, y1, x0, x1), lo, hi)
                if m_plane is None:
                    return x
                mp = m_plane
                m = _read_padded(lambda ys, xs: mp[ys, xs], py, px, y0, y1, x0, x1)
                return model.task.compose_input(x[None], m[None])[0]

            for ev in iter_bands(plans, read, run, cfg.out_channels, batch_size):
                if isinstance(ev, int):
                    done += ev
                    yield Progress(done, total)
                    continue
                y0, y1, pred = ev
                result = from_network(pred, olo, ohi)
                if m_plane is not None:  # keep every pixel outside the mask exactly
                    orig = get(slice(y0, y1), slice(0, W))
                    result = np.where(m_plane[None, y0:y1], result, orig)
                block = cast_to(result, out_dtype)
                out[out_layout.index(stack_idx, out_ch, slice(y0, y1), slice(0, W))] = out_layout.from_cyx(block)
    return out


def run_to_end(
    gen: Generator[Any, None, Any],
    progress: Callable[[Any], Any] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
) -> Any:
    """Drain a generator of updates (prediction or training), calling `progress` on each; return its result.

    Raises
    ------
    PredictionCancelled
        When `cancel` (an Event or a callable) says so between two batches.
    """
    while True:
        try:
            update = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(update)
        if cancel is not None and (cancel.is_set() if isinstance(cancel, threading.Event) else cancel()):
            gen.close()
            raise PredictionCancelled("prediction was cancelled")
