"""The package's description (rdf): tensors with their axes and processing, weights, names, card and config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...core.network import Network
from ...core.normalization import SCALE
from ..export import ONNX_OPSET, export_kwargs
from .facts import (
    PIX2PIX_CITATION,
    PIX2PIX_DOI,
    TAGS,
    Geometry,
    channel_names,
    input_affine,
    json_safe,
    output_affine,
    safe_name,
)
from .read import ARCHITECTURE_CALLABLE, CONFIG_KEY


def _tensor_descrs(tmp: Path, model: Network, has_mask: bool, geometry: Geometry, ids: dict[str, str]
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
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=channel_names(model.task.image_channels(
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
              bio.ChannelAxis(channel_names=channel_names(cfg.out_channels, model.task.name == "colorize")),
              *(bio.SpaceOutputAxisWithHalo(id=bio.AxisId(a), halo=h, size=same_as_image(a)) if h else
                bio.SpaceOutputAxis(id=bio.AxisId(a), size=same_as_image(a))  # no halo: z of a z_levels=0 net
                for a, h in zip(axes, geometry.halos, strict=True))],
        test_tensor=bio.FileDescr(source=tmp / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=tmp / "sample_output.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        postprocessing=[bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=gain, offset=offset))],
    )
    return inputs, output


def _axes(model: Network) -> tuple[str, ...]:
    return ("z", "y", "x") if model.config.spatial_dims == 3 else ("y", "x")


def _preprocessing(model: Network) -> list[Any]:
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


def _weights_descr(tmp: Path, model: Network) -> Any:
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


def model_descr(tmp: Path, model: Network, net: Any, has_mask: bool, geometry: Geometry,
                 ids: dict[str, str], authors: list[str] | None, licence: Any) -> Any:
    """The package's rdf: names, card, citation, tensors, weights, and our metadata under config."""
    from bioimageio.spec.model import v0_5 as bio

    cfg, card = model.config, model.card or {}
    names = authors or ([str(a) for a in card["authors"]] if isinstance(card.get("authors"), list)
                        else ["napari-pix2pix"])
    tcfg = model.training_settings
    summary = str(card.get("summary") or f"Pix2Pix U-Net {model.task.name} model (napari-pix2pix)")
    gan = float(tcfg.get("gan_weight", 1.0) or 0) > 0  # trained with the adversarial term (unknown: assume so)
    inputs, output = _tensor_descrs(tmp, model, has_mask, geometry, ids)
    return bio.ModelDescr(
        name=safe_name(model.name, model.task.name),
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
            **{CONFIG_KEY: json_safe({**model.metadata, "size_multiple": geometry.multiple,
                                       "receptive_field": geometry.receptive_field, "halo": geometry.halo,
                                       "size_multiples": list(geometry.multiples), "halos": list(geometry.halos)})},
        ),
    )
