"""Held-out evaluation images for benchmarks/quality.py (fetched by fetch_eval_data.sh).

Real fluorescence microscopy, H&E histology, medical (CT, MR, X-ray) and natural/aerial
photographs from PyPI wheels and a Debian package; none is a scikit-image image or a phantom,
so none was seen in training. Every image is returned as float32 in [0, 1] and cropped to
its most textured square of at most `size` pixels (deterministic). Sources: EVAL_DATA.md.
"""

from __future__ import annotations

import bz2
import gzip
import pickle
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage.transform import downscale_local_mean


def _pnorm(a: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    a = a.astype(np.float32)
    lo_v, hi_v = np.percentile(a, [lo, hi])
    return np.clip((a - np.float32(lo_v)) / np.float32(hi_v - lo_v + 1e-12), 0, 1).astype(np.float32)


def _rgb(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB"), np.float32) / 255


def _dcm(p: Path, window: tuple[float, float] | None = None, shrink: int = 1) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(p)
    a = ds.pixel_array.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() - a  # bone white
    if shrink > 1:
        a = downscale_local_mean(a, (shrink, shrink)).astype(np.float32)
    if window:  # (centre, width) in rescaled units (HU for CT)
        a = a * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        c, w = window
        return np.clip((a - (c - w / 2)) / w, 0, 1).astype(np.float32)
    return _pnorm(a)


def crop(img: np.ndarray, size: int) -> np.ndarray:
    """The `size`² window (on a 32-px grid) with the largest gradient energy; smaller images whole."""
    h, w = img.shape[:2]
    s = min(size, h, w)
    g = img.mean(-1) if img.ndim == 3 else img
    e = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
    best, pos = -1.0, (0, 0)
    for y in range(0, h - s + 1, 32):
        for x in range(0, w - s + 1, 32):
            v = float(e[y : y + s - 1, x : x + s - 1].mean())
            if v > best:
                best, pos = v, (y, x)
    y, x = pos
    return np.ascontiguousarray(img[y : y + s, x : x + s])


def load(root: str | Path, size: int = 320) -> dict[str, np.ndarray]:
    """All evaluation images by 'category/name', cropped to at most `size`²."""
    r = Path(root)
    if not (r / "raw").is_dir():
        raise SystemExit(f"no evaluation data in {r}: run bash benchmarks/fetch_eval_data.sh {r}")
    sys.path.insert(0, str(r / "pylib"))
    raw = r / "raw"
    cv = raw / "usr/share/doc/opencv-doc/examples/data"
    dd = raw / "data_store/data"
    imgs = {
        "fluo/dsb2018_nuclei": _pnorm(tifffile.imread(raw / "stardist/data/images/img2d.tif"), 0, 99.9),
        "fluo/mahotas_nuclear": np.asarray(Image.open(raw / "mahotas/demos/data/nuclear.png"))[..., 0]
        / np.float32(255),
        "fluo/purkinje_mip": _pnorm(tifffile.imread(raw / "flowdec/datasets/neuron-25pct/data.tif").max(0), 0, 99.9),
        "histo/stardist_he": _rgb(raw / "stardist/data/images/histo.jpg"),
        "histo/tiatoolbox_he": _rgb(raw / "tiatoolbox/data/target_image.png"),
        "histo/slideflow_he": _rgb(raw / "slideflow/norm/norm_tile.jpg"),
        "med/ct_head": _dcm(dd / "693_UNCR.dcm", window=(40, 400)),
        "med/mr_shoulder": _dcm(dd / "MR2_UNCR.dcm"),
        "med/mr_abdomen": _dcm(dd / "MR-SIEMENS-DICOM-WithOverlays.dcm"),
        "med/xray_chest": _dcm(dd / "RG1_UNCR.dcm", shrink=4),
        "med/xray_leg": _dcm(dd / "RG3_UNCR.dcm", shrink=4),
        "med/mr_head": _pnorm(np.frombuffer(gzip.open(raw / "matplotlib/mpl-data/sample_data/s1045.ima.gz").read(),
                                            "<u2").reshape(256, 256)),
        "med/mr_t1_brain": _pnorm(np.load(raw / "dipy/data/files/t1_coronal_slice.npy")),
        "nat/china": _rgb(raw / "sklearn/datasets/images/china.jpg"),
        "nat/flower": _rgb(raw / "sklearn/datasets/images/flower.jpg"),
        "nat/grace_hopper": _rgb(raw / "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
        "nat/raccoon_face": np.frombuffer(bz2.decompress((raw / "scipy/misc/face.dat").read_bytes()),
                                          np.uint8).reshape(768, 1024, 3) / np.float32(255),
        # scipy 1.9's own data file (a pickle of a uint8 array from a pinned scipy wheel)
        "nat/ascent": np.asarray(pickle.loads((raw / "scipy/misc/ascent.dat").read_bytes()), np.float32) / 255,
    }
    for n in ["aero1", "aero3", "building", "fruits", "leuvenA", "home", "squirrel_cls", "butterfly", "board",
              "aloeL"]:
        imgs[f"nat/{n}"] = _rgb(cv / f"{n}.jpg")
    return {k: crop(np.asarray(v, np.float32), size) for k, v in imgs.items()}


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Gray version (as skimage.color.rgb2gray)."""
    return (rgb[..., :3] @ np.array([0.2125, 0.7154, 0.0721], np.float32)).astype(np.float32)


if __name__ == "__main__":
    for k, v in load(sys.argv[1] if len(sys.argv) > 1 else "/tmp/p2p-evaldata").items():
        print(f"{k:24s} {v.shape} {v.dtype} {v.min():.3f}..{v.max():.3f}")
