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


def fluorescence_volume(shape: tuple[int, int, int] = (32, 128, 128), seed: int = 0,
                        z_step: float = 3.0) -> np.ndarray:
    """A fluorescence-like volume (Z, Y, X) in [0, 1]: ellipsoidal nuclei and filaments, imaged anisotropically.

    Planes are `z_step` pixels apart (a typical confocal/widefield stack is 2-5x coarser in Z
    than in Y and X): the objects are drawn on an isotropic grid, blurred by an elongated PSF
    (sigma 1 px in Y/X, 2.5 px in Z on that grid) and sampled every `z_step`.
    """
    rng = np.random.default_rng(seed)
    d, h, w = shape
    depth = int(np.ceil(d * z_step))
    zz, yy, xx = np.mgrid[0:depth, 0:h, 0:w].astype(np.float32)
    vol = np.zeros((depth, h, w), np.float32)
    for _ in range(max(1, int(rng.integers(6, 14) * h * w / 128**2))):  # nuclei
        c = rng.uniform((0, 0, 0), (depth, h, w))
        r = rng.uniform(6, 12, 3) * rng.uniform(0.8, 1.2)
        inside = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 < 1
        vol = np.maximum(vol, inside * rng.uniform(0.4, 1.0))
    for _ in range(int(rng.integers(8, 20))):  # filaments: random walks through the volume
        p = rng.uniform((0, 0, 0), (depth, h, w))
        v = rng.normal(size=3)
        bright = rng.uniform(0.3, 0.9)
        for _ in range(int(rng.integers(50, 3 * max(h, w)))):
            v = v / (np.linalg.norm(v) + 1e-9) + rng.normal(0, 0.15, 3)
            p = p + v / (np.linalg.norm(v) + 1e-9)
            i = np.floor(p).astype(int)
            if not (0 <= i[0] < depth and 0 <= i[1] < h and 0 <= i[2] < w):
                break
            vol[i[0], i[1], i[2]] = max(vol[i[0], i[1], i[2]], bright)
    vol = ndimage.gaussian_filter(vol, (2.5, 1.0, 1.0))
    planes = vol[np.round(np.arange(d) * z_step).astype(int).clip(0, depth - 1)]
    planes = planes / max(float(np.percentile(planes, 99.9)), 1e-6)
    return np.clip(planes + 0.04, 0, 1.2).astype(np.float32)


# optical densities of haematoxylin and eosin per unit stain (rows of skimage.color.rgb_from_hed)
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29], np.float32)
_EOSIN = np.array([0.07, 0.99, 0.11], np.float32)


def histology(shape: tuple[int, int] = (256, 256), seed: int = 0, *, varied: bool = False) -> np.ndarray:
    """An H&E-like RGB image (H, W, 3) in [0, 1]: haematoxylin nuclei on eosin-stained tissue.

    Stain densities are rendered by Beer-Lambert absorption with the haematoxylin and eosin
    colour vectors, with random stain strength per image, fibrous stroma, cytoplasm and
    unstained lumen/background.

    With ``varied=True`` the image also varies the way real sections from different labs and
    scanners do: stain colour vectors (hue of haematoxylin from blue to purple, of eosin from
    pink to red), stain strengths, magnification (structures 0.6-1.8x), nucleus density,
    tissue texture, focus, white level and sensor noise. (``varied=False`` reproduces the
    images the first bundled colorizer was trained on, seed for seed.)
    """
    if varied:
        return _histology_varied(shape, seed)
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


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _histology_varied(shape: tuple[int, int], seed: int) -> np.ndarray:
    from skimage.transform import resize

    rng = np.random.default_rng([seed, 41])
    zoom = float(rng.uniform(0.6, 1.8))  # > 1: higher magnification, larger structures
    h, w = shape
    sh = (max(int(round(h / zoom)), 32), max(int(round(w / zoom)), 32))
    tissue = ndimage.gaussian_filter((_smooth_noise(rng, sh, min(sh) / rng.uniform(4, 12))
                                      > rng.uniform(-1.5, 0.3)).astype(np.float32), 2.0)
    fibres = filaments(sh, seed + 11, n=int(rng.integers(20, 160) * sh[0] * sh[1] / 256**2) + 1)
    stroma = 0.3 + 0.35 * (_smooth_noise(rng, sh, rng.uniform(1, 4)) + 2) / 4 + rng.uniform(0.2, 0.7) * fibres
    stroma *= 1 + rng.uniform(0.05, 0.3) * _smooth_noise(rng, sh, 0.7)  # fine tissue grain
    nuc = nuclei(sh, seed + 13, n=int(rng.integers(15, 200) * sh[0] * sh[1] / 256**2))
    nuc = np.clip((nuc - np.percentile(nuc, 20)) * 1.6, 0, None)
    e = tissue * np.clip(stroma, 0, None) * rng.uniform(0.15, 0.8)
    hem = (tissue * rng.uniform(0.03, 0.15) + nuc * tissue) * rng.uniform(0.5, 1.6)
    # stain vectors around the standard ones (Ruifrok & Johnston) within the spread that stain
    # estimation (Macenko et al.) finds across labs
    h_noise = rng.normal(0, 0.08, 3).astype(np.float32)
    h_vec = _unit(_HEMATOXYLIN + h_noise + np.array([0, 0, rng.uniform(0, 0.15)], np.float32))
    e_noise = rng.normal(0, 0.06, 3).astype(np.float32)
    e_vec = _unit(_EOSIN + e_noise + np.array([rng.uniform(0, 0.2), 0, rng.uniform(0, 0.25)], np.float32))
    od = hem[..., None] * np.abs(h_vec) + e[..., None] * np.abs(e_vec)
    if sh != (h, w):
        od = resize(od, (h, w, 3), order=1, anti_aliasing=zoom < 1).astype(np.float32)
    rgb = np.exp(-2.3 * od) * rng.uniform(0.82, 1.0) * (1 + rng.normal(0, 0.02, 3)).astype(np.float32)
    rgb = ndimage.gaussian_filter(rgb, (rng.uniform(0.3, 1.5),) * 2 + (0,))
    rgb = rgb + rng.normal(0, rng.uniform(0, 0.02), rgb.shape)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _palette_mix(rng: np.random.Generator, palette: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-pixel colour: a convex mix of palette rows, jittered per image."""
    scale = 1 + 0.15 * rng.standard_normal((len(palette), 1)) + 0.04 * rng.standard_normal(palette.shape)
    jitter = np.clip(palette * scale, 0, 1)
    return np.tensordot(weights, jitter.astype(np.float32), axes=([0], [0]))


def landscape(shape: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """A natural-photo-like RGB image (H, W, 3) in [0, 1]: sky with clouds above textured land.

    Or, for a third of the seeds, an aerial view: fields, woods, water and roads.
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    grain = 1 + 0.1 * _smooth_noise(rng, shape, 0.8) + 0.08 * _smooth_noise(rng, shape, 3)
    land_pal = np.array([[0.22, 0.42, 0.14], [0.10, 0.25, 0.08], [0.45, 0.36, 0.22], [0.62, 0.58, 0.35],
                         [0.30, 0.30, 0.28]], np.float32)  # grass, wood, soil, dry field, rock
    if rng.random() < 1 / 3:  # aerial: Voronoi fields
        k = int(rng.integers(8, 30))
        pts = np.stack([rng.uniform(0, h, k), rng.uniform(0, w, k)], 1).astype(int)
        labels = np.zeros(shape, np.int32)
        labels[pts[:, 0], pts[:, 1]] = np.arange(1, k + 1)
        _, idx = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        field = labels[idx[0], idx[1]]
        choice = rng.integers(0, len(land_pal), k + 1)
        wts = np.stack([(choice[field] == i).astype(np.float32) for i in range(len(land_pal))])
        img = _palette_mix(rng, land_pal, wts) * grain[..., None]
        water = ndimage.gaussian_filter(rng.standard_normal(shape), min(h, w) / 10) > 0.5 * rng.uniform(1, 3)
        img[water] = np.array([0.18, 0.28, 0.35], np.float32) * (1 + 0.05 * _smooth_noise(rng, shape, 2))[water, None]
        edges = np.abs(np.diff(field, axis=0, prepend=field[:1])) + np.abs(np.diff(field, axis=1, prepend=field[:, :1]))
        img[edges > 0] = rng.uniform(0.55, 0.75)  # roads and field borders
    else:  # horizon view
        horizon = (h * rng.uniform(0.25, 0.6) + h * 0.06 * _smooth_noise(rng, (1, w), w / 8)[0]).astype(int)
        yy = np.arange(h)[:, None]
        sky_mask = yy < horizon[None, :]
        t = np.clip(yy / np.maximum(horizon[None, :], 1), 0, 1)[..., None]
        top = np.array([0.22, 0.42, 0.78]) * rng.uniform(0.7, 1.1)
        low = np.array([0.72, 0.82, 0.93])
        sky = (1 - t) * top + t * low
        clouds = np.clip(_smooth_noise(rng, shape, rng.uniform(4, 12)) - rng.uniform(0.3, 1.5), 0, 1)[..., None]
        sky = sky * (1 - clouds) + clouds * rng.uniform(0.85, 1.0)
        mix = np.stack([np.exp(2 * _smooth_noise(rng, shape, rng.uniform(4, 20))) for _ in land_pal])
        land = _palette_mix(rng, land_pal, mix / mix.sum(0)) * grain[..., None]
        img = np.where(sky_mask[..., None], sky, land)
    img = img * rng.uniform(0.75, 1.1)
    return np.clip(ndimage.gaussian_filter(img, (0.5, 0.5, 0)), 0, 1).astype(np.float32)


def to_uint16(img: np.ndarray, max_value: int = 4000, offset: int = 100) -> np.ndarray:
    """Scale a [0, 1] phantom to a 16-bit camera-like range."""
    return np.clip(np.rint(img * max_value + offset), 0, 65535).astype(np.uint16)
