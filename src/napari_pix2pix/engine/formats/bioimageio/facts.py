"""The numbers and names a bioimage.io package declares: its tiling geometry, intensity mappings and ids."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.network import Network
from ...core.normalization import SCALE, safe_range

PIX2PIX_CITATION = ("Isola P, Zhu J-Y, Zhou T, Efros AA. Image-to-Image Translation with Conditional Adversarial "
                    "Networks. CVPR 2017.")
PIX2PIX_DOI = "10.1109/CVPR.2017.632"
OUTPUT_IDS = {"denoise": "denoised", "inpaint": "inpainted", "colorize": "colorized", "translate": "translated"}
TAGS = {"denoise": "denoising", "inpaint": "inpainting", "colorize": "colorization", "translate": "image-to-image"}


def safe_name(name: str, task: str) -> str:
    """The model's name as bioimage.io accepts it (5 to 64 plain characters)."""
    clean = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip() or task
    if len(clean) < 5:
        clean = f"{clean} {task} model"[:64]
    return clean[:64]


def channel_names(n: int, colour: bool = False) -> list[str]:
    """Names of `n` channels: gray, red/green/blue for colour, else channel0, channel1, ..."""
    if colour and n == 3:
        return ["red", "green", "blue"]
    return ["gray"] if n == 1 else [f"channel{i}" for i in range(n)]


def json_safe(value: Any) -> Any:
    """Metadata as plain YAML values (non-finite floats become None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def outputs_intensities(model: Network) -> bool:
    """Whether the package's output is in intensities (fixed output or input range), not normalized units."""
    norm = model.normalization
    return norm.output == "fixed" or norm.input == "fixed"


def output_affine(model: Network) -> tuple[float, float]:
    """(gain, offset) of the package's output ``scale_linear``: network units to output units."""
    norm = model.normalization
    if norm.output == "fixed" or norm.input == "fixed":  # a fixed range: exactly our intensities
        olo, ohi = safe_range(norm.out_lo, norm.out_hi) if norm.output == "fixed" else safe_range(norm.in_lo,
                                                                                                    norm.in_hi)
        gain = (ohi - olo) / (2 * SCALE)
        return gain, olo + SCALE * gain
    return 1 / (2 * SCALE), 0.5  # normalized units of the input: its low/high percentiles -> 0/1


def input_affine(model: Network) -> tuple[float, float]:
    """(gain, offset) taking intensities to network units, for a model with a fixed input range."""
    norm = model.normalization
    lo, hi = safe_range(norm.in_lo, norm.in_hi)
    gain = 2 * SCALE / (hi - lo)
    return gain, -lo * gain - SCALE


def package_preprocess(model: Network, image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The package's preprocessing of a (C, H, W) image, as bioimageio.core computes it."""
    norm = model.normalization
    if norm.input == "fixed":
        gain, offset = input_affine(model)
        return (image.astype(np.float64) * gain + offset).astype(np.float32)
    lo, hi = np.percentile(image.astype(np.float64), (norm.low, norm.high))
    x = (image.astype(np.float64) - lo) / (hi - lo + eps)
    return (x * 2 * SCALE - SCALE).astype(np.float32)


def receptive_field(config: Any) -> int:
    """The U-Net's theoretical receptive field along x (see :attr:`UNetConfig.receptive_field`)."""
    return int(config.receptive_field[-1])


def halo(config: Any) -> int:
    """The halo a package states along x: half the size multiple (see :attr:`UNetConfig.halo`)."""
    return int(config.halo[-1])


@dataclass(frozen=True)
class Geometry:
    """The network's tiling facts as a package states them: along x (y is the same), and per spatial axis."""

    multiple: int
    halo: int
    receptive_field: int
    axes: tuple[str, ...] = ("y", "x")
    multiples: tuple[int, ...] = ()
    halos: tuple[int, ...] = ()

    @classmethod
    def of(cls, config: Any) -> Geometry:
        """The geometry of a network's config (2D or 3D)."""
        axes = ("z", "y", "x") if config.spatial_dims == 3 else ("y", "x")
        return cls(config.size_multiple[-1], config.halo[-1], config.receptive_field[-1], axes,
                   tuple(config.size_multiple), tuple(config.halo))
