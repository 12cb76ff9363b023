"""Reading and writing image files: TIFF (16-bit, multi-page, ImageJ hyperstacks), PNG, JPEG, zarr.

A zarr store (``*.zarr``, also OME-Zarr: its full-resolution level) is opened lazily: it is
read tile by tile, so volumes larger than memory work. An ImageJ hyperstack's channel axis
is moved last (``read_image`` returns (..., Z, Y, X, C)); :func:`image_axes` names the axes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write_bytes

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
ZARR_SUFFIX = ".zarr"


def is_zarr(path: str | os.PathLike[str]) -> bool:
    """Whether `path` names a zarr store (a ``*.zarr`` folder)."""
    p = Path(path)
    return p.suffix.lower() == ZARR_SUFFIX and p.is_dir()


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files (TIFF/PNG/JPEG) and zarr stores directly inside `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {str(folder)!r} does not exist")
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or is_zarr(p))


def open_zarr(path: str | os.PathLike[str]) -> Any:
    """A zarr store's array, lazily (an OME-Zarr group: its first, full-resolution level)."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return node
    attrs: dict[str, Any] = dict(node.attrs)
    multiscales: Any = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    key = str(multiscales[0]["datasets"][0]["path"]) if multiscales else "0"
    if key not in node:
        raise ValueError(f"{Path(path).name} is a zarr group without an image array (no '{key}' in it)")
    order = multiscales[0].get("napari_pix2pix_order") if multiscales else None
    if order:  # one of our results stored in NGFF's axis order: read in its own (e.g. Y X C)
        from .zarrstore import Reordered

        return Reordered(node[key], order)
    return node[key]


def open_lazy(path: str | os.PathLike[str]) -> Any:
    """An image file as an array read only where indexed: zarr stores, and TIFF through tifffile's zarr interface.

    Other formats (PNG, JPEG) are read whole. A TIFF hyperstack keeps its file's axis order
    here (its channel axis is not moved last as :func:`read_image` does).
    """
    path = Path(path)
    if is_zarr(path):
        return read_image(path)
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        import tifffile
        import zarr

        try:
            return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        except Exception as e:  # noqa: BLE001 - a TIFF tifffile cannot map: read it whole
            try:
                return read_image(path)
            except ValueError:
                raise ValueError(f"could not open {path.name} lazily: {e}") from e
    return read_image(path)


def image_axes(path: str | os.PathLike[str]) -> str | None:
    """The axes of an image file as :func:`read_image` returns them (e.g. "ZYXC"), where the file names them.

    ImageJ hyperstacks and OME-TIFF name theirs (T, Z, C, Y, X; the channel axis is moved
    last); plain TIFF, PNG and zarr stores do not (None).
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not path.is_file():
        return None
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not (tif.is_imagej or tif.is_ome):
            return None
        axes = tif.series[0].axes.upper().replace("S", "C")
    return axes.replace("C", "") + "C" if "C" in axes else axes


def read_image(path: str | os.PathLike[str]) -> Any:
    """Read an image file; TIFF keeps its dtype and all pages (as a stack); a zarr store is opened lazily.

    An ImageJ/OME hyperstack comes with its channel axis last: (T, Z, Y, X, C) (:func:`image_axes`).
    """
    path = Path(path)
    if is_zarr(path):
        try:
            return open_zarr(path)
        except Exception as e:
            raise ValueError(f"could not open the zarr store {path.name}: {e}") from e
    if not path.is_file():
        raise FileNotFoundError(f"image file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                image = np.asarray(series.asarray())
                axes = series.axes.upper().replace("S", "C") if (tif.is_imagej or tif.is_ome) else ""
            if "C" in axes and axes.count("C") == 1 and image.ndim == len(axes):
                image = np.moveaxis(image, axes.index("C"), -1)
            return image
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
