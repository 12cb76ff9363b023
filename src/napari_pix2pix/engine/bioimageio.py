"""bioimage.io model packages: export (spec 0.5, via ``bioimageio.spec``) and import (no extra needed).

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

Importing (:func:`read_package`) reads ``rdf.yaml`` with a safe YAML loader, verifies the
SHA-256 of every packaged file, loads the state dict with ``torch.load(weights_only=True)``
and never imports the packaged source: predictions equal those of the original model file.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .export import ExportReport, export_kwargs, export_network, reference_prediction, require
from .modelfile import ModelFileError
from .normalization import SCALE, safe_range

if TYPE_CHECKING:
    from .model import Pix2PixModel

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
ARCHITECTURE_CALLABLE = "ExportGenerator"
CONFIG_KEY = "napari_pix2pix"
PIX2PIX_CITATION = ("Isola P, Zhu J-Y, Zhou T, Efros AA. Image-to-Image Translation with Conditional Adversarial "
                    "Networks. CVPR 2017.")
PIX2PIX_DOI = "10.1109/CVPR.2017.632"
OUTPUT_IDS = {"denoise": "denoised", "inpaint": "inpainted", "colorize": "colorized", "translate": "translated"}


# ---------------------------------------------------------------------- geometry
def receptive_field(config: Any) -> int:
    """Theoretical receptive field (pixels along y or x) of a U-Net generator's output pixels.

    The input interval each output pixel depends on, traced back through every layer and
    skip connection (4x4 stride-2 convolutions, their transposes, extra 3x3 convolutions, the
    full-resolution stem and tail); the widest over the output positions of one size multiple.
    """
    n, k, kf = config.levels, config.block_convs, getattr(config, "full_res_convs", 0)

    def stem(a: int, b: int) -> tuple[int, int]:  # full-resolution 3x3 convolutions before level 0
        return a - kf, b + kf

    def down(i: int, a: int, b: int) -> tuple[int, int]:  # encoder level i over [a, b] -> input pixels
        if i < n - 1:
            a, b = a - k, b + k  # extra 3x3 convolutions
        a, b = 2 * a - 1, 2 * b + 2  # 4x4 stride-2 convolution, padding 1
        return stem(a, b) if i == 0 else down(i - 1, a, b)

    def transposed(a: int, b: int) -> tuple[int, int]:  # 4x4 stride-2 transposed convolution, padding 1
        return -((2 - a) // 2), (b + 1) // 2

    def up(j: int, a: int, b: int) -> tuple[int, int]:  # decoder block j over [a, b] -> input pixels
        a, b = transposed(a - k, b + k)
        if j == 0:
            return down(n - 1, a, b)
        d, u = down(n - 1 - j, a, b), up(j - 1, a, b)  # skip and deeper path
        return min(d[0], u[0]), max(d[1], u[1])

    widest = 0
    for o in range(config.multiple):
        lo, hi = o - kf, o + kf  # the tail's 3x3 convolutions (none without a full-resolution tail)
        a, b = transposed(lo, hi)  # the head, from the concatenation of level 0 and the decoder
        d, u = down(0, a, b), up(n - 2, a, b)
        ends = [d, u, stem(lo, hi)] if kf else [d, u]  # with a tail: also the stem's skip
        widest = max(widest, max(e[1] for e in ends) - min(e[0] for e in ends) + 1)
    return widest


def halo(config: Any) -> int:
    """Pixels to crop from each side of an output tile: half the size multiple.

    bioimage.io consumers pad an input by the halo on each side before running the network,
    so the halo keeps padded sizes on the network's grid only if twice the halo is a
    multiple of the size multiple; the smallest tile is then twice the size multiple. The
    theoretical receptive field (:func:`receptive_field`) is far larger than what matters
    in practice.
    """
    return config.multiple // 2


# ---------------------------------------------------------------------- export
def _safe_name(name: str, task: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip() or task
    if len(clean) < 5:
        clean = f"{clean} {task} model"[:64]
    return clean[:64]


def _channel_names(n: int, colour: bool = False) -> list[str]:
    if colour and n == 3:
        return ["red", "green", "blue"]
    return ["gray"] if n == 1 else [f"channel{i}" for i in range(n)]


def _json_safe(value: Any) -> Any:
    """Metadata as plain YAML values (non-finite floats become None)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def output_affine(model: Pix2PixModel) -> tuple[float, float]:
    """(gain, offset) of the package's output ``scale_linear``: network units to output units."""
    norm = model.normalization
    if norm.output == "fixed":
        olo, ohi = safe_range(norm.out_lo, norm.out_hi)
        gain = (ohi - olo) / (2 * SCALE)
        return gain, olo + SCALE * gain
    return 1 / (2 * SCALE), 0.5  # normalized units of the input: its low/high percentiles -> 0/1


def package_preprocess(model: Pix2PixModel, image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The package's preprocessing of a (C, H, W) image, as bioimageio.core computes it."""
    norm = model.normalization
    lo, hi = np.percentile(image.astype(np.float64), (norm.low, norm.high))
    x = (image.astype(np.float64) - lo) / (hi - lo + eps)
    return (x * 2 * SCALE - SCALE).astype(np.float32)


def _cover(model: Pix2PixModel, image: np.ndarray, output: np.ndarray, path: Path) -> None:
    """Input | output side by side (2:1), each stretched to its 0.5-99.5 percentiles, as PNG."""
    from PIL import Image

    def to_rgb8(a: np.ndarray) -> np.ndarray:
        a = a[:3] if a.shape[0] >= 3 else np.repeat(a[:1], 3, axis=0)
        lo, hi = np.percentile(a, (0.5, 99.5))
        a = np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)
        return (np.moveaxis(a, 0, -1) * 255).astype(np.uint8)

    left, right = to_rgb8(image), to_rgb8(output)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path, format="PNG")


def _documentation(model: Pix2PixModel, *, multiple: int, halo_px: int, rf: int, ids: dict[str, str]) -> str:
    norm = model.normalization
    task = model.task.name
    card = model.card or {}
    tr = {k: v for k, v in (model.training or {}).items() if k != "history"}
    c = model.config
    lines = [
        f"# {model.name}",
        "",
        str(card.get("summary") or f"A napari-pix2pix {task} model."),
        "",
        f"A Pix2Pix U-Net generator (Isola et al., CVPR 2017) for **{task}**, exported by napari-pix2pix. "
        f"Architecture: {c.levels} levels, width {c.ngf}, {c.norm} norm"
        + (f", {c.block_convs} extra 3x3 convolutions per level" if c.block_convs else "")
        + (f", {c.full_res_convs} 3x3 convolutions at full resolution before and after the U-Net"
           if c.full_res_convs else "")
        + (", residual output (input + correction)" if c.residual else ", Tanh output")
        + f"; {c.in_channels} network input channel(s), {c.out_channels} output channel(s).",
        "",
        "## Inputs and outputs",
        "",
        f"- `{ids['image']}` (batch, channel, y, x): any intensities. Preprocessing: the {norm.low} and "
        f"{norm.high} percentiles of the whole sample (all channels pooled) are mapped to 0 and 1 "
        "(`scale_range`), then to -0.8 and +0.8 (`scale_linear`): the network's range.",
    ]
    if model.task.needs_mask:
        lines.append(f"- `{ids['mask']}` (batch, 1, y, x): non-zero where pixels are to be filled. The network "
                     "sees the image with the holes set to 0 plus the mask; every pixel outside the mask is "
                     "returned unchanged.")
    if norm.output == "fixed":
        lines.append(f"- `{ids['output']}`: intensities on the training targets' scale "
                     f"({norm.out_lo:g} to {norm.out_hi:g} map to the network's -0.8 and +0.8), as napari-pix2pix "
                     "outputs them.")
    else:
        lines += [
            f"- `{ids['output']}`: **in normalized units of the input**: 0 and 1 are the input's {norm.low} and "
            f"{norm.high} percentiles. For intensities on the input's scale compute "
            "`output * (p_high - p_low) + p_low` with those percentiles of the input "
            "(bioimage.io post-processing cannot refer back to the input's range; napari-pix2pix does this "
            "itself when it loads this package).",
        ]
    lines += [
        "",
        "## Tiling",
        "",
        f"- y and x must be multiples of {multiple} (the U-Net halves them {c.levels} times). Tiles are at "
        f"least {2 * multiple} px: {multiple} px plus the halo on each side.",
        f"- Halo: {halo_px} px per side of an output tile (half the size multiple, so that a tile padded by "
        "the halo stays a multiple of the size multiple). The theoretical "
        f"receptive field is {rf} px; a strided U-Net is not shift-invariant, so tiles that start on multiples "
        f"of {multiple} agree best with a prediction of the whole image.",
        "- Percentiles are statistics of the whole sample, never of a tile.",
        "",
        "## Exact use in napari-pix2pix",
        "",
        "`napari_pix2pix.load_model('package.zip')`, `napari-pix2pix predict package.zip ...` and the napari "
        "widgets read this package (checksums verified, weights loaded without running code) and predict "
        "exactly as with the original model file: percentiles of each whole plane (inpainting: outside the "
        "holes), outputs on the input's intensity scale, grid-aligned tiles blended without seams.",
        "",
        "## Model card",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in card.items()] or ["- (no card)"]
    lines += ["", "## Training", ""]
    cfg = tr.get("config", {}) if isinstance(tr.get("config"), dict) else {}
    facts = {"steps": tr.get("steps_done"), "status": tr.get("status"), "preset": model.preset,
             "patch size": cfg.get("patch_size"), "batch size": cfg.get("batch_size"), "lr": cfg.get("lr"),
             "lambda L1": cfg.get("lambda_l1"), "training planes": tr.get("n_train_planes"),
             "validation planes": tr.get("n_val_planes")}
    lines += [f"- {k}: {v}" for k, v in facts.items() if v is not None] or ["- not recorded"]
    lines += [
        "",
        "## Validation",
        "",
    ]
    best = tr.get("best_val_psnr")
    if isinstance(best, (int, float)) and math.isfinite(best):
        lines.append(f"Best validation PSNR during training: {best:.2f} dB on held-out data of the training "
                     "source (napari-pix2pix validation: eval mode, the same normalization as prediction).")
    lines += [
        "To validate on your own data, predict held-out images that have a reference (clean, intact, colour "
        "or target image) and compare output and reference with PSNR and SSIM (e.g. "
        "`skimage.metrics.peak_signal_noise_ratio`, `structural_similarity`) after mapping both to the same "
        "intensity scale; inspect the uncertainty map napari-pix2pix computes (`uncertainty=True`).",
        "",
        "## Citation",
        "",
        f"{PIX2PIX_CITATION} doi:{PIX2PIX_DOI}",
        "",
    ]
    return "\n".join(lines)


def export_bioimageio(
    model: Pix2PixModel,
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
    from bioimageio.spec.model.v0_5 import (
        ArchitectureFromFileDescr,
        Author,
        AxisId,
        BatchAxis,
        BioimageioConfig,
        ChannelAxis,
        CiteEntry,
        Config,
        Doi,
        FileDescr,
        Identifier,
        InputTensorDescr,
        IntervalOrRatioDataDescr,
        LicenseId,
        ModelDescr,
        OnnxWeightsDescr,
        OutputTensorDescr,
        ParameterizedSize,
        PytorchStateDictWeightsDescr,
        ScaleLinearDescr,
        ScaleLinearKwargs,
        ScaleRangeDescr,
        ScaleRangeKwargs,
        SizeReference,
        SpaceInputAxis,
        SpaceOutputAxisWithHalo,
        TensorId,
        TorchscriptWeightsDescr,
        TrainingDetails,
        Version,
        WeightsDescr,
    )

    from ..nn import unet as unet_module
    from .export import ONNX_OPSET, test_image, write_onnx, write_torchscript

    cfg = model.config
    multiple, halo_px = cfg.multiple, halo(cfg)
    card = model.card or {}
    licence = license or str(card.get("license_id") or "BSD-3-Clause")
    try:
        licence_id = LicenseId(licence)
    except ValueError:
        raise ValueError(f"{licence!r} is not an SPDX licence identifier (e.g. BSD-3-Clause, MIT, CC-BY-4.0)") from None
    if image is None:
        image, mask = test_image(model)
    image = np.asarray(image, np.float32)
    if not np.isfinite(image).all():
        raise ValueError("the test image contains NaN or infinite values: give a finite image "
                         "(the package's test tensors are computed from it)")
    if image.ndim == 2:
        image = image[None]
    c = model.task.image_channels(cfg.in_channels)
    if image.ndim != 3 or image.shape[0] != c or min(image.shape[1:]) < 2 * multiple:
        raise ValueError(f"the test image must be (H, W) or ({c}, H, W) with H and W at least {2 * multiple} "
                         f"(twice the network's size multiple: the package's smallest tile); got shape {image.shape}")
    full = image.shape[1:]
    h, w = full[0] - full[0] % multiple, full[1] - full[1] % multiple
    image = np.ascontiguousarray(image[:, :h, :w])  # top-left crop to the size grid
    if model.task.needs_mask:
        m = None if mask is None else np.asarray(mask) != 0
        if m is None or m.shape != full:
            raise ValueError(f"an inpainting test needs a mask of the test image's size {full} (non-zero = fill)")
        mask = m[:h, :w]
        if not mask.any():
            raise ValueError("the test mask is empty inside the test image (cropped to a multiple of "
                             f"{multiple}); mark pixels to fill")
    else:
        mask = None

    ids = {"image": "image", "mask": "mask", "output": OUTPUT_IDS[model.task.name]}
    net = export_network(model)
    rf = receptive_field(cfg)
    norm = model.normalization
    gain, offset = output_affine(model)
    x = package_preprocess(model, image)[None]
    with torch.no_grad():
        inputs = [torch.from_numpy(x)] + ([torch.from_numpy(mask.astype(np.float32)[None, None])] if mask is not None
                                          else [])
        y = net(*inputs).numpy()
    test_out = (y * np.float32(gain) + np.float32(offset)).astype(np.float32)

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        state = net.state_dict()
        buf = io.BytesIO()
        torch.save(dict(state), buf)
        (tmp / "pytorch_state_dict.pt").write_bytes(buf.getvalue())
        shutil.copyfile(unet_module.__file__, tmp / "unet.py")
        write_torchscript(model, tmp / "torchscript.pt", net=net)
        write_onnx(model, tmp / "model.onnx", net=net)
        np.save(tmp / "test_input_image.npy", image[None])
        if mask is not None:
            np.save(tmp / "test_input_mask.npy", mask.astype(np.float32)[None, None])
        np.save(tmp / "test_output.npy", test_out)
        import tifffile  # sample tensors: TIFF, which bioimage.io's website can show

        tifffile.imwrite(tmp / "sample_input_image.tif", image[None])
        tifffile.imwrite(tmp / "sample_output.tif", test_out)
        if mask is not None:
            tifffile.imwrite(tmp / "sample_input_mask.tif", mask.astype(np.float32)[None, None])
        _cover(model, image, test_out[0], tmp / "cover.png")
        (tmp / "README.md").write_text(
            _documentation(model, multiple=multiple, halo_px=halo_px, rf=rf, ids=ids))

        def space_in(axis: str) -> Any:
            return SpaceInputAxis(id=AxisId(axis), size=ParameterizedSize(min=2 * multiple, step=multiple))

        image_descr = InputTensorDescr(
            id=TensorId(ids["image"]),
            description=f"image to {model.task.name}; y and x multiples of {multiple}",
            axes=[BatchAxis(), ChannelAxis(channel_names=_channel_names(c)), space_in("y"), space_in("x")],
            test_tensor=FileDescr(source=tmp / "test_input_image.npy"),
            sample_tensor=FileDescr(source=tmp / "sample_input_image.tif"),
            data=IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId("channel"), AxisId("y"), AxisId("x")],
                                                        min_percentile=norm.low, max_percentile=norm.high)),
                ScaleLinearDescr(kwargs=ScaleLinearKwargs(gain=2 * SCALE, offset=-SCALE)),
            ],
        )
        inputs_descr = [image_descr]
        if mask is not None:
            inputs_descr.append(InputTensorDescr(
                id=TensorId(ids["mask"]),
                description="non-zero where pixels are to be filled",
                axes=[BatchAxis(), ChannelAxis(channel_names=["mask"]),
                      SpaceInputAxis(id=AxisId("y"), size=SizeReference(tensor_id=TensorId(ids["image"]),
                                                                         axis_id=AxisId("y"))),
                      SpaceInputAxis(id=AxisId("x"), size=SizeReference(tensor_id=TensorId(ids["image"]),
                                                                         axis_id=AxisId("x")))],
                test_tensor=FileDescr(source=tmp / "test_input_mask.npy"),
                sample_tensor=FileDescr(source=tmp / "sample_input_mask.tif"),
                data=IntervalOrRatioDataDescr(type="float32"),
            ))

        def space_out(axis: str) -> Any:
            return SpaceOutputAxisWithHalo(id=AxisId(axis), halo=halo_px,
                                           size=SizeReference(tensor_id=TensorId(ids["image"]), axis_id=AxisId(axis)))

        units = ("intensities on the training targets' scale" if norm.output == "fixed"
                 else f"normalized units of the input ({norm.low}/{norm.high} percentiles = 0/1)")
        output_descr = OutputTensorDescr(
            id=TensorId(ids["output"]),
            description=units,
            axes=[BatchAxis(), ChannelAxis(channel_names=_channel_names(cfg.out_channels,
                                                                        model.task.name == "colorize")),
                  space_out("y"), space_out("x")],
            test_tensor=FileDescr(source=tmp / "test_output.npy"),
            sample_tensor=FileDescr(source=tmp / "sample_output.tif"),
            data=IntervalOrRatioDataDescr(type="float32"),
            postprocessing=[ScaleLinearDescr(kwargs=ScaleLinearKwargs(gain=gain, offset=offset))],
        )
        torch_version = Version(torch.__version__.split("+")[0])
        weights = WeightsDescr(
            pytorch_state_dict=PytorchStateDictWeightsDescr(
                source=tmp / "pytorch_state_dict.pt",
                architecture=ArchitectureFromFileDescr(
                    source=tmp / "unet.py", callable=Identifier(ARCHITECTURE_CALLABLE), kwargs=export_kwargs(model)),
                pytorch_version=torch_version,
            ),
            torchscript=TorchscriptWeightsDescr(source=tmp / "torchscript.pt", pytorch_version=torch_version,
                                                parent="pytorch_state_dict"),
            onnx=OnnxWeightsDescr(source=tmp / "model.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"),
        )
        names = authors or ([str(a) for a in card["authors"]] if isinstance(card.get("authors"), list)
                            else ["napari-pix2pix"])
        training = {k: v for k, v in (model.training or {}).items() if k != "history"}
        tcfg = training.get("config", {}) if isinstance(training.get("config"), dict) else {}
        summary = str(card.get("summary") or f"Pix2Pix U-Net {model.task.name} model (napari-pix2pix)")
        gan = float(tcfg.get("gan_weight", 1.0) or 0) > 0  # trained with the adversarial term (unknown: assume so)
        descr = ModelDescr(
            name=_safe_name(model.name, model.task.name),
            description=summary[:512],
            authors=[Author(name=n) for n in names],
            cite=[CiteEntry(text=PIX2PIX_CITATION, doi=Doi(PIX2PIX_DOI))],
            license=licence_id,
            documentation=FileDescr(source=tmp / "README.md"),
            covers=[FileDescr(source=tmp / "cover.png")],
            tags=["pix2pix", "unet", *(["gan"] if gan else []), "2d", "pytorch", "napari-pix2pix", model.task.name,
                  {"denoise": "denoising", "inpaint": "inpainting", "colorize": "colorization",
                   "translate": "image-to-image"}[model.task.name]],
            inputs=inputs_descr,
            outputs=[output_descr],
            weights=weights,
            config=Config(
                bioimageio=BioimageioConfig(
                    architecture_type="U-Net (Pix2Pix generator)",
                    architecture_description=(
                        f"{cfg.levels} levels of 4x4 stride-2 convolutions, width {cfg.ngf}; size multiple "
                        f"{multiple}; theoretical receptive field {rf} px"),
                    model_parameter_count=sum(p.numel() for p in net.parameters()),
                    training=TrainingDetails(
                        training_batch_size=tcfg.get("batch_size"), initial_learning_rate=tcfg.get("lr"),
                        loss_function="conditional GAN (PatchGAN) + lambda * L1" if gan else "L1",
                        optimizer="Adam",
                    ),
                ),
                **{CONFIG_KEY: _json_safe({**model.metadata, "size_multiple": multiple,
                                           "receptive_field": rf, "halo": halo_px})},
            ),
        )
        out_tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp.zip"  # unique: concurrent exports
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_bioimageio_package(descr, output_path=out_tmp)
            os.replace(out_tmp, path)
        finally:
            out_tmp.unlink(missing_ok=True)
    diffs = check_package(model, path, image, mask) if check else {}
    return ExportReport(path, "bioimageio", diffs)


def check_package(model: Pix2PixModel, path: str | os.PathLike[str], image: np.ndarray,
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
    if model.normalization.output != "fixed":
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


# ---------------------------------------------------------------------- import
class _Package:
    """Files of a package: a zip, a folder, or the folder of an rdf.yaml."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.root: Path | None = path
            names = [n for n in RDF_NAMES if (path / n).is_file()]
            if not names:
                raise ModelFileError(f"{path.name} holds no rdf.yaml: not a bioimage.io package")
            self.rdf_name = names[0]
        elif path.suffix.lower() in (".yaml", ".yml"):
            self.root, self.rdf_name = path.parent, path.name
        else:
            self.root = None
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise ModelFileError(f"{path.name} is not a readable zip (corrupted or truncated?): {e}") from e
            names = [n for n in self._zip.namelist() if n in RDF_NAMES or n.endswith(".bioimageio.yaml")]
            if not names:
                raise ModelFileError(f"{path.name} holds no rdf.yaml: not a bioimage.io package")
            self.rdf_name = names[0]

    def read(self, name: str) -> bytes:
        if name.startswith(("http://", "https://")) or ".." in Path(name).parts or Path(name).is_absolute():
            raise ModelFileError(f"{self.path.name}: {name!r} is not a file inside the package")
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (Path(self.root or ".") / name).read_bytes()
        except KeyError as e:
            raise ModelFileError(f"{self.path.name}: {name!r} is listed in rdf.yaml but missing") from e
        except FileNotFoundError as e:
            raise ModelFileError(f"{self.path.name}: {name!r} is listed in rdf.yaml but missing") from e
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC errors, truncation
            raise ModelFileError(f"{self.path.name}: {name!r} is corrupted ({e})") from e

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def is_package(path: str | os.PathLike[str]) -> bool:
    """True if `path` is to be read as a bioimage.io package.

    That is a folder with an rdf.yaml, a ``.yaml`` file, a ``.zip`` file (a damaged one is
    then refused with a message saying so) or any zip holding an rdf.yaml.
    """
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in RDF_NAMES)
    if p.suffix.lower() in (".yaml", ".yml", ".zip"):
        return p.is_file()
    if not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return any(n in RDF_NAMES or n.endswith(".bioimageio.yaml") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _file_entries(node: Any, where: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(location, source, sha256) of every file reference in an rdf."""
    if isinstance(node, dict):
        src = node.get("source")
        if isinstance(src, str) and not src.startswith(("http://", "https://")):
            yield where or "rdf", src, node.get("sha256")
        for k, v in node.items():
            if k != CONFIG_KEY:
                yield from _file_entries(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _file_entries(v, f"{where}[{i}]")


def _read_rdf(pkg: _Package) -> dict[str, Any]:
    import yaml

    try:
        rdf = yaml.safe_load(pkg.read(pkg.rdf_name).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{pkg.path.name}: {pkg.rdf_name} is not valid YAML ({e})") from e
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ModelFileError(f"{pkg.path.name}: {pkg.rdf_name} does not describe a bioimage.io model")
    return rdf


def _metadata_from_rdf(rdf: dict[str, Any], name: str) -> dict[str, Any]:
    """Our metadata from an rdf: the stored napari-pix2pix metadata, updated by the rdf's own fields."""
    weights = rdf.get("weights") or {}
    psd = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    if not isinstance(psd, dict):
        raise ModelFileError(f"{name} has no pytorch_state_dict weights: napari-pix2pix reads those")
    arch = psd.get("architecture") or {}
    if not isinstance(arch, dict) or arch.get("callable") != ARCHITECTURE_CALLABLE:
        raise ModelFileError(
            f"{name} is a bioimage.io model but not a napari-pix2pix generator (its architecture is "
            f"{arch.get('callable') if isinstance(arch, dict) else arch!r}, not {ARCHITECTURE_CALLABLE})")
    kwargs = dict(arch.get("kwargs") or {})
    inpaint = bool(kwargs.pop("inpaint", False))
    stored = (rdf.get("config") or {}).get(CONFIG_KEY)
    meta: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    task = meta.get("task") or ("inpaint" if inpaint else "translate")
    if (task == "inpaint") != inpaint:
        raise ModelFileError(f"{name}: its architecture (inpaint={inpaint}) does not fit its task {task!r}")
    meta["task"] = task
    meta["architecture"] = {"type": "unet", **kwargs}  # the architecture the weights are loaded into
    if isinstance(rdf.get("name"), str):
        meta["name"] = rdf["name"]
    # percentiles as the package states them (a user may have edited them)
    normalization = dict(meta.get("normalization") or {})
    inputs = rdf.get("inputs") or []
    for step in (inputs[0].get("preprocessing") or []) if inputs and isinstance(inputs[0], dict) else []:
        if isinstance(step, dict) and step.get("id") == "scale_range":
            kw = step.get("kwargs") or {}
            try:  # the spec's defaults are 0 and 100
                normalization["low"] = float(kw.get("min_percentile", 0.0))
                normalization["high"] = float(kw.get("max_percentile", 100.0))
            except (TypeError, ValueError) as e:
                raise ModelFileError(f"{name}: unreadable scale_range percentiles ({e})") from e
    meta["normalization"] = normalization
    card = dict(meta.get("card") or {})
    if isinstance(rdf.get("description"), str) and rdf["description"] and "summary" not in card:
        card["summary"] = rdf["description"]
    meta["card"] = card
    meta.setdefault("preset", "custom")
    return meta


def package_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our metadata of a package from its rdf.yaml only (cheap: no weights, no checksums)."""
    pkg = _Package(Path(path))
    try:
        return _metadata_from_rdf(_read_rdf(pkg), Path(path).name)
    finally:
        pkg.close()


def read_package(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata of a bioimage.io package of a napari-pix2pix generator.

    Every packaged file with a ``sha256`` in rdf.yaml is checked; the weights must have
    one. The state dict is read with ``torch.load(weights_only=True)``; no packaged code is
    run.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ModelFileError
        If it is not a readable package of one of our generators, or a file does not
        match its checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {str(path)!r} does not exist")
    pkg = _Package(path)
    try:
        rdf = _read_rdf(pkg)
        meta = _metadata_from_rdf(rdf, path.name)
        weights_src = rdf["weights"]["pytorch_state_dict"].get("source")
        if not isinstance(weights_src, str):
            raise ModelFileError(f"{path.name}: pytorch_state_dict weights have no source")
        weights: bytes | None = None
        for where, src, sha in _file_entries(rdf):  # every file, not only the weights: other tools run them
            if sha is None:
                continue
            data = pkg.read(src)
            if hashlib.sha256(data).hexdigest() != str(sha).lower():
                raise ModelFileError(
                    f"{path.name}: {src} ({where}) does not match its sha256 in {pkg.rdf_name}: the package was "
                    "modified or corrupted after it was written; refusing to load it")
            if src == weights_src:
                weights = data
        if weights is None:
            raise ModelFileError(f"{path.name}: the pytorch_state_dict weights have no sha256 in {pkg.rdf_name}; "
                                 "re-save the package with bioimageio.spec so that they can be verified")
        try:
            state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling refusal or corruption
            raise ModelFileError(f"{path.name}: {weights_src} is not a weights-only state dict ({e})") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileError(f"{path.name}: {weights_src} holds no state dict of tensors")
        return dict(state), meta
    finally:
        pkg.close()


__all__ = ["export_bioimageio", "is_package", "package_metadata", "read_package", "receptive_field"]
