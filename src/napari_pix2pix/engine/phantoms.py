"""Procedural microscopy-like images: nuclei, cells, filaments, membranes.

Clean, seeded, redistributable images with realistic blur, background and intensity
ranges, for sample data, tests and training the bundled models.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (n - n.mean()) / (n.std() + 1e-12)


def nuclei(shape: tuple[int, int] = (256, 256), seed: int = 0, n: int | None = None) -> np.ndarray:
    """Blurred elliptical nuclei with textured chromatin on a smooth background, in [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = shape
    n = n if n is not None else int(rng.integers(8, 30) * h * w / 256**2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros(shape, np.float32)
    texture = 0.75 + 0.25 * _smooth_noise(rng, shape, 1.5)
    for _ in range(max(n, 1)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(6, 18) * min(h, w) / 256 + 3
        a, b = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3)
        t = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        inside = (u**2 + v**2) < 1
        img = np.maximum(img, inside * rng.uniform(0.4, 1.0) * texture)
    img = ndimage.gaussian_filter(img, rng.uniform(0.8, 2.0))
    bg = 0.05 + 0.05 * (_smooth_noise(rng, shape, min(h, w) / 6) + 2) / 4
    return np.clip(img + bg, 0, None).astype(np.float32)


def filaments(shape: tuple[int, int] = (256, 256), seed: int = 0, n: int | None = None) -> np.ndarray:
    """Thin curved filaments (cytoskeleton-like), blurred by a PSF, in [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = shape
    n = n if n is not None else int(rng.integers(15, 40) * h * w / 256**2) + 1
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        curv = rng.normal(0, 0.008)
        bright = rng.uniform(0.3, 1.0)
        for _ in range(int(rng.integers(50, 4 * max(h, w)))):
            angle += curv + rng.normal(0, 0.03)
            y, x = y + np.sin(angle), x + np.cos(angle)
            if not (0 <= y < h and 0 <= x < w):
                break
            img[int(y), int(x)] = max(img[int(y), int(x)], bright)
    img = ndimage.gaussian_filter(img, rng.uniform(0.7, 1.5))
    img /= max(float(img.max()), 1e-6)
    return (img * rng.uniform(0.6, 1.0) + 0.04).astype(np.float32)


def membranes(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """Cell outlines from a Voronoi tessellation (membrane stain), in [0, 1]."""
    rng = np.random.default_rng(seed)
    h, w = shape
    k = int(rng.integers(10, 40) * h * w / 256**2) + 2
    pts = np.stack([rng.uniform(0, h, k), rng.uniform(0, w, k)], 1)
    labels = np.zeros(shape, np.int32)
    labels[pts[:, 0].astype(int), pts[:, 1].astype(int)] = np.arange(1, k + 1)
    _, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    vor = labels[idx[0], idx[1]]
    edges = (np.abs(np.diff(vor, axis=0, prepend=vor[:1])) + np.abs(np.diff(vor, axis=1, prepend=vor[:, :1]))) > 0
    img = ndimage.gaussian_filter(edges.astype(np.float32), rng.uniform(0.8, 1.6))
    img /= max(float(img.max()), 1e-6)
    cyto = ndimage.gaussian_filter(rng.uniform(0.05, 0.2, k + 1)[vor].astype(np.float32), 2)
    return (img * 0.8 + cyto + 0.03).astype(np.float32)


def fluorescence(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """A random mix of nuclei, filaments and membranes, in [0, 1]."""
    rng = np.random.default_rng(seed)
    parts = [nuclei(shape, seed + 1), filaments(shape, seed + 2), membranes(shape, seed + 3)]
    wts = rng.dirichlet(np.ones(3) * 0.7)
    img = sum(wi * p for wi, p in zip(wts, parts, strict=True))
    img = img / max(float(np.percentile(img, 99.9)), 1e-6)
    return np.clip(img, 0, 1.2).astype(np.float32)


# optical densities of haematoxylin and eosin per unit stain (rows of skimage.color.rgb_from_hed)
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29], np.float32)
_EOSIN = np.array([0.07, 0.99, 0.11], np.float32)


def histology(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """An H&E-like RGB image (H, W, 3) in [0, 1]: haematoxylin nuclei on eosin-stained tissue.

    Stain densities are rendered by Beer-Lambert absorption with the haematoxylin and eosin
    colour vectors, with random stain strength per image, fibrous stroma, cytoplasm and
    unstained lumen/background.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    tissue = ndimage.gaussian_filter((_smooth_noise(rng, shape, min(h, w) / 8) > rng.uniform(-1.2, 0.2)).astype(
        np.float32), 2.0)
    fibres = filaments(shape, seed + 11, n=int(rng.integers(40, 120) * h * w / 256**2) + 1)
    stroma = 0.35 + 0.35 * (_smooth_noise(rng, shape, 3) + 2) / 4 + 0.5 * fibres
    nuc = nuclei(shape, seed + 13, n=int(rng.integers(20, 90) * h * w / 256**2))
    nuc = np.clip((nuc - np.percentile(nuc, 20)) * 1.6, 0, None)
    e = tissue * stroma * rng.uniform(0.2, 0.65)
    hem = (tissue * 0.08 + nuc * tissue) * rng.uniform(0.6, 1.4)
    od = hem[..., None] * _HEMATOXYLIN + e[..., None] * _EOSIN
    od = od * (1 + 0.05 * rng.standard_normal(3).astype(np.float32))  # scanner / batch colour shift
    rgb = np.exp(-2.3 * od) * rng.uniform(0.9, 1.0)
    return np.clip(ndimage.gaussian_filter(rgb, (0.6, 0.6, 0)), 0, 1).astype(np.float32)


def to_uint16(img: np.ndarray, max_value: int = 4000, offset: int = 100) -> np.ndarray:
    """Scale a [0, 1] phantom to a 16-bit camera-like range."""
    return np.clip(np.rint(img * max_value + offset), 0, 65535).astype(np.uint16)
