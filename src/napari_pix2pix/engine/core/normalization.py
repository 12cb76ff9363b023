"""Intensity normalization for scientific images: percentiles in, the input's scale out.

Percentiles are computed once per plane over the *whole* plane (never per tile), reading
the data in row blocks so that memmaps, zarr and dask arrays larger than RAM work. Integer
images use an exact histogram; float images use every pixel up to 4 M pixels and a
deterministic regular subsample beyond that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# [lo, hi] of the data maps to [-SCALE, SCALE] of the network's tanh range: the margin
# leaves room for outputs a little beyond the input's percentiles (bright spots, colour).
SCALE = 0.8
LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)  # RGB -> luminance weights, as skimage.color.rgb2gray
_FLOAT_SAMPLE = 4_000_000


@dataclass(frozen=True)
class Normalization:
    """How raw intensities become network values and back; stored in model files.

    Attributes
    ----------
    low, high : float
        Percentiles of each input plane mapped to -0.8 and +0.8 (``input="plane"``).
    output : {"input", "fixed"}
        "input": outputs go back to the input's intensity scale (denoise, inpaint,
        colorize). "fixed": outputs use ``out_lo``/``out_hi`` learnt from training targets
        (translate between modalities whose intensities differ).
    out_lo, out_hi : float
        Target intensity range for ``output="fixed"``.
    input : {"plane", "fixed"}
        "plane": every plane is normalized by its own percentiles (models for any image:
        the bundled ones). "fixed": every plane by ``in_lo``/``in_hi``, the training data's
        typical percentiles, as CARE normalizes by its training data: the noise and the
        intensities a model trained on one microscope's images sees at prediction are
        those it saw in training, however the content of an image differs.
    in_lo, in_hi : float
        Input intensity range for ``input="fixed"``.
    """

    low: float = 0.5
    high: float = 99.9
    output: str = "input"
    out_lo: float = 0.0
    out_hi: float = 1.0
    input: str = "plane"
    in_lo: float = 0.0
    in_hi: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(
                f"normalization percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}"
            )
        if self.output not in ("input", "fixed"):
            raise ValueError(f"normalization output must be 'input' or 'fixed', got {self.output!r}")
        if self.input not in ("plane", "fixed"):
            raise ValueError(f"normalization input must be 'plane' or 'fixed', got {self.input!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; a per-plane input (the default) is written as napari-pix2pix 0.1 wrote it."""
        d = asdict(self)
        if self.input == "plane":  # 0.1 knows no input range: leave it out where there is none
            for key in ("input", "in_lo", "in_hi"):
                del d[key]
        return d


def safe_range(lo: float, hi: float) -> tuple[float, float]:
    """Return (lo, hi) with hi > lo, so that constant images normalize to a finite value."""
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("image has no finite values to normalize")
    if hi - lo <= max(abs(lo), abs(hi), 1.0) * 1e-6:
        hi = lo + max(abs(lo) * 1e-3, 1.0)
    return float(lo), float(hi)


def to_network(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map intensities with [lo, hi] to [-0.8, 0.8] (float32)."""
    out = (np.asarray(x, dtype=np.float32) - np.float32(lo)) * np.float32(2 * SCALE / (hi - lo))
    out -= np.float32(SCALE)
    return out


def from_network(y: np.ndarray, lo: float, hi: float, *, inplace: bool = False) -> np.ndarray:
    """Inverse of :func:`to_network` (float32); `inplace` reuses `y` when it is float32 (no temporaries)."""
    if not (inplace and isinstance(y, np.ndarray) and y.dtype == np.float32 and y.flags.writeable):
        return (np.asarray(y, dtype=np.float32) + np.float32(SCALE)) * np.float32((hi - lo) / (2 * SCALE)) + \
            np.float32(lo)
    y += np.float32(SCALE)
    y *= np.float32((hi - lo) / (2 * SCALE))
    y += np.float32(lo)
    return y


def cast_to(x: np.ndarray, dtype: np.dtype, *, inplace: bool = False) -> np.ndarray:
    """Round and clip to the range of an integer `dtype`; float dtypes are cast as is.

    `inplace` rounds and clips a writeable float array in place (a volume's band: no temporaries).
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if inplace and isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.flags.writeable:
            np.rint(x, out=x)
            np.clip(x, info.min, info.max, out=x)
            return x.astype(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return x > 0.5
    return x.astype(dtype, copy=False)


def plane_percentiles(
    read_rows: Callable[[int, int], np.ndarray],
    height: int,
    dtype: np.dtype,
    percentiles: tuple[float, float],
    exclude: np.ndarray | None = None,
    block_rows: int = 512,
) -> tuple[float, float]:
    """Percentiles of a plane read in row blocks, ignoring pixels where `exclude` is True.

    Parameters
    ----------
    read_rows : callable
        ``read_rows(y0, y1)`` returns the plane's rows ``y0:y1`` as a numpy array
        (rows first; any further axes, e.g. channels, are pooled).
    height : int
        Number of rows.
    dtype : numpy dtype
        The data's dtype: 8/16-bit integers use an exact histogram.
    percentiles : (float, float)
        Low and high percentile.
    exclude : (H, W) bool array, optional
        Pixels to leave out (inpainting holes).

    Returns
    -------
    (lo, hi) : tuple of float

    Raises
    ------
    ValueError
        If the plane holds NaN or infinite values outside `exclude`, or no pixels at all.

    The same percentiles are :func:`percentiles_of` the :func:`percentile_part` of slabs of rows
    that cover the plane (read by different processes: a distributed reduction).
    """
    part = percentile_part(read_rows, 0, height, height, dtype, exclude, block_rows)
    return percentiles_of([part], dtype, percentiles)


def percentile_part(read_rows: Callable[[int, int], np.ndarray], y0: int, y1: int, height: int, dtype: np.dtype,
                    exclude: np.ndarray | None = None, block_rows: int = 512) -> tuple[str, np.ndarray, int]:
    """What rows ``y0:y1`` of a plane of `height` rows add to its percentiles (see :func:`plane_percentiles`).

    8/16-bit integers: ``("counts", histogram, 0)``; anything else: ``("samples", values, n_bad)``,
    a regular subsample (every step-th row by absolute index and column, the step set by the
    whole plane's size) and the number of NaN or infinite values outside `exclude`.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "uib" and dtype.itemsize <= 2:
        offset = 0 if dtype.kind in "ub" else -int(np.iinfo(dtype).min)
        counts = np.zeros(65536 if dtype.itemsize == 2 else 256, dtype=np.int64)
        for b0 in range(y0, y1, block_rows):
            block = np.asarray(read_rows(b0, min(b0 + block_rows, y1)))
            if exclude is not None:
                kept = ~exclude[b0 : b0 + block.shape[0]]
                block = block[kept] if block.ndim == 2 else block[kept, ...]
            counts += np.bincount(block.reshape(-1).astype(np.int64) + offset, minlength=counts.size)
        return "counts", counts, 0
    total = height * int(np.prod(np.asarray(read_rows(y0, y0 + 1)).shape[1:]))
    step = max(1, int(np.ceil(np.sqrt(total / _FLOAT_SAMPLE))))
    samples = []
    n_bad = 0
    for b0 in range(y0, y1, block_rows):
        b1 = min(b0 + block_rows, y1)
        block = np.asarray(read_rows(b0, b1))
        keep = None if exclude is None else ~exclude[b0:b1]
        finite = np.isfinite(block)
        bad = ~finite if keep is None else (~finite & (keep if block.ndim == 2 else keep[..., None]))
        n_bad += int(bad.sum())
        # regular subsample: every step-th row (absolute index) and column
        rows = np.arange(b0, b1)
        sel = (rows % step) == 0
        sub = block[sel][:, ::step]
        sub_ok = np.isfinite(sub)
        if keep is not None:
            k = keep[sel][:, ::step]
            sub_ok &= k if sub.ndim == 2 else k[..., None]
        samples.append(sub[sub_ok].astype(np.float64))
    return "samples", np.concatenate(samples) if samples else np.zeros(0), n_bad


def percentiles_of(parts: Sequence[tuple[str, np.ndarray, int]], dtype: np.dtype,
                   percentiles: tuple[float, float]) -> tuple[float, float]:
    """The percentiles of a plane from the :func:`percentile_part` of slabs covering it (their order is free)."""
    dtype = np.dtype(dtype)
    q = np.asarray(percentiles, dtype=np.float64)
    n_bad = sum(int(p[2]) for p in parts)
    if n_bad:
        raise ValueError(
            f"image contains {n_bad} NaN or infinite values; replace them first "
            "(e.g. numpy.nan_to_num) or, to inpaint them, pass them as the mask"
        )
    if parts and parts[0][0] == "counts":
        offset = 0 if dtype.kind in "ub" else -int(np.iinfo(dtype).min)
        counts = np.sum([p[1] for p in parts], axis=0)
        n = int(counts.sum())
        if n == 0:
            raise ValueError("no pixels to normalize (is the whole image masked?)")
        cum = np.cumsum(counts)
        rank = q / 100.0 * (n - 1)  # numpy's default 'linear' method
        lo_i = np.searchsorted(cum, np.floor(rank), side="right")
        hi_i = np.searchsorted(cum, np.ceil(rank), side="right")
        vals = lo_i + (hi_i - lo_i) * (rank - np.floor(rank)) - offset
        return float(vals[0]), float(vals[1])
    flat = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    if flat.size == 0:
        raise ValueError("no pixels to normalize (is the whole image masked?)")
    lo, hi = np.percentile(flat, q)
    return float(lo), float(hi)
