"""bioimage.io model packages: export (spec 0.5, via ``bioimageio.spec``; the ``bioimageio`` extra).

A package holds the generator three times — ``pytorch_state_dict`` with its architecture
source (``nn/unet.py``, callable :class:`~napari_pix2pix.nn.unet.ExportGenerator`),
``torchscript`` and ``onnx`` — plus pre/post-processing, axes and tiling information, a
test input/output pair, a cover, the model card as documentation, the Pix2Pix citation and,
in ``config.napari_pix2pix``, the full napari-pix2pix metadata.

Pre/post-processing in the package (what bioimage.io consumers such as deepImageJ,
ilastik, QuPath or bioimageio.core run):

- ``scale_range`` with the model's percentiles (``low``/``high``) of each whole sample over
  channel, y and x, then ``scale_linear`` ×1.6 − 0.8: exactly our input normalization.
- the output is converted by ``scale_linear`` to *normalized units of the input* (0 and 1
  are its ``low`` and ``high`` percentiles): bioimage.io cannot map an output back to the
  input's own percentile range. Models with a fixed output range (``translate`` with
  ``output="fixed"``) output exactly our intensities.

Reading packages back is :mod:`napari_pix2pix.engine.formats.bioimageio.read` (no extra needed).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.network import Network
from ..export import (
    ExportReport,
    export_network,
    reference_prediction,
    require,
    test_image,
    write_onnx,
    write_torchscript,
)
from .cover import cover
from .description import model_descr
from .facts import OUTPUT_IDS, Geometry, output_affine, outputs_intensities, package_preprocess
from .readme import documentation


def _test_tensors(model: Network, image: np.ndarray | None, mask: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """The package's test image (C, h, w) (3D: (C, d, h, w)) cropped to the size grid, and its mask; checked."""
    multiples = model.config.size_multiple
    dims = len(multiples)
    if image is None:
        image, mask = test_image(model)
    image = np.asarray(image, np.float32)
    if not np.isfinite(image).all():
        raise ValueError("the test image contains NaN or infinite values: give a finite image "
                         "(the package's test tensors are computed from it)")
    if image.ndim == dims:
        image = image[None]
    c = model.task.image_channels(model.config.in_channels)
    axes = "D, H, W" if dims == 3 else "H, W"
    if (image.ndim != dims + 1 or image.shape[0] != c
            or any(n < 2 * m for n, m in zip(image.shape[1:], multiples, strict=True))):
        raise ValueError(f"the test image must be ({axes}) or ({c}, {axes}) with sizes at least "
                         f"{tuple(2 * m for m in multiples)} (twice the network's size multiple: the package's "
                         f"smallest tile); got shape {image.shape}")
    full = image.shape[1:]
    grid = tuple(n - n % m for n, m in zip(full, multiples, strict=True))
    crop = tuple(slice(0, n) for n in grid)
    image = np.ascontiguousarray(image[(slice(None), *crop)])  # top-left crop to the size grid
    if not model.task.needs_mask:
        return image, None
    m = None if mask is None else np.asarray(mask) != 0
    if m is None or m.shape != full:
        raise ValueError(f"an inpainting test needs a mask of the test image's size {full} (non-zero = fill)")
    if not m[crop].any():
        raise ValueError("the test mask is empty inside the test image (cropped to a multiple of "
                         f"{multiples}); mark pixels to fill")
    return image, m[crop]


def _write_files(tmp: Path, model: Network, net: Any, image: np.ndarray, mask: np.ndarray | None,
                 geometry: Geometry, ids: dict[str, str]) -> None:
    """Every file of the package: weights three ways, architecture source, test/sample tensors, cover, README."""
    import tifffile  # sample tensors: TIFF, which bioimage.io's website can show

    from ....nn import unet as unet_module

    gain, offset = output_affine(model)
    inputs = [torch.from_numpy(package_preprocess(model, image)[None])]
    if mask is not None:
        inputs.append(torch.from_numpy(mask.astype(np.float32)[None, None]))
    with torch.no_grad():
        test_out = (net(*inputs).numpy() * np.float32(gain) + np.float32(offset)).astype(np.float32)
    buf = io.BytesIO()
    torch.save(dict(net.state_dict()), buf)
    (tmp / "pytorch_state_dict.pt").write_bytes(buf.getvalue())
    shutil.copyfile(unet_module.__file__, tmp / "unet.py")
    write_torchscript(model, tmp / "torchscript.pt", net=net)
    write_onnx(model, tmp / "model.onnx", net=net)
    np.save(tmp / "test_input_image.npy", image[None])
    tifffile.imwrite(tmp / "sample_input_image.tif", image[None])
    if mask is not None:
        np.save(tmp / "test_input_mask.npy", mask.astype(np.float32)[None, None])
        tifffile.imwrite(tmp / "sample_input_mask.tif", mask.astype(np.float32)[None, None])
    np.save(tmp / "test_output.npy", test_out)
    tifffile.imwrite(tmp / "sample_output.tif", test_out)
    mid = (slice(None), image.shape[1] // 2) if image.ndim == 4 else (slice(None),)  # a volume: its middle plane
    cover(image[mid], test_out[0][mid], tmp / "cover.png")
    (tmp / "README.md").write_text(documentation(model, geometry, ids=ids))


def export_bioimageio(
    model: Network,
    path: str | os.PathLike[str],
    *,
    image: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    authors: list[str] | None = None,
    license: str | None = None,
    check: bool = True,
) -> ExportReport:
    """Write `model` as a bioimage.io model package (spec 0.5, zip).

    Needs the ``bioimageio`` extra (``pip install "napari-pix2pix[bioimageio]"``).

    Parameters
    ----------
    model : Pix2PixModel
        The model.
    path : path
        The zip file to write.
    image : array, optional
        Test image, (C, H, W) or (H, W), H and W multiples of the network's size multiple;
        default: a crop of the package's sample data for the task.
    mask : array, optional
        Test mask (H, W) for inpainting models (non-zero = fill).
    authors : list of str, optional
        Names of the authors; default the card's ``authors`` or "napari-pix2pix".
    license : str, optional
        SPDX licence of the weights; default the card's ``license_id`` or "BSD-3-Clause".
    check : bool
        Run every weight format through bioimageio.core on the test input and report its
        largest difference to our prediction (in the package's output units).

    Returns
    -------
    ExportReport
    """
    require("bioimageio.spec", "bioimage.io export")
    require("onnx", "bioimage.io export (ONNX weights)")
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model.v0_5 import LicenseId

    cfg = model.config
    licence = license or str((model.card or {}).get("license_id") or "BSD-3-Clause")
    try:
        licence_id = LicenseId(licence)
    except ValueError:
        raise ValueError(f"{licence!r} is not an SPDX licence identifier (e.g. BSD-3-Clause, MIT, CC-BY-4.0)") from None
    image, mask = _test_tensors(model, image, mask)
    geometry = Geometry.of(cfg)
    ids = {"image": "image", "mask": "mask", "output": OUTPUT_IDS[model.task.name]}
    net = export_network(model)
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _write_files(tmp, model, net, image, mask, geometry, ids)
        descr = model_descr(tmp, model, net, mask is not None, geometry, ids, authors, licence_id)
        out_tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp.zip"  # unique: concurrent exports
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_bioimageio_package(descr, output_path=out_tmp)
            os.replace(out_tmp, path)
        finally:
            out_tmp.unlink(missing_ok=True)
    diffs = check_package(model, path, image, mask) if check else {}
    return ExportReport(path, "bioimageio", diffs)


def check_package(model: Network, path: str | os.PathLike[str], image: np.ndarray,
                  mask: np.ndarray | None) -> dict[str, float]:
    """Run the package with bioimageio.core (every weight format) and compare with our prediction.

    Our prediction is expressed in the package's output units (normalized units of the
    input, or intensities for fixed-range models). Differences include those of the
    percentiles: for inpainting ours leave the holes out, the package's cannot.
    """
    require("bioimageio.core", "Checking a bioimage.io package")
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_model_description

    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    ours, (lo, hi), (olo, ohi) = reference_prediction(model, image, mask)
    if not outputs_intensities(model):
        ours = (ours - lo) / (hi - lo)
    descr = load_model_description(Path(path), perform_io_checks=False)
    inputs: dict[str, np.ndarray] = {"image": image[None]}
    if mask is not None:
        inputs["mask"] = np.asarray(mask, np.float32)[None, None]
    out: dict[str, float] = {}
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        with create_prediction_pipeline(descr, weights_format=fmt, devices=["cpu"]) as pp:  # type: ignore[arg-type]
            sample = create_sample_for_model(descr, inputs=inputs, sample_id="check")  # type: ignore[arg-type]
            result = pp.predict_sample_without_blocking(sample, skip_input_padding=True, skip_output_cropping=True)
        pred = np.asarray(next(iter(result.members.values())).data)[0]
        out[fmt] = float(np.max(np.abs(pred - ours)))
    return out


__all__ = ["check_package", "export_bioimageio"]
