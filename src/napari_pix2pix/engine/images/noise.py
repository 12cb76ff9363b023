"""Which noise an image has: a Poisson–Gaussian model estimated from the image itself, and its variance stabilization.

Camera and photon-counting data follow, to a good approximation, the Poisson–Gaussian model
of Foi et al. (2008): an intensity ``y = gain · N + offset + e`` with ``N`` Poisson photon
counts and ``e`` Gaussian read noise of standard deviation ``read``, so that

    Var[y] = gain · (E[y] − offset) + read²

:func:`estimate_noise` finds ``gain``, ``offset`` and ``read`` from one image: in smooth
regions (edges rejected), the local variance and third cumulant of a high-pass residual,
binned by the local mean, are fitted as lines in the mean (variance: slope ``gain``; third
cumulant: slope ``gain²``, crossing zero at ``offset``). Pure Gaussian noise has ``gain = 0``.
:func:`stabilize` (the generalized Anscombe transform) makes such noise Gaussian with unit
variance; :func:`unstabilize` is its closed-form unbiased inverse (Mäkitalo & Foi 2013).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

KINDS = ("gaussian", "poisson", "poisson-gaussian")


class NoisyCleanImagesWarning(UserWarning):
    """The clean images a denoiser's training pairs are synthesized from are noisy themselves.

    Training warns with it before the first step (``warnings.simplefilter("error",
    NoisyCleanImagesWarning)`` makes it an error); the napari widgets show it as a notification.
    """


@dataclass(frozen=True)
class NoiseModel:
    """Signal-dependent noise: ``Var[y] = gain · (E[y] − offset) + read²``, in the image's intensity units.

    Attributes
    ----------
    gain : float
        Intensity per photon (0: no signal-dependent part, Gaussian noise).
    offset : float
        The intensity of no light (a camera's black level).
    read : float
        Standard deviation of the signal-independent (Gaussian) part.
    """

    gain: float = 0.0
    offset: float = 0.0
    read: float = 0.0

    def __post_init__(self) -> None:
        for name in ("gain", "offset", "read"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
                raise ValueError(f"noise {name} must be a finite number, got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.gain < 0 or self.read < 0:
            raise ValueError(f"noise gain and read must be >= 0, got gain={self.gain}, read={self.read}")

    @property
    def kind(self) -> str:
        """"gaussian" (no photon noise), "poisson" (no read noise) or "poisson-gaussian"."""
        if self.gain == 0:
            return "gaussian"
        return "poisson" if self.read == 0 else "poisson-gaussian"

    @property
    def b(self) -> float:
        """The constant of the variance line ``Var = gain · E[y] + b`` (``read² − gain · offset``)."""
        return self.read**2 - self.gain * self.offset

    def variance(self, mean: Any) -> Any:
        """The noise variance at intensity `mean` (never negative)."""
        return np.maximum(self.gain * (np.asarray(mean, np.float64) - self.offset) + self.read**2, 0.0)

    def photons(self, intensity: float) -> float:
        """Photons behind `intensity` (inf without photon noise)."""
        return (intensity - self.offset) / self.gain if self.gain > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, with the kind for readers."""
        return {**asdict(self), "kind": self.kind}

    def describe(self) -> str:
        """One line for people."""
        if self.gain == 0:
            return f"Gaussian noise, σ {self.read:.3g}"
        read = f", read noise {self.read:.3g}" if self.read else ""
        return f"Poisson–Gaussian noise: gain {self.gain:.3g} per photon, offset {self.offset:.3g}{read}"


def noise_model(spec: Any) -> NoiseModel | str:
    """A noise specification checked: "auto", "gaussian", "poisson", a :class:`NoiseModel` or its fields as a dict.

    Raises
    ------
    ValueError
        Naming what is wrong and what is accepted.
    """
    if isinstance(spec, NoiseModel):
        return spec
    if isinstance(spec, str):
        if spec in ("auto", "gaussian", "poisson"):
            return spec
        raise ValueError(f"noise must be 'auto', 'gaussian', 'poisson' or a dict of gain, offset and read, "
                         f"got {spec!r}")
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"gain", "offset", "read", "kind"})
        if unknown:
            raise ValueError(f"a noise model takes gain, offset and read; unknown: {unknown}")
        return NoiseModel(**{k: v for k, v in spec.items() if k != "kind"})
    raise ValueError(f"noise must be 'auto', 'gaussian', 'poisson' or a dict of gain, offset and read, got "
                     f"{type(spec).__name__}")


# ---------------------------------------------------------------------- estimation
TILE = 4  # tiles of 4 x 4 diagonal details (8 x 8 pixels)


def _tiles(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per 8 x 8 tile: (local mean, variance of the diagonal detail, third cumulant of the second difference, spread).

    The diagonal Haar detail ``(x00 − x01 − x10 + x11) / 2`` of white noise has the noise's
    variance and is blind to any linear gradient of the signal; the second difference along x
    ``x0 − 2 x1 + x2`` has −6 times its third cumulant. `spread` is the signal's own variation
    in the tile (of the 2 x 2 means), which edges and texture raise.
    """
    h, w = (plane.shape[0] // (2 * TILE)) * 2 * TILE, (plane.shape[1] // (2 * TILE)) * 2 * TILE
    x = plane[:h, :w].astype(np.float64)
    q00, q01, q10, q11 = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    d = (q00 - q01 - q10 + q11) / 2
    m = (q00 + q01 + q10 + q11) / 4
    s2 = x[:, :-2] - 2 * x[:, 1:-1] + x[:, 2:]  # second differences along x
    s2 = np.pad(s2, ((0, 0), (0, 2)))

    def per_tile(a: np.ndarray, size: int) -> np.ndarray:  # (tiles_y, tiles_x, size*size)
        ty, tx = a.shape[0] // size, a.shape[1] // size
        return a[: ty * size, : tx * size].reshape(ty, size, tx, size).transpose(0, 2, 1, 3).reshape(ty, tx, -1)

    dt, mt, st = per_tile(d, TILE), per_tile(m, TILE), per_tile(s2[:, : w - 2 * TILE * 0], 2 * TILE)
    st = st[..., [i for i in range(st.shape[-1]) if i % (2 * TILE) < 2 * TILE - 2]]  # no padded columns
    sc = st - st.mean(axis=-1, keepdims=True)
    k3 = -np.mean(sc**3, axis=-1) / 6
    return mt.mean(-1).ravel(), np.mean(dt**2, axis=-1).ravel(), k3.ravel(), mt.var(-1).ravel()


def _levels(mean: np.ndarray, var: np.ndarray, k3: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """(mean, variance, third cumulant, tiles) per level of the local mean; the variance a median over tiles."""
    order = np.argsort(mean)
    rows = []
    for chunk in np.array_split(order, min(bins, max(2, mean.size // 30))):
        if chunk.size < 12:
            continue
        v = var[chunk]  # the median: texture only adds; a chi-square median is 0.958 of its mean
        rows.append((float(mean[chunk].mean()), float(np.median(v)) / 0.958, float(np.mean(k3[chunk])), chunk.size))
    return tuple(np.array(c, np.float64) for c in zip(*rows, strict=True)) if rows else ()


def _fit_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares y = slope · x + intercept (the slope 0 where x does not vary)."""
    if np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return 0.0, float(np.average(y, weights=w))
    slope, intercept = np.polyfit(x, y, 1, w=np.sqrt(w))
    return float(slope), float(intercept)


def estimate_noise(image: Any, *, channel_axis: int | None = None, bins: int = 16,
                   max_pixels: int = 4_000_000) -> NoiseModel:
    """Estimate the Poisson–Gaussian noise of an image from the image alone.

    Parameters
    ----------
    image : array-like
        2D image, stack (planes pooled) or multi-channel image (`channel_axis`; channels pooled),
        on its own intensity scale (any dtype). Larger images are subsampled by whole planes.
    bins : int
        Levels of the local mean the variance is measured at.
    max_pixels : int
        Pixels to use at most.

    Returns
    -------
    NoiseModel
        ``gain`` 0 when the noise does not grow with the signal (Gaussian noise, ``read`` its σ).

    Raises
    ------
    ValueError
        If the image is too small or holds no usable (finite, unclipped, smooth) pixels.
    """
    arr = np.asarray(image)
    if channel_axis is not None:
        arr = np.moveaxis(arr, channel_axis, 0)
    if arr.ndim < 2 or min(arr.shape[-2:]) < 32:
        raise ValueError(f"estimating the noise needs an image of at least 32 x 32 pixels, got shape {arr.shape}")
    planes = arr.reshape(-1, *arr.shape[-2:])
    step = max(1, int(np.ceil(planes.shape[0] * planes[0].size / max_pixels)))
    parts = []
    for plane in planes[::step]:
        plane = plane.astype(np.float64)
        finite = np.isfinite(plane)
        if not finite.all():
            plane = np.where(finite, plane, np.median(plane[finite]) if finite.any() else 0.0)
        m, v, k3, spread = _tiles(plane)
        lo, hi = plane.min(), plane.max()
        ok = (m > lo + 1e-9 * abs(lo)) & (m < hi - 1e-9 * abs(hi)) if np.ptp(plane) > 0 else np.ones_like(m, bool)
        parts.append((m[ok], v[ok], k3[ok], spread[ok]))
    mean, var, k3, spread = (np.concatenate(c) for c in zip(*parts, strict=True))
    first = _levels(mean, var, k3, bins)
    if first:  # a flat tile's 2 x 2 means vary by noise alone (a quarter of the level's variance); edges,
        # gradients and texture make them vary more: such tiles carry the signal's variation, not the noise's.
        # (Compared with the level's variance, not the tile's own: that would favour tiles with more noise.)
        calm = spread <= 2.5 * np.interp(mean, first[0], first[1]) / 4
        mean, var, k3 = mean[calm], var[calm], k3[calm]
    levels = _levels(mean, var, k3, bins)
    if not levels or len(levels[0]) < 2:
        raise ValueError("too few smooth, unclipped pixels to estimate the noise; give the noise model instead "
                         "(noise='gaussian', 'poisson' or a dict of gain, offset and read)")
    m, v, c3, n = levels
    for _ in range(4):  # weighted fit, levels far off the line (texture) dropped
        gain, b = _fit_line(m, v, n / np.maximum(v, 1e-12) ** 2)
        resid = (v - (gain * m + b)) / np.maximum(v, 1e-12)
        if len(m) <= 4 or np.abs(resid).max() < 0.2:
            break
        worst = int(np.argmax(resid))  # texture only raises the variance
        m, v, c3, n = (np.delete(a, worst) for a in (m, v, c3, n))
    span = float(m.max() - m.min())
    if gain <= 0 or gain * span < 0.25 * (gain * m.min() + b):  # the noise does not grow (by 25 %) with the signal
        return NoiseModel(0.0, 0.0, math.sqrt(max(float(np.average(v, weights=n)), 0.0)))
    # The variance line alone cannot tell the offset from read noise (only read² − gain · offset shows). The
    # third cumulant can: it is gain² (mean − offset), blind to Gaussian noise. It is a noisy measure, so
    # read noise is kept only where it clearly says so; else the offset is where the line reaches no variance.
    poisson_offset = -b / gain
    per_level = m - c3 / gain**2
    w = n / np.maximum(v, 1e-12) ** 3  # the variance of a third cumulant grows as the variance cubed
    offset = float(np.average(per_level, weights=w))
    stderr = math.sqrt(float(np.average((per_level - offset) ** 2, weights=w)) / max(len(m) - 1, 1))
    if offset - poisson_offset < max(3 * stderr, 0.05 * span):  # no clear sign of read noise
        return NoiseModel(gain, poisson_offset, 0.0)
    return NoiseModel(gain, offset, math.sqrt(b + gain * offset))


# ---------------------------------------------------------------------- variance stabilization
def stabilize(y: Any, model: NoiseModel) -> np.ndarray:
    """The generalized Anscombe transform: Poisson–Gaussian noise of `model` becomes Gaussian with σ ≈ 1.

    ``z = (2 / gain) · sqrt(gain · y + 3/8 · gain² + read² − gain · offset)`` (0 below its domain).
    """
    if model.gain <= 0:
        raise ValueError("stabilizing needs photon noise (gain > 0); Gaussian noise is already stable")
    a = model.gain
    inside = a * np.asarray(y, np.float64) + 0.375 * a * a + model.b
    return (2.0 / a) * np.sqrt(np.maximum(inside, 0.0))


def unstabilize(z: Any, model: NoiseModel) -> np.ndarray:
    """The closed-form approximation of the exact unbiased inverse of :func:`stabilize` (Mäkitalo & Foi 2013)."""
    a = model.gain
    d = np.maximum(np.asarray(z, np.float64), 1e-6)
    sigma2 = model.b / (a * a)  # (read² − gain · offset) / gain², the normalised Gaussian part
    s = math.sqrt(1.5)
    inv = d * d / 4 + 0.25 * s / d - 1.375 / d**2 + 0.625 * s / d**3 - 0.125 - sigma2
    return np.maximum(a * inv, model.offset)  # never fewer than no photons
