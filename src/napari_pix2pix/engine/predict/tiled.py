"""Tiled prediction of any image: dtypes, channels, stacks, masks, arrays larger than RAM.

:func:`predict_iter` is a generator that yields :class:`Progress` after every batch of
tiles and returns the result; :func:`~napari_pix2pix.engine.core.progress.run_to_end` drains it
for scripts, the napari widgets run it in a worker thread and can stop it between any two
batches. Its parts, top to bottom: the options (:class:`PredictOptions`, checked once), the
image's layout and channel jobs, the mask, the output's plan, the tile plan, and the core
that predicts one plane (:func:`_predict_plane`: whole-plane percentiles, tiles, blending).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.device import PRECISIONS, resolve_device, resolve_precision
from ..core.network import Network
from ..core.normalization import (
    LUMA,
    Normalization,
    cast_to,
    from_network,
    percentile_part,
    percentiles_of,
    safe_range,
    to_network,
)
from ..core.progress import Cancelled, PredictionCancelled, Progress, run_to_end
from ..images.noise import NoiseModel, estimate_noise, noise_model, stabilize, unstabilize
from .runner import Runner, runner
from .tiling import AxisPlan, context_order, iter_bands, n_tiles, plan_axis

__all__ = ["Cancelled", "PredictOptions", "PredictionCancelled", "Progress", "predict_iter", "run_to_end"]


@dataclass(frozen=True)
class _Layout:
    """Where the axes of an image are: `dims` spatial axes last (Y, X, or Z, Y, X), stack axes before them."""

    ndim: int
    channel_axis: int | None
    dims: int = 2

    @property
    def spatial(self) -> tuple[int, ...]:
        axes = [a for a in range(self.ndim) if a != self.channel_axis]
        return tuple(axes[-self.dims:])

    @property
    def stack(self) -> tuple[int, ...]:
        return tuple(a for a in range(self.ndim) if a != self.channel_axis and a not in self.spatial)

    def index(self, stack_idx: tuple[int, ...], ch: Any, *spatial: slice) -> tuple[Any, ...]:
        idx: list[Any] = [slice(None)] * self.ndim
        for a, i in zip(self.stack, stack_idx, strict=True):
            idx[a] = i
        if self.channel_axis is not None:
            idx[self.channel_axis] = ch
        for a, sl in zip(self.spatial, spatial, strict=True):
            idx[a] = sl
        return tuple(idx)

    def to_cyx(self, block: np.ndarray) -> np.ndarray:
        """Reorder an indexed block (remaining axes in original order) to (C, *spatial)."""
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


def _check_image(image: Any, channel_axis: int | None, dims: int = 2
                 ) -> tuple[tuple[int, ...], np.dtype, int | None]:
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
    spatial = ndim - (channel_axis is not None)
    if spatial < 2:
        raise ValueError(
            f"image of shape {shape} has fewer than 2 spatial axes"
            + (f" besides channel_axis={channel_axis}" if channel_axis is not None else "")
        )
    if spatial < dims:
        raise ValueError(f"this is a 3D model: it restores volumes (Z, Y, X), but the image of shape {shape} has "
                         f"only {spatial} spatial axes; use a 2D model for single planes")
    return shape, dtype, channel_axis


def _read_padded(get: Callable[..., np.ndarray], plans: Sequence[AxisPlan], bounds: Sequence[int]) -> np.ndarray:
    """Read the padded-coordinate box (start, end per axis, flattened) as (C, ...), reflect-padding the image."""
    slices, pads = [], []
    for plan, (b0, b1) in zip(plans, zip(bounds[::2], bounds[1::2], strict=True), strict=True):
        i0, i1 = b0 - plan.pad, b1 - plan.pad
        c0, c1 = max(i0, 0), min(i1, plan.size)
        slices.append(slice(c0, c1))
        pads.append((c0 - i0, i1 - c1))
    block = get(*slices)
    if any(p for pair in pads for p in pair):
        widths = [(0, 0)] * (block.ndim - len(plans)) + pads
        mode = "reflect" if min(block.shape[-len(plans):]) > 1 else "edge"
        block = np.pad(block, widths, mode=mode)  # type: ignore[call-overload]
    return block


@dataclass(frozen=True)
class _ChannelJob:
    """One pass of the network over a plane: the channels it reads and those it writes."""

    read: Any  # index along the channel axis (a slice)
    to_gray: bool  # reduce RGB to luminance first (colorize from an RGB image)
    write: Any


def _channel_jobs(task: str, image_c: int, k: int, out_k: int, channel_axis: int | None) -> list[_ChannelJob]:
    """The network passes for an image with `image_c` channels and a model taking `k`; checks they fit."""
    where = f"along channel_axis={channel_axis}" if channel_axis is not None else "(no channel_axis)"
    if task == "colorize":
        if image_c == 1:
            return [_ChannelJob(slice(None), False, slice(None))]
        if image_c in (3, 4):
            return [_ChannelJob(slice(0, 3), True, slice(None))]
        raise ValueError(f"colorize takes a grayscale or RGB image; this one has {image_c} channels {where}")
    if image_c == k:
        return [_ChannelJob(slice(None), False, slice(None))]
    if k == 1 and out_k == 1:  # apply a single-channel model to each channel
        return [_ChannelJob(slice(c, c + 1), False, slice(c, c + 1)) for c in range(image_c)]
    raise ValueError(
        f"the model takes {k}-channel images but this image has {image_c} channel(s) {where}; "
        "pass channel_axis= for multi-channel images or choose a model trained for this many channels"
    )


ACTIVATION_BUDGET = 512 * 2**20  # bytes of activations per forward pass when tiles/batch are automatic
MAX_AUTO_TILE = 2048  # automatic tiles stay at most this large: progress and cancel stay responsive
PERCENTILE_BLOCK = 256 * 2**20  # bytes of float32 read at once to compute a plane's (volume's) percentiles
SLAB_BYTES = 1024 * 2**20  # on a cluster: a plane's (volume's) percentiles are summed from tasks reading this much
BAND_BUDGET = 768 * 2**20  # bytes a volume's band of automatic tiles may hold (blended output and weights)


def _axis_levels(cfg: Any) -> tuple[int, ...]:
    """Halvings of each spatial axis (log2 of its size multiple)."""
    return tuple(int(m).bit_length() - 1 for m in cfg.size_multiple)


def activation_bytes(cfg: Any, tile: Sequence[int], itemsize: int = 4) -> int:
    """Estimated activation memory of one tile (a size per spatial axis) in a forward pass.

    The skip tensors of every level plus the largest decoder concatenation, twice (input and
    output of a layer), at `itemsize` bytes per value (measured: 8192² with ``unet_256`` in
    bf16 and 2048-px tiles peaked at 1.0 GB above idle, this estimate says 0.79 GB for the net).
    """
    levels = _axis_levels(cfg)

    def pixels(level: int) -> int:  # pixels of one feature map after `level` halvings (capped per axis)
        return int(np.prod([t >> min(level, n) for t, n in zip(tile, levels, strict=True)]))

    w = cfg.widths()
    skips = sum(c * pixels(i + 1) for i, c in enumerate(w))
    top = 2 * w[0] * pixels(1)
    if getattr(cfg, "full_res_convs", 0):  # the stem's features are kept; the tail concatenates two
        skips += cfg.ngf * pixels(0)
        top = max(top, 2 * cfg.ngf * pixels(0))
    return itemsize * (skips + 2 * top)


def auto_tile_size(cfg: Any, itemsize: int = 4, budget: int = ACTIVATION_BUDGET,
                   limit: int = MAX_AUTO_TILE) -> tuple[int, ...]:
    """The largest tile (per axis, multiples of the network's size multiple, as square as they come) within `budget`.

    Large tiles waste less compute on overlaps: tiles start on the network's size grid, so
    neighbours overlap by at least one size multiple (256 px for ``unet_256``).
    """
    ms = cfg.size_multiple
    side = max(max(ms), limit // max(ms) * max(ms))

    def tile_of(s: int) -> tuple[int, ...]:
        return tuple(max(m, s // m * m) for m in ms)

    while side > max(ms) and activation_bytes(cfg, tile_of(side), itemsize) > budget:
        side -= max(ms)
    return tile_of(side)


def _band_depth(cfg: Any, sizes: Sequence[int], depth: int, budget: int = BAND_BUDGET) -> int:
    """The deepest Z tile (at most `depth`, a multiple of Z's size multiple) whose band fits `budget`.

    Tiles form bands along Z: the blended output and its weights of one band (tile deep, the
    whole Y and X) are held in float32 while its tiles run.
    """
    m = cfg.size_multiple[0]
    plane = (cfg.out_channels + 1) * 4 * (sizes[1] + 2 * cfg.size_multiple[1]) * (sizes[2] + 2 * cfg.size_multiple[2])
    return max(2 * m, min(depth, budget // plane // m * m))  # two multiples at least: tiles can overlap


def auto_batch_size(cfg: Any, tile: Sequence[int], limit: int = 4, budget: int = ACTIVATION_BUDGET,
                    itemsize: int = 4) -> int:
    """Tiles per forward pass so that activations stay within `budget` (at most `limit`).

    (Larger batches fragmented memory: 5.3 GB peak on an 8192² image with 4 tiles of 1024².)
    """
    return int(max(1, min(limit, budget // max(activation_bytes(cfg, tile, itemsize), 1))))


# ---------------------------------------------------------------------- options
def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclass(frozen=True)
class PredictOptions:
    """How a prediction runs; checked once, where it enters (see :meth:`Pix2PixModel.predict`).

    ``mc_dropout`` keeps dropout on and ``augment`` (0-7; 8-15 also flip Z, for volumes)
    applies that flip/rotation to each tile and undoes it on the output (for uncertainty);
    ``tta`` averages each tile's prediction over that many flips/rotations (``True``: all;
    see :func:`tta_transforms`); ``output_dtype`` overrides the output dtype (default: the input's).
    """

    tile_size: int | tuple[int, ...] | str | None = "auto"
    overlap: int = 64
    batch_size: int | None = None
    device: str | torch.device = "auto"
    precision: str = "auto"
    mc_dropout: bool = False
    augment: int = 0
    tta: bool | int = False
    output_dtype: Any = None
    noise: Any = None  # denoisers: a noise model to stabilize the image with (images.noise.noise_model)

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "batch_size"):  # whole numbers given as floats (64.0) are fine
            v = getattr(self, name)
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                object.__setattr__(self, name, int(v))
        t = self.tile_size
        if isinstance(t, (tuple, list)):  # one size per spatial axis ((z, y, x) for volumes)
            t = tuple(int(v) if isinstance(v, (float, np.floating)) and float(v).is_integer() else v for v in t)
            object.__setattr__(self, "tile_size", t)
            if not t or not all(_is_int(v) and int(v) >= 1 for v in t):
                raise ValueError(f"tile_size must give a positive number of pixels per axis, got {t!r}")
        elif not (t is None or t == "auto" or (_is_int(t) and int(t) >= 1)):
            raise ValueError(f"tile_size must be a positive number of pixels, 'auto' or None, got {t!r}")
        if not _is_int(self.overlap) or self.overlap < 0:
            raise ValueError(f"overlap must be a number of pixels >= 0, got {self.overlap!r}")
        if self.batch_size is not None and (not _is_int(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1 (or None: automatic), got {self.batch_size!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not _is_int(self.augment) or not 0 <= self.augment <= 15:
            raise ValueError(f"augment must be a flip/rotation index 0-15 (8-15: 3D only), got {self.augment!r}")
        tta = self.tta
        if isinstance(tta, (float, np.floating)) and float(tta).is_integer():
            tta = int(tta)
        if isinstance(tta, (bool, np.bool_)):
            tta = bool(tta)
        elif _is_int(tta) and int(tta) in (0, *TTA_COUNTS):
            tta = int(tta)
        else:
            raise ValueError(f"tta must be True/False or a number of flips/rotations to average, one of "
                             f"{TTA_COUNTS} (16: 3D models only), got {self.tta!r}")
        object.__setattr__(self, "tta", tta)
        if self.noise is not None:
            object.__setattr__(self, "noise", noise_model(self.noise))
        if self.augment and (tta is True or int(tta) > 1):  # (True == 1: compared by identity)
            raise ValueError("augment (one transform) and tta (an average over transforms) cannot be combined")


TTA_COUNTS = (1, 2, 4, 8, 16)


def tta_transforms(tta: bool | int, dims: int) -> tuple[int, ...]:
    """The flips/rotations (:func:`.runner.dihedral` indices) that ``tta`` averages; () when off.

    2D: the first n of the 8 symmetries of the square (2: identity and a quarter turn; 4: the
    rotations; 8: all). 3D: alternately also flipped in Z (2: identity and the Z flip), up to 16.
    """
    n = (16 if dims == 3 else 8) if isinstance(tta, (bool, np.bool_)) and tta else int(tta)
    if n > (16 if dims == 3 else 8):
        raise ValueError(f"tta={n}: a {dims}D model has {16 if dims == 3 else 8} flips/rotations to average; "
                         "16 is for 3D models")
    if n <= 1:
        return ()
    return tuple(k // 2 + 8 * (k % 2) for k in range(n)) if dims == 3 else tuple(range(n))


# ---------------------------------------------------------------------- the mask
def _inpaint_mask(task: str, image: Any, mask: Any, shape: tuple[int, ...], dtype: np.dtype,
                  channel_axis: int | None, dims: int = 2) -> Any:
    """The mask to fill: the given one (checked against the image) or the image's NaN pixels; None if not inpaint."""
    if task != "inpaint":
        if mask is not None:
            raise ValueError(f"a mask is only used by inpaint models; this model's task is {task!r}")
        return None
    if mask is None:
        data = np.asarray(image)
        if dtype.kind == "f" and not np.isfinite(data).all():
            finite = np.isfinite(data)
            return ~(finite if channel_axis is None else finite.all(axis=channel_axis))
        raise ValueError(
            "inpaint needs a mask: an array of the image's shape (or (Y, X)) that is non-zero "
            "where pixels are to be filled (in napari: a Labels or Shapes layer)"
        )
    m_shape = tuple(getattr(mask, "shape", ()))
    nochan = tuple(s for a, s in enumerate(shape) if a != channel_axis)
    if m_shape not in (nochan, nochan[-dims:]):
        raise ValueError(
            f"mask shape {m_shape} does not match the image: expected {nochan} or {nochan[-dims:]} "
            f"(image shape {shape}, channel_axis={channel_axis})"
        )
    return mask


def _mask_plane(mask: Any, stack_idx: tuple[int, ...], plane_shape: tuple[int, ...]) -> np.ndarray | None:
    """The bool mask of one plane (or volume); a mask of the plane's shape applies to every plane."""
    if mask is None:
        return None
    per_plane = tuple(mask.shape) != plane_shape and stack_idx
    return np.asarray(mask[stack_idx] if per_plane else mask).astype(bool)


# ---------------------------------------------------------------------- the output
@dataclass(frozen=True)
class _OutputPlan:
    """Shape, axes and dtype of the output array."""

    shape: tuple[int, ...]
    layout: _Layout
    dtype: np.dtype


def _output_plan(model: Network, shape: tuple[int, ...], dtype: np.dtype, layout: _Layout,
                 out_channels: int, output_dtype: Any) -> _OutputPlan:
    """Colorize (or a multi-channel output from a single-channel image) adds a channel axis last."""
    ca = layout.channel_axis
    if ca is None and (model.task.name == "colorize" or out_channels > 1):
        out_shape, out_layout = (*shape, out_channels), _Layout(len(shape) + 1, len(shape), layout.dims)
    elif ca is not None:
        out_shape, out_layout = tuple(out_channels if a == ca else s for a, s in enumerate(shape)), layout
    else:
        out_shape, out_layout = shape, layout
    # outputs on a learnt target scale (translate between modalities) may not fit the input's dtype
    out_dtype = np.dtype(np.float32) if dtype.kind == "b" or model.normalization.output == "fixed" else dtype
    if output_dtype is not None:
        out_dtype = np.dtype(output_dtype)
    return _OutputPlan(out_shape, out_layout, out_dtype)


def _allocate(out: Any, plan: _OutputPlan) -> Any:
    if out is None:
        return np.empty(plan.shape, plan.dtype)
    if isinstance(out, (str, os.PathLike)):
        raise ValueError(f"out={str(out)!r}: a path must name a zarr store (ending in .zarr); "
                         "or give an array of the output's shape")
    if tuple(out.shape) != plan.shape:
        raise ValueError(f"out has shape {tuple(out.shape)}; this prediction needs {plan.shape}")
    return out


# ---------------------------------------------------------------------- the tile plan
def _tile_plan(cfg: Any, sizes: tuple[int, ...], opts: PredictOptions) -> tuple[tuple[AxisPlan, ...], int]:
    """Tiling of each spatial axis and the tiles per forward pass."""
    ms = cfg.size_multiple
    itemsize = resolve_precision(opts.precision, resolve_device(opts.device)).itemsize
    if opts.tile_size == "auto":
        tiles: tuple[int, ...] = auto_tile_size(cfg, itemsize, ACTIVATION_BUDGET, MAX_AUTO_TILE)
        if len(ms) == 3:  # a volume's band of tiles (tile-deep slab, whole Y and X) stays within BAND_BUDGET
            tiles = (_band_depth(cfg, sizes, tiles[0]), *tiles[1:])
    elif opts.tile_size is None:
        tiles = (10**9,) * len(ms)
    else:
        asked = opts.tile_size if isinstance(opts.tile_size, tuple) else (opts.tile_size,) * len(ms)
        if len(asked) != len(ms):
            raise ValueError(f"tile_size {opts.tile_size} has {len(asked)} sizes; this network tiles {len(ms)} axes")
        small = [(t, m) for t, m in zip(asked, ms, strict=True) if int(t) < m]
        if small:
            raise ValueError(f"tile_size {opts.tile_size} is smaller than this network's size multiple "
                             f"{max(ms) if len(set(ms)) == 1 else ms}")
        tiles = tuple(int(t) for t in asked)
    plans = tuple(plan_axis(n, m, t, opts.overlap) for n, m, t in zip(sizes, ms, tiles, strict=True))
    batch = opts.batch_size or auto_batch_size(cfg, tuple(p.tile for p in plans), itemsize=itemsize)
    return plans, batch


# ---------------------------------------------------------------------- one plane
def plane_ranges(norm: Normalization, rows: Callable[[int, int], np.ndarray], height: int, dtype: np.dtype,
                 exclude: np.ndarray | None = None, block_rows: int = 512
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """The intensity ranges a plane maps to -0.8/+0.8: on the way in (its percentiles) and out.

    ``rows(y0, y1)`` reads the plane's rows (any further axes, e.g. channels, are pooled);
    `exclude` leaves pixels out (inpainting holes). A model with a fixed input range uses it
    for every plane (nothing is read). Outputs go back to the input's range, or to the
    model's fixed output range (``translate`` between modalities).
    """
    reads = _reads(norm, dtype)
    parts = [percentile_part(rows, 0, height, height, dtype, exclude, block_rows)] if reads else []
    return ranges_of(norm, parts, dtype)


def _reads(norm: Normalization, dtype: np.dtype) -> bool:
    """Whether a plane's ranges need its pixels: its percentiles, or a float's check for NaN and infinities."""
    return norm.input != "fixed" or np.dtype(dtype).kind == "f"


def ranges_of(norm: Normalization, parts: Sequence[tuple[str, np.ndarray, int]], dtype: np.dtype) -> Ranges:
    """A plane's ranges from the :func:`~napari_pix2pix.engine.core.normalization.percentile_part` of its slabs."""
    if norm.input == "fixed":
        lo, hi = safe_range(norm.in_lo, norm.in_hi)
        if parts:  # read anyway: NaN or infinite values are named, never passed on
            percentiles_of(parts, dtype, (norm.low, norm.high))
    else:
        lo, hi = safe_range(*percentiles_of(parts, dtype, (norm.low, norm.high)))
    out = safe_range(norm.out_lo, norm.out_hi) if norm.output == "fixed" else (lo, hi)
    return (lo, hi), out


Ranges = tuple[tuple[float, float], tuple[float, float]]  # a plane's (input range, output range)


def _range_rows(model: Network, get: Callable[..., np.ndarray], sizes: Sequence[int]
                ) -> tuple[Callable[[int, int], np.ndarray], int]:
    """A plane's (volume's) own rows, read through ``get(*slices) -> (C, ...)``, and how many to read at once."""
    full = [slice(0, n) for n in sizes[1:]]
    own = model.task.image_channels(model.config.in_channels) // (2 * model.z_context + 1)

    def rows(y0: int, y1: int) -> np.ndarray:  # the plane's own channels (2.5D: not its neighbours')
        return np.moveaxis(get(slice(y0, y1), *full)[:own], 0, -1)

    row_bytes = 4 * int(np.prod(sizes[1:])) * model.task.image_channels(model.config.in_channels)
    return rows, max(1, min(512, PERCENTILE_BLOCK // max(row_bytes, 1)))  # a volume: Z slabs of bounded size


def _ranges(model: Network, get: Callable[..., np.ndarray], dtype: np.dtype, m_plane: np.ndarray | None,
            sizes: Sequence[int]) -> Ranges:
    """The ranges of one plane (or volume) read through ``get(*slices) -> (C, ...)``, in row slabs of bounded size."""
    rows, block = _range_rows(model, get, sizes)
    return plane_ranges(model.normalization, rows, sizes[0], dtype, m_plane, block)


def _predict_plane(model: Network, get: Callable[..., np.ndarray], dtype: np.dtype,
                   m_plane: np.ndarray | None, plans: tuple[AxisPlan, ...], batch_size: int,
                   run: Callable[[np.ndarray], np.ndarray], write: Callable[[int, int, np.ndarray], None],
                   noise: NoiseModel | None = None, region: tuple[tuple[int, int], ...] | None = None,
                   ranges: Ranges | None = None) -> Generator[int, None, None]:
    """Predict one plane (or volume), read through ``get(*slices) -> (C, ...)``; yield tiles done, write rows.

    With a `region` ((start, end) per spatial axis) only its pixels are predicted (exactly as in
    the whole plane's prediction) and `write` gets rows cropped to it; `ranges` (the plane's, from
    :func:`_ranges`) saves reading the whole plane again.
    """
    (lo, hi), (olo, ohi) = ranges or _ranges(model, get, dtype, m_plane, [p.size for p in plans])
    others = [slice(0, p.size) for p in plans[1:]] if region is None else [slice(a, b) for a, b in region[1:]]

    def read(*bounds: int) -> np.ndarray:
        x = to_network(_read_padded(get, plans, bounds), lo, hi)
        if m_plane is None:
            return x
        m = _read_padded(lambda *sl: m_plane[sl], plans, bounds)
        return model.task.compose_input(x[None], m[None])[0]

    for band in iter_bands(plans, read, run, model.config.out_channels, batch_size, region):
        if band.rows is not None:
            result = from_network(band.rows, olo, ohi, inplace=True)  # the band's own array
            if noise is not None:  # back from the stabilized domain (unbiased inverse)
                result = unstabilize(result, noise).astype(np.float32)
            if m_plane is not None:  # keep every pixel outside the mask exactly
                orig = get(slice(band.y0, band.y1), *others)
                result = np.where(m_plane[(None, slice(band.y0, band.y1), *others)], result, orig)
            write(band.y0, band.y1, result)
        if band.tiles:
            yield band.tiles


def _plane_reader(image: Any, layout: _Layout, stack_idx: tuple[int, ...], job: _ChannelJob, z_context: int = 0
                  ) -> Callable[..., np.ndarray]:
    """``get(*slices)``: a float32 (C, ...) block of one plane and channel job (luminance for to_gray).

    With a z context of k (a 2.5D model), the block holds plane z and its neighbours along the stack's
    last axis as channels, in training's order (:func:`~napari_pix2pix.engine.predict.tiling.context_order`:
    z, then z-k ... z-1, z+1 ... z+k, reflected at the first and last planes), each with the job's channels.
    """
    def one(idx: tuple[int, ...], slices: tuple[slice, ...]) -> np.ndarray:
        block = layout.to_cyx(np.asarray(image[layout.index(idx, job.read, *slices)]))
        block = block.astype(np.float32, copy=False)
        if job.to_gray:
            block = np.tensordot(LUMA, block[:3], axes=1)[None]
        return block

    if not z_context:
        return lambda *slices: one(stack_idx, slices)
    n_z = _z_extent(image, layout)

    def get(*slices: slice) -> np.ndarray:
        planes = context_order(stack_idx[-1], n_z, z_context)
        return np.concatenate([one((*stack_idx[:-1], q), slices) for q in planes], axis=0)

    return get


def _resolve_noise(model: Network, spec: Any, image: Any, layout: _Layout) -> NoiseModel | None:
    """The noise model a denoiser stabilizes the image with (None: none; Gaussian noise needs none).

    "auto" is estimated from the image (its first plane), "poisson" the same without read noise,
    "gaussian" needs no stabilization.
    """
    if spec is None:
        return None
    if model.task.name != "denoise":
        raise ValueError(f"noise= is for denoisers; this model does {model.task.name}")
    if isinstance(spec, str):
        if spec == "gaussian":
            return None
        first = tuple(0 for _ in layout.stack)
        whole = (slice(None) for _ in layout.spatial)
        block = layout.to_cyx(np.asarray(image[layout.index(first, slice(None), *whole)]))
        found = estimate_noise(block.reshape(-1, *block.shape[-2:]))  # the first plane (volume), channels pooled
        if found.gain == 0:
            return None
        spec = NoiseModel(found.gain, found.offset, 0.0) if spec == "poisson" else found
    return spec if spec.gain > 0 else None


def _stabilized(get: Callable[..., np.ndarray], noise: NoiseModel) -> Callable[..., np.ndarray]:
    """A reader whose blocks come variance-stabilized (the generalized Anscombe transform)."""
    return lambda *slices: stabilize(get(*slices), noise).astype(np.float32)


def _z_extent(image: Any, layout: _Layout) -> int:
    if not layout.stack:
        raise ValueError("this 2.5D model reads neighbouring planes: the image needs a Z axis (before Y)")
    return int(image.shape[layout.stack[-1]])


# ---------------------------------------------------------------------- the whole image
@dataclass
class Setup:
    """A prediction checked and planned: where the axes are, the channel passes, the tiles, the output.

    Everything here is decided from the image's shape and dtype (and the model and options),
    never from its pixels, except a noise model "auto" (estimated from the first plane) and an
    inpaint mask made of the image's NaN pixels: a worker of a cluster that builds it again
    from the same arguments gets the same plan.
    """

    model: Network
    image: Any
    opts: PredictOptions
    layout: _Layout
    dtype: np.dtype
    sizes: tuple[int, ...]
    stack_shape: tuple[int, ...]
    jobs: list[_ChannelJob]
    mask: Any
    noise: NoiseModel | None
    output: _OutputPlan
    plans: tuple[AxisPlan, ...]
    batch_size: int

    @property
    def total_tiles(self) -> int:
        return int(np.prod(self.stack_shape)) * len(self.jobs) * n_tiles(self.plans)

    def reader(self, stack_idx: tuple[int, ...], job: _ChannelJob) -> Callable[..., np.ndarray]:
        """``get(*slices)`` of one plane and channel pass, as the network sees it (stabilized if asked)."""
        get = _plane_reader(self.image, self.layout, stack_idx, job, self.model.z_context)
        return _stabilized(get, self.noise) if self.noise is not None else get

    def job_dtype(self, job: _ChannelJob) -> np.dtype:
        return self.dtype if not job.to_gray else np.dtype(np.float32)

    def ranges(self, stack_idx: tuple[int, ...]) -> list[Ranges]:
        """Each channel pass's intensity ranges of one plane (its percentiles; the whole plane is read once)."""
        m_plane = _mask_plane(self.mask, stack_idx, self.sizes)
        return [_ranges(self.model, self.reader(stack_idx, job), self.job_dtype(job), m_plane, self.sizes)
                for job in self.jobs]

    def range_slabs(self, stack_idx: tuple[int, ...], slab_bytes: int = SLAB_BYTES) -> list[tuple[int, int, int]]:
        """(channel pass, first row, end row) of slabs of one plane whose parts make its ranges (read in parallel).

        Empty when its ranges need no pixel (a fixed input range of an integer image).
        """
        if not any(_reads(self.model.normalization, self.job_dtype(job)) for job in self.jobs):
            return []
        row_bytes = 4 * int(np.prod(self.sizes[1:])) * self.model.task.image_channels(self.model.config.in_channels)
        rows = max(1, slab_bytes // max(row_bytes, 1))
        return [(k, y0, min(y0 + rows, self.sizes[0])) for k in range(len(self.jobs))
                for y0 in range(0, self.sizes[0], rows)]

    def range_part(self, stack_idx: tuple[int, ...], k: int, y0: int, y1: int) -> tuple[str, np.ndarray, int]:
        """What rows ``y0:y1`` of channel pass `k` add to the plane's ranges (:meth:`range_slabs`)."""
        job = self.jobs[k]
        rows, block = _range_rows(self.model, self.reader(stack_idx, job), self.sizes)
        return percentile_part(rows, y0, y1, self.sizes[0], self.job_dtype(job),
                               _mask_plane(self.mask, stack_idx, self.sizes), block)

    def ranges_from(self, parts: Sequence[tuple[int, tuple[str, np.ndarray, int]]]) -> list[Ranges]:
        """The plane's ranges from the parts of its slabs ((channel pass, part) pairs, in any order)."""
        return [ranges_of(self.model.normalization, [p for k, p in parts if k == i], self.job_dtype(job))
                for i, job in enumerate(self.jobs)]

    def runner(self, cancel: Any = None) -> Runner:
        o = self.opts
        return runner(self.model.generator, o.device, o.precision, mc_dropout=o.mc_dropout, augment=o.augment,
                      tta=tta_transforms(o.tta, self.model.config.spatial_dims), cancel=cancel)

    def predict_region(self, stack_idx: tuple[int, ...], run: Runner, out: Any,
                       region: tuple[tuple[int, int], ...] | None = None,
                       ranges: list[Ranges] | None = None) -> Generator[int, None, None]:
        """Predict one plane (or the `region` of it) into `out`, pass by pass; yield tiles done."""
        m_plane = _mask_plane(self.mask, stack_idx, self.sizes)
        region = region or tuple((0, n) for n in self.sizes)
        others = [slice(a, b) for a, b in region[1:]]
        for k, job in enumerate(self.jobs):
            def write(y0: int, y1: int, block: np.ndarray, job: _ChannelJob = job) -> None:
                idx = self.output.layout.index(stack_idx, job.write, slice(y0, y1), *others)
                out[idx] = self.output.layout.from_cyx(cast_to(block, self.output.dtype, inplace=True))

            yield from _predict_plane(self.model, self.reader(stack_idx, job), self.job_dtype(job), m_plane,
                                      self.plans, self.batch_size, run, write, self.noise, region,
                                      ranges[k] if ranges is not None else None)


def prepare(model: Network, image: Any, mask: Any = None, *, channel_axis: int | None = None,
            **options: Any) -> Setup:
    """Check `image` (and `mask`) against `model` and plan the prediction; raises before any work.

    `options` are the fields of :class:`PredictOptions`.
    """
    opts = PredictOptions(**options)
    cfg = model.config
    dims, zc = cfg.spatial_dims, model.z_context
    if opts.augment >= 8 and dims == 2:
        raise ValueError(f"augment {opts.augment} flips Z: it is for 3D models; a 2D model has augment 0-7")
    shape, dtype, channel_axis = _check_image(image, channel_axis, dims)
    layout = _Layout(len(shape), channel_axis, dims)
    sizes = tuple(shape[a] for a in layout.spatial)
    stack_shape = tuple(shape[a] for a in layout.stack)
    jobs = _channel_jobs(model.task.name, shape[channel_axis] if channel_axis is not None else 1,
                         model.task.image_channels(cfg.in_channels) // (2 * zc + 1), cfg.out_channels, channel_axis)
    mask = _inpaint_mask(model.task.name, image, mask, shape, dtype, channel_axis, dims)
    noise = _resolve_noise(model, opts.noise, image, layout)
    output = _output_plan(model, shape, dtype, layout, cfg.out_channels * len(jobs), opts.output_dtype)
    plans, batch_size = _tile_plan(cfg, sizes, opts)
    if zc:
        _z_extent(image, layout)  # a clear error before any work when there is no Z axis
    return Setup(model, image, opts, layout, dtype, sizes, stack_shape, jobs, mask, noise, output, plans, batch_size)


def predict_iter(
    model: Network,
    image: Any,
    mask: Any = None,
    *,
    channel_axis: int | None = None,
    out: Any = None,
    run: Runner | None = None,
    cancel: Any = None,
    **options: Any,
) -> Generator[Progress, None, Any]:
    """Predict `image` tile by tile into memory (or the array `out`), yielding :class:`Progress`; returns it.

    The arguments are those of :meth:`Pix2PixModel.predict`; `options` are the fields of
    :class:`PredictOptions` (tile_size, overlap, batch_size, device, precision and, for
    uncertainty estimates, mc_dropout, augment and output_dtype; tta for test-time augmentation).
    `run` maps a batch in network units to the network's output (default: :func:`.runner.runner` of
    `model`'s generator with these options, checking `cancel` before every forward pass); `model`
    gives the facts around the network (task, channels, normalization, z context). Predictions
    into zarr stores (resumable, on a dask cluster): :func:`.stores.predict_iter`.
    """
    if isinstance(image, (str, os.PathLike)):
        from ..images.io import open_lazy

        image = open_lazy(image)
    setup = prepare(model, image, mask, channel_axis=channel_axis, **options)
    out = _allocate(out, setup.output)
    if run is None:
        run = setup.runner(cancel)
    done, total = 0, setup.total_tiles
    yield Progress(0, total, "starting")
    for stack_idx in np.ndindex(*setup.stack_shape):
        for tiles in setup.predict_region(stack_idx, run, out):
            done += tiles
            yield Progress(done, total)
    return out
