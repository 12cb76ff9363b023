"""Pair synthesis from clean images: noise for denoise, masks for inpaint, gray for colorize.

Everything works on clean images scaled to about [0, 1] and on numpy random generators,
so that a seeded run draws the same degradations.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.normalization import LUMA


@dataclass(frozen=True)
class NoiseConfig:
    """Noise drawn for each synthesized denoise pair (intensities of the clean image in [0, 1]).

    Attributes
    ----------
    gaussian_sigma : (float, float)
        Range of the Gaussian noise standard deviation (uniform); (s, s) for a fixed level.
    photons : (float, float)
        Range of photons at full intensity for Poisson-Gaussian noise (log-uniform); (0, 0)
        disables photon noise.
    read_noise : (float, float)
        Range of the Gaussian read noise added to photon noise.
    poisson_fraction : float
        Share of pairs with Poisson-Gaussian rather than plain Gaussian noise.
    """

    gaussian_sigma: tuple[float, float] = (0.0, 50 / 255)
    photons: tuple[float, float] = (5.0, 100.0)
    read_noise: tuple[float, float] = (0.0, 0.03)
    poisson_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("gaussian_sigma", "photons", "read_noise"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"noise {name} must be a range 0 <= low <= high, got ({lo}, {hi})")
        if self.photons[1] == 0:
            object.__setattr__(self, "poisson_fraction", 0.0)
        elif self.photons[0] <= 0:
            raise ValueError(f"photons must be positive, got {self.photons}")
        if not 0 <= self.poisson_fraction <= 1:
            raise ValueError(f"poisson_fraction must be in [0, 1], got {self.poisson_fraction}")

    @classmethod
    def gaussian(cls, sigma: float | tuple[float, float]) -> NoiseConfig:
        """Gaussian noise only, at a fixed level or a range (in [0, 1] intensity units)."""
        lo, hi = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
        return cls(gaussian_sigma=(float(lo), float(hi)), photons=(0.0, 0.0), poisson_fraction=0.0)

    @classmethod
    def matched(cls, noisy: np.ndarray, spread: float = 0.25) -> NoiseConfig:
        """Gaussian noise matched to the level measured on a noisy image of the user's.

        The level is estimated with :func:`skimage.restoration.estimate_sigma` on the image
        scaled by its 0.5-99.9 percentiles, and used within ±`spread` of it.
        """
        from skimage.restoration import estimate_sigma

        x = np.asarray(noisy, np.float32)
        lo, hi = np.percentile(x, (0.5, 99.9))
        s = float(np.mean(estimate_sigma((x - lo) / max(hi - lo, 1e-12))))  # type: ignore[arg-type,unused-ignore]
        return cls.gaussian((s * (1 - spread), s * (1 + spread)))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """Draw the parameters of one degradation."""
        if rng.random() < self.poisson_fraction:
            p = float(np.exp(rng.uniform(np.log(self.photons[0]), np.log(self.photons[1]))))
            return {"photons": p, "sigma": float(rng.uniform(*self.read_noise))}
        return {"photons": 0.0, "sigma": float(rng.uniform(*self.gaussian_sigma))}


def add_noise(clean: np.ndarray, params: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Degrade `clean` (about [0, 1]) with the noise `params` drawn by :meth:`NoiseConfig.draw`."""
    x = clean.astype(np.float32)
    if params["photons"] > 0:
        p = params["photons"]
        x = rng.poisson(np.clip(x, 0, None) * p).astype(np.float32) / np.float32(p)
    if params["sigma"] > 0:
        x = x + rng.normal(0, params["sigma"], x.shape).astype(np.float32)
    return x


def random_mask(
    shape: tuple[int, int], rng: np.random.Generator, coverage: tuple[float, float] = (0.05, 0.3)
) -> np.ndarray:
    """A random inpainting mask: strokes, blobs, boxes and dead pixels covering ~`coverage`."""
    h, w = shape
    target = rng.uniform(*coverage)
    mask = np.zeros(shape, bool)
    for _ in range(50):
        if mask.mean() >= target:
            break
        kind = rng.choice(["stroke", "blob", "box", "pixels"], p=[0.35, 0.3, 0.25, 0.1])
        if kind == "stroke":
            n = rng.integers(2, 6)
            pts = np.stack([rng.uniform(0, h, n), rng.uniform(0, w, n)], 1)
            width = rng.uniform(2, max(3, min(h, w) / 20))
            yy, xx = np.mgrid[0:h, 0:w]
            for a, b in zip(pts[:-1], pts[1:], strict=False):
                d = b - a
                t = np.clip(((yy - a[0]) * d[0] + (xx - a[1]) * d[1]) / max(d @ d, 1e-6), 0, 1)
                dist = np.hypot(yy - a[0] - t * d[0], xx - a[1] - t * d[1])
                mask |= dist < width / 2
        elif kind == "blob":
            noise = ndimage.gaussian_filter(rng.standard_normal(shape), rng.uniform(3, max(4, min(h, w) / 10)))
            mask |= noise > np.quantile(noise, 1 - rng.uniform(0.03, 0.1))
        elif kind == "box":
            bh = int(rng.integers(max(2, h // 16), max(3, h // 4)))
            bw = int(rng.integers(max(2, w // 16), max(3, w // 4)))
            y0, x0 = rng.integers(0, max(1, h - bh)), rng.integers(0, max(1, w - bw))
            mask[y0 : y0 + bh, x0 : x0 + bw] = True
        else:
            mask |= rng.random(shape) < rng.uniform(0.002, 0.02)
    return mask


def random_mask_3d(shape: tuple[int, ...], rng: np.random.Generator, coverage: tuple[float, float] = (0.05, 0.3)
                   ) -> np.ndarray:
    """A random 3D inpainting mask (Z, Y, X): blobs, boxes and dead voxels covering ~`coverage`."""
    target = rng.uniform(*coverage)
    mask = np.zeros(shape, bool)
    for _ in range(50):
        if mask.mean() >= target:
            break
        kind = rng.choice(["blob", "box", "voxels"], p=[0.45, 0.45, 0.1])
        if kind == "blob":
            sigma = [max(1.0, n / 10) for n in shape]
            noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
            mask |= noise > np.quantile(noise, 1 - rng.uniform(0.03, 0.1))
        elif kind == "box":
            size = [int(rng.integers(max(1, n // 16), max(2, n // 3))) for n in shape]
            start = [int(rng.integers(0, max(1, n - s))) for n, s in zip(shape, size, strict=True)]
            mask[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))] = True
        else:
            mask |= rng.random(shape) < rng.uniform(0.002, 0.02)
    return mask


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance of channels-first RGB (3, H, W) -> (1, H, W), as skimage.color.rgb2gray."""
    return np.tensordot(LUMA, rgb[:3].astype(np.float32), axes=1)[None]
