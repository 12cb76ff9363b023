"""Write the small sample images shipped in ``sample_data/`` (File > Open Sample > Pix2Pix).

Everything is deterministic: the fluorescence-like images are the engine's seeded
procedural phantoms (no licence attached); the colorize sample is a real H&E-stained section,
the image StarDist ships as ``stardist.data.test_image_he_2d`` (from The Cancer Imaging Archive;
in the BSD-3-Clause stardist 0.9.2 wheel, which ``benchmarks/fetch_eval_data.sh`` downloads and
unpacks): the stain the bundled ``colorize-he`` is for. Run from the repository root:

    bash benchmarks/fetch_eval_data.sh          # once: the stardist wheel's images (for the H&E sample)
    python scripts/make_sample_data.py [colorize ...]   # all samples, or the named ones
"""

from __future__ import annotations

import json
import os
import sys
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


HE_IMAGE = Path(os.environ.get("P2P_EVAL_RAW", "/tmp/p2p-evaldata/raw")) / "stardist/data/images/histo.jpg"


def colorize_pair() -> dict[str, str]:
    """A grayscale H&E section (its luminance, as the colorizers see gray) and its true colours."""
    from napari_pix2pix.engine.images.synthesis import to_gray

    if not HE_IMAGE.is_file():
        raise SystemExit(f"{HE_IMAGE} is missing: run `bash benchmarks/fetch_eval_data.sh` first "
                         "(or set P2P_EVAL_RAW to the folder it unpacks into)")
    rgb = np.asarray(Image.open(HE_IMAGE).convert("RGB"))  # 300 x 500, kept whole: no resampling of the stain
    gray = to_gray(np.moveaxis(rgb.astype(np.float32) / 255, -1, 0))[0]
    _png("colorize_gray.png", (np.clip(gray, 0, 1) * 255).round().astype(np.uint8))
    Image.fromarray(rgb).save(OUT / "colorize_reference.jpg", quality=95)
    return {"colorize_gray.png": "luminance of the H&E section",
            "colorize_reference.jpg": "H&E-stained section (The Cancer Imaging Archive, via stardist 0.9.2, "
                                      "BSD-3-Clause: stardist.data.test_image_he_2d), true colours"}


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


MAKERS = {"denoise": denoise_pair, "inpaint": inpaint_pair, "colorize": colorize_pair, "translate": translate_pair}


def main(names: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    readme = OUT / "README.json"
    info: dict[str, str] = json.loads(readme.read_text())["files"] if names and readme.is_file() else {}
    for name in names or list(MAKERS):
        info.update(MAKERS[name]())
    (OUT / "README.json").write_text(json.dumps(
        {"generator": "scripts/make_sample_data.py", "files": info}, indent=1) + "\n")
    for p in sorted(OUT.iterdir()):
        print(f"{p.name:28s} {p.stat().st_size / 1024:7.1f} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
