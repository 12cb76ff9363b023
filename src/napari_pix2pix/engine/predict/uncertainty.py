"""Where is the output unsure? Sample spread and residual structure.

A GAN can invent plausible structure that is not in the sample. Two checks, shown next to
every result:

- **uncertainty**: the per-pixel spread (standard deviation) of predictions over the 8
  flips/rotations of the image (16 for a volume with a 3D model: each also flipped in Z)
  and, where the generator has dropout, dropout samples (the paper keeps dropout on at
  test time as its noise source). Each sample is a full
  prediction, so `samples` multiplies the prediction time.
- **residual** (denoise): input − output on the input's scale. Real noise leaves a residual
  without image structure; where the residual correlates with the output's edges, signal
  was removed (or invented) there.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from torch import nn

from ..core.network import Network
from ..core.progress import Progress, relay
from ..images.noise import NoiseModel
from .tiled import _check_image, predict_iter, tta_transforms


def has_dropout(model: Network) -> bool:
    """True if the generator has active dropout layers."""
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.generator.modules())


def uncertainty_iter(
    model: Network, image: Any, mask: Any = None, *, samples: int = 8, channel_axis: int | None = None,
    **kwargs: Any,
) -> Generator[Progress, None, np.ndarray]:
    """Per-pixel standard deviation over `samples` augmented (and dropout) predictions.

    Returns a float32 map of the output's shape without its channel axis (channels are
    averaged), on the output's intensity scale. Yields :class:`Progress` over all samples.
    """
    if samples < 2:
        raise ValueError(f"uncertainty needs at least 2 samples, got {samples}")
    dropout = has_dropout(model)
    mean = m2 = None
    total_done = 0
    out_channel_axis = None
    order = tta_transforms(True, model.spatial_dims)  # volumes: alternately flipped in Z, so few samples see both
    for s in range(samples):
        augment = order[s % len(order)]
        gen = predict_iter(model, image, mask, channel_axis=channel_axis, mc_dropout=dropout, augment=augment,
                           output_dtype=np.float32, **kwargs)
        tiles = [0]  # tiles of one sample

        def recount(p: Progress, s: int = s, tiles: list[int] = tiles, before: int = total_done) -> Progress:
            tiles[0] = p.total
            return Progress(before + p.done, p.total * samples, f"uncertainty sample {s + 1}/{samples}")

        pred = yield from relay(gen, recount=recount)
        assert pred is not None  # no cancel hook: relay returns the prediction
        total_done += tiles[0]
        if mean is None:
            mean = np.zeros(pred.shape, np.float64)
            m2 = np.zeros(pred.shape, np.float64)
            out_channel_axis = _output_channel_axis(model, image, channel_axis, pred.ndim)
        delta = pred - mean
        mean += delta / (s + 1)
        m2 += delta * (pred - mean)
    assert m2 is not None
    std = np.sqrt(m2 / (samples - 1)).astype(np.float32)
    if out_channel_axis is not None:
        std = std.mean(axis=out_channel_axis)
    return std


def _output_channel_axis(model: Network, image: Any, channel_axis: int | None, out_ndim: int) -> int | None:
    shape, _, ca = _check_image(image, channel_axis, model.spatial_dims)
    if ca is not None:
        return ca
    return out_ndim - 1 if out_ndim > len(shape) else None


@dataclass(frozen=True)
class ResidualReport:
    """The residual of a denoising and how much image structure it holds.

    Attributes
    ----------
    residual : ndarray
        input − output (float32, the input's scale).
    score : float
        Correlation of the residual with the output's high-pass structure (0: no structure,
        like pure noise; towards 1: the residual looks like signal that was removed).
    autocorrelation : float
        Mean lag-1 spatial autocorrelation of the residual (≈0 for white noise).
    local : ndarray
        Local correlation map (float32, same shape as `residual`).
    flagged : ndarray
        True where the local correlation exceeds `threshold`, or (with a noise model) where the
        residual holds far more than the noise: regions to check.
    noise_ratio : float or None
        With a noise model: the residual's variance over the noise's (≈1: the noise was removed and
        no more; well above 1: signal went with it; well below 1: noise is left).
    removed_signal, remaining_noise : ndarray or None
        With a noise model: where the residual holds more than :data:`RATIO_HIGH` times the noise
        (signal removed), and where less than :data:`RATIO_LOW` times (noise left in the output).
    """

    residual: np.ndarray
    score: float
    autocorrelation: float
    local: np.ndarray
    flagged: np.ndarray
    noise_ratio: float | None = None
    removed_signal: np.ndarray | None = None
    remaining_noise: np.ndarray | None = None


RATIO_HIGH = 2.0  # residual variance over the noise's above which signal was removed (calibrated: benchmarks/)
RATIO_LOW = 0.35  # ... below which noise is left in the output


def residual_report(image: np.ndarray, output: np.ndarray, *, sigma: float = 4.0, threshold: float = 0.45,
                    noise: NoiseModel | None = None) -> ResidualReport:
    """Analyse the residual of a denoising (works on 2D images and on stacks plane by plane).

    Parameters
    ----------
    image, output : ndarray
        The noisy input and the denoised output, same shape.
    sigma : float
        Size (Gaussian sigma, pixels) of the local windows.
    threshold : float
        Local correlation above which a region is flagged.
    noise : NoiseModel, optional
        The image's noise (e.g. :func:`~napari_pix2pix.engine.images.noise.estimate_noise` of
        `image`): the residual's local variance is then compared with the variance the noise
        has at the output's intensity.

    Returns
    -------
    ResidualReport
    """
    image = np.asarray(image, np.float32)
    output = np.asarray(output, np.float32)
    if image.shape != output.shape:
        raise ValueError(f"image {image.shape} and output {output.shape} differ in shape")
    res = image - output
    axes = (-2, -1)
    sig = [0.0] * (res.ndim - 2) + [sigma, sigma]
    def band(x: np.ndarray) -> np.ndarray:  # edges at 1-3 px: above the noise's scale, where removed signal shows
        fine, coarse = ([0.0] * (x.ndim - 2) + [s, s] for s in (1.0, 3.0))
        return ndimage.gaussian_filter(x, fine) - ndimage.gaussian_filter(x, coarse)

    structure = band(output)  # the output's edges
    r0 = band(res)  # the residual in the same band: noise, plus the signal a denoiser removed at the edges
    num = ndimage.gaussian_filter(r0 * structure, sig)
    # the output's structure energy is floored by the residual's: in flat regions a denoiser's output keeps a
    # shrunk copy of the noise, which the residual correlates with perfectly; that is no signal removed
    r_energy = ndimage.gaussian_filter(r0**2, sig)
    den = np.sqrt(r_energy * (ndimage.gaussian_filter(structure**2, sig) + r_energy)) + 1e-12
    local = (num / den).astype(np.float32)
    a = r0.reshape(-1) - r0.mean()
    b = structure.reshape(-1) - structure.mean()
    na, nb = float(np.dot(a, a)), float(np.dot(b, b))
    score = float(np.dot(a, b) / (np.sqrt(na * (nb + na)) + 1e-12))
    rc = res - res.mean(axis=axes, keepdims=True)
    var = float(np.mean(rc**2)) + 1e-12
    ac = 0.5 * (float(np.mean(rc[..., 1:, :] * rc[..., :-1, :])) + float(np.mean(rc[..., :, 1:] * rc[..., :, :-1])))
    flagged = local > threshold
    if noise is None:
        return ResidualReport(res.astype(np.float32), score, ac / var, local, flagged)
    expected = noise.variance(output).astype(np.float64)
    ratio_map = ndimage.gaussian_filter(rc.astype(np.float64) ** 2, sig) / (
        ndimage.gaussian_filter(expected, sig) + 1e-12)
    ratio = float(np.mean(rc.astype(np.float64) ** 2) / (float(np.mean(expected)) + 1e-12))
    removed, remaining = ratio_map > RATIO_HIGH, ratio_map < RATIO_LOW
    return ResidualReport(res.astype(np.float32), score, ac / var, local, flagged | removed, ratio, removed,
                          remaining)
