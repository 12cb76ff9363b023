"""Reading and writing image files: TIFF (16-bit, multi-page), PNG, JPEG."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .modelfile import atomic_write_bytes

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files (TIFF/PNG/JPEG) directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {str(folder)!r} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file; TIFF keeps its dtype and all pages (as a stack)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        if suffix in (".png", ".jpg", ".jpeg"):
            from skimage import io as skio

            return np.asarray(skio.imread(path))
    except Exception as e:
        raise ValueError(f"could not read {path.name}: {e}") from e
    raise ValueError(f"{path.name}: unsupported image format {suffix!r}; use one of {IMAGE_SUFFIXES}")


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write `image` atomically; the format follows the suffix (TIFF keeps any dtype)."""
    path = Path(path)
    suffix = path.suffix.lower()
    buf = io.BytesIO()
    if suffix in (".tif", ".tiff"):
        import tifffile

        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
        tifffile.imwrite(buf, image, photometric="rgb" if rgb else "minisblack")
    elif suffix in (".png", ".jpg", ".jpeg"):
        from PIL import Image

        arr = image
        if suffix != ".png" and arr.dtype != np.uint8:
            raise ValueError(f"JPEG holds 8-bit images only; write {path.name} as .tif or .png")
        if arr.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"{path.name}: PNG holds 8/16-bit integers; write float data as .tif")
        Image.fromarray(arr).save(buf, format="PNG" if suffix == ".png" else "JPEG", quality=95)
    else:
        raise ValueError(f"{path.name}: unsupported image format {suffix!r}; use one of {IMAGE_SUFFIXES}")
    return atomic_write_bytes(path, buf.getvalue())
