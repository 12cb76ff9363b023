"""Sample data (File > Open Sample > Pix2Pix): small files shipped in the package, no download.

Each function returns napari layer-data tuples ``(data, kwargs, layer_type)``. The files
are written by ``scripts/make_sample_data.py``.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import numpy as np

from ..engine.images.io import read_image

LayerData = tuple[Any, dict[str, Any], str]


def sample_path(name: str) -> Any:
    """A file of the package's ``sample_data`` folder (a Traversable; ``str()`` gives its path)."""
    return files("napari_pix2pix") / "sample_data" / name


def _read(name: str) -> np.ndarray:
    return read_image(str(sample_path(name)))


def _meta(task: str, role: str, **more: str) -> dict[str, Any]:
    """What the widgets read of a sample layer: its task, its role (input, clean, target, mask), its model."""
    return {"napari_pix2pix_sample": {"task": task, "role": role, **more}}


def denoise_sample() -> list[LayerData]:
    """A noisy fluorescence-like image (16-bit, photon + read noise) and its clean reference."""
    clean, noisy = _read("denoise_clean.tif"), _read("denoise_noisy.tif")
    lo, hi = (float(v) for v in np.percentile(clean, (0.1, 99.9)))
    common = {"contrast_limits": (lo, hi), "colormap": "gray"}
    return [
        (clean, {"name": "clean reference", "visible": False, "metadata": _meta("denoise", "clean"), **common},
         "image"),
        (noisy, {"name": "noisy", "metadata": _meta("denoise", "input"), **common}, "image"),
    ]


def inpaint_sample() -> list[LayerData]:
    """A fluorescence-like image with missing regions, the mask of those regions, and the intact image."""
    damaged, reference = _read("inpaint_damaged.tif"), _read("inpaint_reference.tif")
    mask = (_read("inpaint_mask.png") > 0).astype(np.uint8)
    lo, hi = (float(v) for v in np.percentile(reference, (0.1, 99.9)))
    common = {"contrast_limits": (lo, hi), "colormap": "gray"}
    return [
        (reference, {"name": "intact reference", "visible": False, "metadata": _meta("inpaint", "clean"), **common},
         "image"),
        (damaged, {"name": "damaged", "metadata": _meta("inpaint", "input"), **common}, "image"),
        (mask, {"name": "damage mask", "opacity": 0.5, "metadata": _meta("inpaint", "mask")}, "labels"),
    ]


def colorize_sample() -> list[LayerData]:
    """A grayscale H&E-stained section and its true colours: the stain the bundled ``colorize-he`` is for.

    The Colorize widget chooses ``colorize-he`` for it (the layer's metadata names the model).
    The section is StarDist's H&E test image (from The Cancer Imaging Archive).
    """
    gray, rgb = _read("colorize_gray.png"), _read("colorize_reference.jpg")
    return [
        (rgb, {"name": "colour reference", "visible": False, "rgb": True, "metadata": _meta("colorize", "clean")},
         "image"),
        (gray, {"name": "grayscale H&E", "colormap": "gray",
                "metadata": _meta("colorize", "input", model="colorize-he")}, "image"),
    ]


def translate_sample() -> list[LayerData]:
    """A blurred widefield-like image and the sharp image it was made from (a translation pair)."""
    sharp, wide = _read("translate_sharp.tif"), _read("translate_widefield.tif")
    return [
        (sharp, {"name": "sharp target", "visible": False, "colormap": "gray",
                 "metadata": _meta("translate", "target")}, "image"),
        (wide, {"name": "widefield", "colormap": "gray", "metadata": _meta("translate", "input")}, "image"),
    ]


def volume_sample() -> list[LayerData]:
    """A noisy fluorescence-like volume (Z, Y, X; 16-bit, photon + read noise), generated, and its clean reference.

    Planes are 3 px apart (``scale`` (3, 1, 1)): view it with napari's 3D view; train a 3D
    model on it (Train › Dimensions › 3D) or denoise it plane by plane.
    """
    from ..engine.images.phantoms import fluorescence_volume, to_uint16

    clean = fluorescence_volume((32, 128, 128), seed=5)
    rng = np.random.default_rng(5)
    photons = 40.0
    noisy = rng.poisson(np.clip(clean, 0, None) * photons) / photons + rng.normal(0, 0.03, clean.shape)
    clean16, noisy16 = to_uint16(clean), to_uint16(noisy.astype(np.float32))
    lo, hi = (float(v) for v in np.percentile(clean16, (0.1, 99.9)))
    common = {"contrast_limits": (lo, hi), "colormap": "gray", "scale": (3.0, 1.0, 1.0)}
    return [
        (clean16, {"name": "clean volume", "visible": False, "metadata": _meta("denoise", "clean"), **common},
         "image"),
        (noisy16, {"name": "noisy volume", "metadata": _meta("denoise", "input"), **common}, "image"),
    ]


SAMPLES = {
    "denoise": denoise_sample,
    "inpaint": inpaint_sample,
    "colorize": colorize_sample,
    "translate": translate_sample,
    "volume": volume_sample,
}
