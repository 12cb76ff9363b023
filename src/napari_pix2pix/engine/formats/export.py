"""Exporting a model to ONNX and TorchScript, checked against our own prediction.

The exported network is :class:`~napari_pix2pix.nn.unet.ExportGenerator`: the generator
with the same weights that, for inpainting, takes ``(image, mask)`` and composes its
input itself. It works in *network units*: inputs are intensities mapped by the model's
:class:`~napari_pix2pix.engine.core.normalization.Normalization` (percentiles ``low``/``high``
of each whole plane to -0.8/+0.8), outputs are in the same units (±1 for a Tanh head).
The model's metadata (task, architecture, normalization, card) travels inside the file
(ONNX ``metadata_props`` / TorchScript ``extra_files``, key ``napari_pix2pix``).

Every export can be checked: the file is run (onnxruntime, ``torch.jit.load``) on a test
image and compared with :meth:`Pix2PixModel.predict` on the same image; the largest
absolute difference is reported in network units.

This module is a leaf of the exchange formats: :func:`.exchange.export` picks the format,
:mod:`.bioimageio.write` builds packages from the writers and checks here.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...nn.unet import ExportGenerator
from ..core.files import atomic_write_bytes
from ..core.network import Network
from ..core.normalization import to_network
from ..core.progress import run_to_end
from ..predict.tiled import plane_ranges, predict_iter

FORMATS = ("bioimageio", "onnx", "torchscript")
SUFFIXES = {".zip": "bioimageio", ".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript",
            ".torchscript": "torchscript"}
EXTRA = 'pip install "napari-pix2pix[bioimageio]"'
ONNX_OPSET = 17
METADATA_KEY = "napari_pix2pix"


class MissingExtraError(ImportError):
    """An optional dependency of the export (the ``bioimageio`` extra) is not installed."""


def require(module: str, purpose: str) -> Any:
    """Import `module` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module.split('.')[0]!r} ({e}); install it with: {EXTRA}"
        ) from e


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it reproduces our own prediction.

    Attributes
    ----------
    path : Path
        The written file.
    format : {"bioimageio", "onnx", "torchscript"}
        Its format.
    max_abs_diff : dict of str to float
        Largest absolute difference between the exported network's output and
        :meth:`Pix2PixModel.predict` on the test image, per runtime checked
        (``"onnxruntime"``, ``"torchscript"``; for bioimage.io packages every weight format
        run through bioimageio.core). In network units (the output range is about ±1),
        except for bioimage.io packages, whose differences are in the package's output units
        (see its documentation). Empty when the export was not checked.
    """

    path: Path
    format: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        checks = ", ".join(f"{k}: max |Δ| = {v:.2e}" for k, v in self.max_abs_diff.items())
        return f"{self.format} export written to {self.path}" + (f" ({checks} vs napari-pix2pix predict)"
                                                                 if checks else "")


def guess_format(path: str | os.PathLike[str]) -> str:
    """The export format implied by a file name (``.zip``, ``.onnx``, ``.pt``/``.ts``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot tell the export format from {Path(path).name!r}: use a .zip (bioimage.io package), "
            ".onnx or .pt (TorchScript) file name, or name the format"
        )
    return SUFFIXES[suffix]


# ---------------------------------------------------------------------- the exported network
def export_kwargs(model: Network) -> dict[str, Any]:
    """Plain-JSON keyword arguments that rebuild the exported network (:class:`ExportGenerator`)."""
    return {"inpaint": model.task.needs_mask, **model.config.to_dict()}


def export_network(model: Network) -> ExportGenerator:
    """A float32 CPU :class:`ExportGenerator` in eval mode holding `model`'s weights."""
    net = ExportGenerator(**export_kwargs(model))
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in model.generator.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net.eval()


def example_inputs(model: Network, size: int | None = None, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Inputs of the exported network: the image and, for inpainting, a mask (B, 1, H, W) (3D: (B, 1, D, H, W))."""
    cfg = model.config
    size = size or max(max(cfg.size_multiple[-2:]), 64)
    shape = (size, size) if cfg.spatial_dims == 2 else (2 * cfg.size_multiple[0], size, size)
    g = torch.Generator().manual_seed(0)
    c = model.task.image_channels(cfg.in_channels)
    image = torch.rand(batch, c, *shape, generator=g) * 1.6 - 0.8
    if not model.task.needs_mask:
        return (image,)
    mask = torch.zeros(batch, 1, *shape)
    mask[..., size // 4 : size // 2, size // 4 : size // 2] = 1
    return image, mask


def metadata_json(model: Network) -> str:
    """The model's metadata as stored inside exported files."""
    return json.dumps(model.metadata, sort_keys=True)


# ---------------------------------------------------------------------- writers
def write_torchscript(model: Network, path: str | os.PathLike[str], net: ExportGenerator | None = None) -> Path:
    """Write the network as TorchScript (traced; any batch size, any multiple of the size multiple).

    `net`: the model's :func:`export_network`, when the caller has built it already.
    """
    net = net or export_network(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about constant channel counts
        traced = torch.jit.trace(net, example_inputs(model), check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={f"{METADATA_KEY}.json": metadata_json(model)})
    return atomic_write_bytes(path, buf.getvalue())


def write_onnx(model: Network, path: str | os.PathLike[str], opset: int = ONNX_OPSET,
               net: ExportGenerator | None = None) -> Path:
    """Write the network as ONNX with dynamic batch, (depth,) height and width (needs the ``onnx`` package).

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
    the extra package onnxscript and gave no benefit for this convolutional network.
    """
    onnx = require("onnx", "ONNX export")
    net = net or export_network(model)
    inputs = example_inputs(model)
    names = ["image", "mask"][: len(inputs)]
    spatial = {2: "y", 3: "x"} if model.config.spatial_dims == 2 else {2: "z", 3: "y", 4: "x"}
    dynamic = {n: {0: "batch", **spatial} for n in [*names, "output"]}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated in favour of dynamo
        tmp_path = Path(tmp) / "model.onnx"
        torch.onnx.export(net, inputs, str(tmp_path), input_names=names, output_names=["output"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        proto = onnx.load(str(tmp_path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, metadata_json(model)
    proto.doc_string = f"napari-pix2pix {model.task.name} generator {model.name!r} (inputs in network units)"
    onnx.checker.check_model(proto)
    return atomic_write_bytes(path, proto.SerializeToString())


def onnx_runner(path: str | os.PathLike[str]) -> Any:
    """A function running an exported ONNX file on numpy inputs (needs onnxruntime)."""
    ort = require("onnxruntime", "Running ONNX exports")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(*arrays: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {n: np.ascontiguousarray(a, np.float32) for n, a in zip(names, arrays)})[0])

    return run


def torchscript_runner(path: str | os.PathLike[str]) -> Any:
    """A function running an exported TorchScript file on numpy inputs."""
    net = torch.jit.load(str(path), map_location="cpu").eval()

    def run(*arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(net(*(torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in arrays)).numpy())

    return run


# ---------------------------------------------------------------------- test images and checks
def test_image(model: Network, size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A test image for `model` from the package's sample data: float32 (C, S, S), and a (S, S) mask (inpaint).

    ``S`` is `size` or the smallest multiple of the network's size multiple that is at least
    128 px and twice the size multiple (the smallest tile of a bioimage.io package).
    Multi-channel models get shifted copies of the sample as channels. A 3D model gets a
    volume (C, D, S, S) of shifted copies as planes, D twice its Z size multiple (and a
    (D, S, S) mask).
    """
    from importlib.resources import files

    from ..images.io import read_image

    cfg = model.config
    multiple = max(cfg.size_multiple[-2:])
    s = size or multiple * max(2, -(-128 // multiple))
    if s % multiple:
        raise ValueError(f"the test image size {s} must be a multiple of the network's size multiple {multiple}")
    name = {"denoise": "denoise_noisy.tif", "inpaint": "inpaint_reference.tif", "colorize": "colorize_gray.png",
            "translate": "translate_widefield.tif"}[model.task.name]
    img = np.asarray(read_image(str(files("napari_pix2pix") / "sample_data" / name)), np.float32)
    if img.ndim == 3:
        img = img[..., :3].mean(axis=-1)
    reps = (-(-s // img.shape[0]), -(-s // img.shape[1]))
    img = np.tile(img, reps)[:s, :s]
    lo, hi = np.percentile(img, (0.1, 99.9))
    img = ((img - lo) / max(hi - lo, 1e-6)).astype(np.float32)
    c = model.task.image_channels(cfg.in_channels)
    chans = np.stack([np.roll(img, (7 * k, 11 * k), axis=(0, 1)) for k in range(c)])
    if cfg.spatial_dims == 3:  # planes drifting slowly through the sample: structure that continues along Z
        chans = np.stack([np.roll(chans, (2 * z, 3 * z), axis=(1, 2)) for z in range(2 * cfg.size_multiple[0])],
                         axis=1)
    mask = None
    if model.task.needs_mask:
        mask = np.zeros((s, s), bool)
        mask[s // 4 : s // 4 + max(2, s // 6), s // 3 : s // 3 + max(2, s // 5)] = True
        mask[s // 2 + s // 8 : s // 2 + s // 8 + max(2, s // 10), s // 8 : s // 8 + max(2, s // 4)] = True
        if cfg.spatial_dims == 3:  # the holes through the middle planes of the volume
            d = chans.shape[1]
            mask = np.stack([mask if d // 4 <= z < d - d // 4 else np.zeros_like(mask) for z in range(d)])
    return chans, mask


def reference_prediction(model: Network, image: np.ndarray, mask: np.ndarray | None
                         ) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Our own prediction of a (C, H, W) float image (3D: (C, D, H, W)), as (C_out, ...), with the ranges.

    Returns ``(output, (lo, hi), (olo, ohi))``: the intensities mapped to -0.8/+0.8 on the way
    in and on the way out, as :func:`napari_pix2pix.engine.predict.tiled.predict_iter` uses them.
    """
    c = image.shape[0]
    plane = np.moveaxis(image[: c // (2 * model.z_context + 1)], 0, -1)  # 2.5D: the plane's own channels
    (lo, hi), (olo, ohi) = plane_ranges(model.normalization, lambda y0, y1: plane[y0:y1], plane.shape[0],
                                        image.dtype, mask)
    if model.z_context:  # a 2.5D input is a plane with its neighbours as channels: predict their stack
        return _context_prediction(model, image, mask), (lo, hi), (olo, ohi)
    out = _predict(model, image if c > 1 else image[0], mask, 0 if c > 1 else None)
    if c == 1:  # no channel axis in: (H, W), or (H, W, C_out) with colour last (colorize)
        out = out[None] if out.ndim == image.ndim - 1 else np.moveaxis(out, -1, 0)
    return out, (lo, hi), (olo, ohi)


def _context_prediction(model: Network, block: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Our prediction of the centre plane of the stack whose context block (channels: z, z-k, ..., z+k) is `block`."""
    from ..predict.tiling import context_order

    k = model.z_context
    n = 2 * k + 1
    c = block.shape[0] // n
    order = context_order(k, n, k)  # the centre plane of a 2k+1 stack sees every plane once, unreflected
    stack = np.empty((n, c, *block.shape[1:]), block.dtype)
    for j, z in enumerate(order):
        stack[z] = block[j * c : (j + 1) * c]
    out = _predict(model, stack if c > 1 else stack[:, 0], mask, 1 if c > 1 else None)[k]
    return out if c > 1 else out[None]


def _predict(model: Network, image: np.ndarray, mask: np.ndarray | None, channel_axis: int | None) -> np.ndarray:
    """Our prediction, untiled, fp32 on the CPU: the reference an export is compared with."""
    out = run_to_end(predict_iter(model, image, mask, channel_axis=channel_axis, tile_size=None, device="cpu",
                                  precision="fp32"))
    return np.asarray(out, np.float32)


def network_inputs(model: Network, image: np.ndarray, mask: np.ndarray | None,
                   lo: float, hi: float) -> tuple[np.ndarray, ...]:
    """Inputs of the exported network for a (C, H, W) image: (1, C, H, W) in network units (and the mask)."""
    x = to_network(image, lo, hi)[None]
    if mask is None:
        return (x,)
    return x, mask.astype(np.float32)[None, None]


def check_network(model: Network, run: Any, image: np.ndarray | None = None,
                  mask: np.ndarray | None = None) -> float:
    """Largest |exported - ours| in network units, on `image` (default: :func:`test_image`)."""
    if image is None:
        image, mask = test_image(model)
    ours, (lo, hi), (olo, ohi) = reference_prediction(model, image, mask)
    theirs = run(*network_inputs(model, image, mask, lo, hi))[0]
    return float(np.max(np.abs(theirs - to_network(ours, olo, ohi))))


__all__ = ["EXTRA", "FORMATS", "ExportReport", "MissingExtraError", "guess_format", "write_onnx", "write_torchscript"]
