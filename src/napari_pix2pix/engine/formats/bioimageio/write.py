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
import math
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...core.normalization import SCALE, safe_range
from ..export import (
    ONNX_OPSET,
    ExportReport,
    export_kwargs,
    export_network,
    reference_prediction,
    require,
    test_image,
    write_onnx,
    write_torchscript,
)
from .read import ARCHITECTURE_CALLABLE, CONFIG_KEY

if TYPE_CHECKING:
    from ...model import Pix2PixModel

PIX2PIX_CITATION = ("Isola P, Zhu J-Y, Zhou T, Efros AA. Image-to-Image Translation with Conditional Adversarial "
                    "Networks. CVPR 2017.")
PIX2PIX_DOI = "10.1109/CVPR.2017.632"
OUTPUT_IDS = {"denoise": "denoised", "inpaint": "inpainted", "colorize": "colorized", "translate": "translated"}
TAGS = {"denoise": "denoising", "inpaint": "inpainting", "colorize": "colorization", "translate": "image-to-image"}


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


def outputs_intensities(model: Pix2PixModel) -> bool:
    """Whether the package's output is in intensities (fixed output or input range), not normalized units."""
    norm = model.normalization
    return norm.output == "fixed" or norm.input == "fixed"


def output_affine(model: Pix2PixModel) -> tuple[float, float]:
    """(gain, offset) of the package's output ``scale_linear``: network units to output units."""
    norm = model.normalization
    if norm.output == "fixed" or norm.input == "fixed":  # a fixed range: exactly our intensities
        olo, ohi = safe_range(norm.out_lo, norm.out_hi) if norm.output == "fixed" else safe_range(norm.in_lo,
                                                                                                    norm.in_hi)
        gain = (ohi - olo) / (2 * SCALE)
        return gain, olo + SCALE * gain
    return 1 / (2 * SCALE), 0.5  # normalized units of the input: its low/high percentiles -> 0/1


def input_affine(model: Pix2PixModel) -> tuple[float, float]:
    """(gain, offset) taking intensities to network units, for a model with a fixed input range."""
    norm = model.normalization
    lo, hi = safe_range(norm.in_lo, norm.in_hi)
    gain = 2 * SCALE / (hi - lo)
    return gain, -lo * gain - SCALE


def package_preprocess(model: Pix2PixModel, image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The package's preprocessing of a (C, H, W) image, as bioimageio.core computes it."""
    norm = model.normalization
    if norm.input == "fixed":
        gain, offset = input_affine(model)
        return (image.astype(np.float64) * gain + offset).astype(np.float32)
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


def _tiling_lines(model: Pix2PixModel, geometry: _Geometry) -> list[str]:
    """The README's tiling facts: the size grid, the halo, Z for volumes, the channels of 2.5D models."""
    multiple, halo_px, rf, c = geometry.multiple, geometry.halo, geometry.receptive_field, model.config
    return [
        "## Tiling",
        "",
        f"- y and x must be multiples of {multiple} (the U-Net halves them {c.levels} times). Tiles are at "
        f"least {2 * multiple} px: {multiple} px plus the halo on each side.",
        f"- Halo: {halo_px} px per side of an output tile (half the size multiple, so that a tile padded by "
        "the halo stays a multiple of the size multiple). The theoretical "
        f"receptive field is {rf} px; a strided U-Net is not shift-invariant, so tiles that start on multiples "
        f"of {multiple} agree best with a prediction of the whole image.",
        *([f"- z must be a multiple of {geometry.multiples[0]} (the U-Net halves Z at its "
           f"{sum(c.halves(0))} finest levels only: Z is usually shorter and coarser than y and x); halo "
           f"{geometry.halos[0]} planes."] if len(geometry.axes) == 3 else []),
        *([f"- 2.5D: the channels are the plane to restore with its {model.z_context} neighbours on either side "
           "along Z (reflected at the first and last planes), in the order: the plane z itself, then "
           "z-k ... z-1, z+1 ... z+k"]
          if model.z_context else []),
    ]


def _documentation(model: Pix2PixModel, geometry: _Geometry, *, ids: dict[str, str]) -> str:
    axes = ", ".join(geometry.axes)
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
        (f"- `{ids['image']}` (batch, channel, {axes}): intensities; {norm.in_lo:g} and {norm.in_hi:g} (the training "
         "data's typical percentiles, used for every image) are mapped to -0.8 and +0.8, the network's range "
         "(`scale_linear`)." if norm.input == "fixed" else
         f"- `{ids['image']}` (batch, channel, {axes}): any intensities. Preprocessing: the {norm.low} and "
         f"{norm.high} percentiles of the whole sample (all channels pooled) are mapped to 0 and 1 "
         "(`scale_range`), then to -0.8 and +0.8 (`scale_linear`): the network's range."),
    ]
    if model.task.needs_mask:
        lines.append(f"- `{ids['mask']}` (batch, 1, {axes}): non-zero where pixels are to be filled. The network "
                     "sees the image with the holes set to 0 plus the mask; every pixel outside the mask is "
                     "returned unchanged.")
    if norm.output == "fixed":
        lines.append(f"- `{ids['output']}`: intensities on the training targets' scale "
                     f"({norm.out_lo:g} to {norm.out_hi:g} map to the network's -0.8 and +0.8), as napari-pix2pix "
                     "outputs them.")
    elif norm.input == "fixed":
        lines.append(f"- `{ids['output']}`: intensities on the input's scale (the network's -0.8 and +0.8 map back "
                     f"to {norm.in_lo:g} and {norm.in_hi:g}), as napari-pix2pix outputs them.")
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
        *_tiling_lines(model, geometry),
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


def receptive_field(config: Any) -> int:
    """The U-Net's theoretical receptive field along x (see :attr:`UNetConfig.receptive_field`)."""
    return int(config.receptive_field[-1])


def halo(config: Any) -> int:
    """The halo a package states along x: half the size multiple (see :attr:`UNetConfig.halo`)."""
    return int(config.halo[-1])


@dataclass(frozen=True)
class _Geometry:
    """The network's tiling facts as a package states them: along x (y is the same), and per spatial axis."""

    multiple: int
    halo: int
    receptive_field: int
    axes: tuple[str, ...] = ("y", "x")
    multiples: tuple[int, ...] = ()
    halos: tuple[int, ...] = ()

    @classmethod
    def of(cls, config: Any) -> _Geometry:
        axes = ("z", "y", "x") if config.spatial_dims == 3 else ("y", "x")
        return cls(config.size_multiple[-1], config.halo[-1], config.receptive_field[-1], axes,
                   tuple(config.size_multiple), tuple(config.halo))


def _test_tensors(model: Pix2PixModel, image: np.ndarray | None, mask: np.ndarray | None
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


def _write_files(tmp: Path, model: Pix2PixModel, net: Any, image: np.ndarray, mask: np.ndarray | None,
                 geometry: _Geometry, ids: dict[str, str]) -> None:
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
    _cover(model, image[mid], test_out[0][mid], tmp / "cover.png")
    (tmp / "README.md").write_text(_documentation(model, geometry, ids=ids))


def _tensor_descrs(tmp: Path, model: Pix2PixModel, has_mask: bool, geometry: _Geometry, ids: dict[str, str]
                   ) -> tuple[list[Any], Any]:
    """The input tensors (image, and mask for inpainting) and the output tensor of the package."""
    from bioimageio.spec.model import v0_5 as bio

    norm, cfg = model.normalization, model.config
    image_id = bio.TensorId(ids["image"])
    axes = geometry.axes

    def same_as_image(axis: str) -> Any:
        return bio.SizeReference(tensor_id=image_id, axis_id=bio.AxisId(axis))

    space = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=2 * m, step=m))
             for a, m in zip(axes, geometry.multiples, strict=True)]
    grid = ", ".join(f"{a} multiples of {m}" for a, m in zip(axes, geometry.multiples, strict=True))
    inputs = [bio.InputTensorDescr(
        id=image_id,
        description=f"{'volume' if len(axes) == 3 else 'image'} to {model.task.name}; {grid}",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=_channel_names(model.task.image_channels(
            cfg.in_channels))), *space],
        test_tensor=bio.FileDescr(source=tmp / "test_input_image.npy"),
        sample_tensor=bio.FileDescr(source=tmp / "sample_input_image.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_preprocessing(model),
    )]
    if has_mask:
        inputs.append(bio.InputTensorDescr(
            id=bio.TensorId(ids["mask"]),
            description="non-zero where pixels are to be filled",
            axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=["mask"]),
                  *(bio.SpaceInputAxis(id=bio.AxisId(a), size=same_as_image(a)) for a in axes)],
            test_tensor=bio.FileDescr(source=tmp / "test_input_mask.npy"),
            sample_tensor=bio.FileDescr(source=tmp / "sample_input_mask.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32"),
        ))
    units = ("intensities on the training targets' scale" if norm.output == "fixed"
             else "intensities on the input's scale" if norm.input == "fixed"
             else f"normalized units of the input ({norm.low}/{norm.high} percentiles = 0/1)")
    gain, offset = output_affine(model)
    output = bio.OutputTensorDescr(
        id=bio.TensorId(ids["output"]),
        description=units,
        axes=[bio.BatchAxis(),
              bio.ChannelAxis(channel_names=_channel_names(cfg.out_channels, model.task.name == "colorize")),
              *(bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), halo=h, size=same_as_image(a)) if h else
                bio.SpaceOutputAxis(id=bio.AxisId(a), size=same_as_image(a))  # no halo: z of a z_levels=0 net
                for a, h in zip(axes, geometry.halos, strict=True))],
        test_tensor=bio.FileDescr(source=tmp / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=tmp / "sample_output.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=gain, offset=offset))],
    )
    return inputs, output


def _axes(model: Pix2PixModel) -> tuple[str, ...]:
    return ("z", "y", "x") if model.config.spatial_dims == 3 else ("y", "x")


def _preprocessing(model: Pix2PixModel) -> list[Any]:
    """The input's normalization: whole-sample percentiles, or the model's fixed input range."""
    from bioimageio.spec.model import v0_5 as bio

    norm = model.normalization
    if norm.input == "fixed":
        gain, offset = input_affine(model)
        return [bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=gain, offset=offset))]
    return [
        bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(axes=[bio.AxisId(a) for a in ("channel", *_axes(model))],
                                                        min_percentile=norm.low, max_percentile=norm.high)),
        bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=2 * SCALE, offset=-SCALE)),
    ]


def _weights_descr(tmp: Path, model: Pix2PixModel) -> Any:
    from bioimageio.spec.model import v0_5 as bio

    torch_version = bio.Version(torch.__version__.split("+")[0])
    return bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=tmp / "pytorch_state_dict.pt",
            architecture=bio.ArchitectureFromFileDescr(
                source=tmp / "unet.py", callable=bio.Identifier(ARCHITECTURE_CALLABLE), kwargs=export_kwargs(model)),
            pytorch_version=torch_version,
        ),
        torchscript=bio.TorchscriptWeightsDescr(source=tmp / "torchscript.pt", pytorch_version=torch_version,
                                                parent="pytorch_state_dict"),
        onnx=bio.OnnxWeightsDescr(source=tmp / "model.onnx", opset_version=ONNX_OPSET, parent="pytorch_state_dict"),
    )


def _model_descr(tmp: Path, model: Pix2PixModel, net: Any, has_mask: bool, geometry: _Geometry,
                 ids: dict[str, str], authors: list[str] | None, licence: Any) -> Any:
    """The package's rdf: names, card, citation, tensors, weights, and our metadata under config."""
    from bioimageio.spec.model import v0_5 as bio

    cfg, card = model.config, model.card or {}
    names = authors or ([str(a) for a in card["authors"]] if isinstance(card.get("authors"), list)
                        else ["napari-pix2pix"])
    training = {k: v for k, v in (model.training or {}).items() if k != "history"}
    tcfg = training.get("config", {}) if isinstance(training.get("config"), dict) else {}
    summary = str(card.get("summary") or f"Pix2Pix U-Net {model.task.name} model (napari-pix2pix)")
    gan = float(tcfg.get("gan_weight", 1.0) or 0) > 0  # trained with the adversarial term (unknown: assume so)
    inputs, output = _tensor_descrs(tmp, model, has_mask, geometry, ids)
    return bio.ModelDescr(
        name=_safe_name(model.name, model.task.name),
        description=summary[:512],
        authors=[bio.Author(name=n) for n in names],
        cite=[bio.CiteEntry(text=PIX2PIX_CITATION, doi=bio.Doi(PIX2PIX_DOI))],
        license=licence,
        documentation=bio.FileDescr(source=tmp / "README.md"),
        covers=[bio.FileDescr(source=tmp / "cover.png")],
        tags=["pix2pix", "unet", *(["gan"] if gan else []), f"{cfg.spatial_dims}d", "pytorch", "napari-pix2pix",
              model.task.name, TAGS[model.task.name]],
        inputs=inputs,
        outputs=[output],
        weights=_weights_descr(tmp, model),
        config=bio.Config(
            bioimageio=bio.BioimageioConfig(
                architecture_type="U-Net (Pix2Pix generator)",
                architecture_description=(
                    f"{cfg.levels} levels of 4x4 stride-2 convolutions, width {cfg.ngf}; size multiple "
                    f"{geometry.multiple}; theoretical receptive field {geometry.receptive_field} px"),
                model_parameter_count=sum(p.numel() for p in net.parameters()),
                training=bio.TrainingDetails(
                    training_batch_size=tcfg.get("batch_size"), initial_learning_rate=tcfg.get("lr"),
                    loss_function="conditional GAN (PatchGAN) + lambda * L1" if gan else "L1",
                    optimizer="Adam",
                ),
            ),
            **{CONFIG_KEY: _json_safe({**model.metadata, "size_multiple": geometry.multiple,
                                       "receptive_field": geometry.receptive_field, "halo": geometry.halo,
                                       "size_multiples": list(geometry.multiples), "halos": list(geometry.halos)})},
        ),
    )


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
    from bioimageio.spec.model.v0_5 import LicenseId

    cfg = model.config
    licence = license or str((model.card or {}).get("license_id") or "BSD-3-Clause")
    try:
        licence_id = LicenseId(licence)
    except ValueError:
        raise ValueError(f"{licence!r} is not an SPDX licence identifier (e.g. BSD-3-Clause, MIT, CC-BY-4.0)") from None
    image, mask = _test_tensors(model, image, mask)
    geometry = _Geometry.of(cfg)
    ids = {"image": "image", "mask": "mask", "output": OUTPUT_IDS[model.task.name]}
    net = export_network(model)
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        _write_files(tmp, model, net, image, mask, geometry, ids)
        descr = _model_descr(tmp, model, net, mask is not None, geometry, ids, authors, licence_id)
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


__all__ = ["check_package", "export_bioimageio", "halo", "output_affine", "package_preprocess", "receptive_field"]
