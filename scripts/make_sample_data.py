"""Write the small sample images shipped in ``sample_data/`` (File > Open Sample > Pix2Pix).

Everything is deterministic: the fluorescence-like images are the engine's seeded
procedural phantoms (no licence attached), the colorize sample is scikit-image's
``immunohistochemistry`` image ("no known copyright restrictions", bundled with
scikit-image, no download). Run from the repository root:

    python scripts/make_sample_data.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.images.synthesis import add_noise, random_mask

OUT = Path(__file__).resolve().parents[1] / "sample_data"
SIZE = (384, 384)


def _tif(name: str, arr: np.ndarray) -> None:
    tifffile.imwrite(OUT / name, arr, compression="zlib", photometric="minisblack")


def _png(name: str, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(OUT / name, optimize=True)


def denoise_pair() -> dict[str, str]:
    """A Poisson-Gaussian noisy fluorescence-like image and its clean reference (uint16)."""
    clean = phantoms.fluorescence(SIZE, seed=4)
    rng = np.random.default_rng(2024)
    noisy = add_noise(clean, {"photons": 12.0, "sigma": 0.02}, rng)
    _tif("denoise_clean.tif", phantoms.to_uint16(clean))
    _tif("denoise_noisy.tif", phantoms.to_uint16(noisy))
    return {"denoise_clean.tif": "clean reference", "denoise_noisy.tif": "noisy: 12 photons/unit + read noise 0.02"}


def inpaint_pair() -> dict[str, str]:
    """A fluorescence-like image with missing regions (set to 0) and the mask of those regions."""
    clean = phantoms.to_uint16(phantoms.fluorescence(SIZE, seed=5))
    rng = np.random.default_rng(7)
    mask = random_mask(SIZE, rng, coverage=(0.08, 0.1))
    mask[:, 200:204] = True  # a dead detector column
    mask[60:64, :] = True  # a dropped scan line
    damaged = np.where(mask, 0, clean).astype(np.uint16)
    _tif("inpaint_damaged.tif", damaged)
    _tif("inpaint_reference.tif", clean)
    _png("inpaint_mask.png", mask.astype(np.uint8))
    return {"inpaint_damaged.tif": "holes set to 0", "inpaint_mask.png": "1 where pixels are missing",
            "inpaint_reference.tif": "intact reference"}


def colorize_pair() -> dict[str, str]:
    """A grayscale brightfield histology image and its colour original."""
    from skimage import data
    from skimage.color import rgb2gray
    from skimage.transform import resize

    rgb = data.immunohistochemistry()
    rgb = (resize(rgb, SIZE, anti_aliasing=True) * 255).round().astype(np.uint8)
    gray = (rgb2gray(rgb) * 255).round().astype(np.uint8)
    _png("colorize_gray.png", gray)
    Image.fromarray(rgb).save(OUT / "colorize_reference.jpg", quality=90)
    return {"colorize_gray.png": "luminance of the IHC image",
            "colorize_reference.jpg": "scikit-image immunohistochemistry, resized"}


def translate_pair() -> dict[str, str]:
    """A blurred, noisy widefield-like image and the sharp image it came from (deblurring)."""
    sharp = phantoms.fluorescence(SIZE, seed=1)
    rng = np.random.default_rng(11)
    blurred = ndimage.gaussian_filter(sharp, 2.5)
    blurred = add_noise(blurred, {"photons": 0.0, "sigma": 0.01}, rng)
    _tif("translate_widefield.tif", phantoms.to_uint16(blurred))
    _tif("translate_sharp.tif", phantoms.to_uint16(sharp))
    return {"translate_widefield.tif": "blurred (Gaussian PSF, sigma 2.5 px) + noise",
            "translate_sharp.tif": "sharp target"}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    info: dict[str, str] = {}
    for make in (denoise_pair, inpaint_pair, colorize_pair, translate_pair):
        info.update(make())
    (OUT / "README.json").write_text(json.dumps(
        {"generator": "scripts/make_sample_data.py", "files": info}, indent=1) + "\n")
    for p in sorted(OUT.iterdir()):
        print(f"{p.name:28s} {p.stat().st_size / 1024:7.1f} KB")


if __name__ == "__main__":
    main()
