"""Generators of the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix): their checkpoints read in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from ...nn import UNetConfig, preset_config, reference_key_map
from ..core.network import Network
from .modelfile import ModelFileError

N = TypeVar("N", bound=Network)


def import_reference_checkpoint(
    path: str | os.PathLike[str],
    task: str = "translate",
    *,
    preset: str = "unet_256",
    in_channels: int = 3,
    out_channels: int = 3,
    norm: str = "batch",
    dropout: bool = True,
    cls: type[N] = Network,  # type: ignore[assignment]
    **overrides: Any,
) -> N:
    """Import a ``*_net_G.pth`` of the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix).

    The file is read with ``torch.load(weights_only=True)``, which refuses pickled code.
    Give the flags it was trained with (``--netG unet_256 --input_nc 3 --output_nc 3``).

    Parameters
    ----------
    path : path
        The generator checkpoint.
    task : str
        Task of the new model.
    preset : {"unet_256", "unet_128"}
        The reference's ``--netG``.
    in_channels, out_channels : int
        The reference's ``--input_nc`` and ``--output_nc``.
    norm : {"batch"}
        The reference's ``--norm``; instance-norm checkpoints use per-image statistics,
        which make tiles disagree, and are refused.
    dropout : bool
        False for models trained with ``--no_dropout``.
    cls : type
        The class of the returned model (the front door passes ``Pix2PixModel``).
    **overrides
        UNetConfig fields applied on top of the preset.

    Returns
    -------
    Network
        Of class `cls`.
    """
    if norm != "batch":
        raise ValueError(
            "only batch-norm reference checkpoints can be imported: instance norm in the reference "
            "computes per-image statistics, which make neighbouring tiles disagree"
        )
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ModelFileError(f"could not read {Path(path).name} as a weights-only checkpoint: {e}") from e
    if not isinstance(state, dict):
        raise ModelFileError(f"{Path(path).name} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = cls(
        task, preset, config=preset_config(preset, in_channels=in_channels, out_channels=out_channels,
                                           dropout=0.5 if dropout else 0.0, **overrides),
    )
    ours = map_reference_state(state, model.config, f"{Path(path).name}: is it a {preset} generator with "
                               f"input_nc={in_channels}, output_nc={out_channels}?")
    try:
        model.generator.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{Path(path).name} does not match {preset} ({e})") from e
    model.source = str(path)
    model.card["imported_from"] = Path(path).name
    return model


def map_reference_state(state: dict[str, Any], config: UNetConfig, hint: str = "") -> dict[str, Any]:
    """The reference implementation's state-dict entries under our names (values passed through).

    Raises
    ------
    ModelFileError
        For a key the reference's UnetGenerator of `config` does not have.
    """
    mapping = reference_key_map(config)
    ours: dict[str, Any] = {}
    for key, value in state.items():
        for ref, our in mapping.items():
            if key.startswith(ref) and "." not in key[len(ref):]:
                ours[our + key[len(ref):]] = value
                break
        else:
            raise ModelFileError(f"unexpected key {key!r}" + (f"; {hint}" if hint else ""))
    return ours
