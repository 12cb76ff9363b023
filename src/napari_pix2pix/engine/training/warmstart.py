"""Warm starts: a trained generator as the starting point of a new run, its channels adapted where they can be.

A run may start from a bundled model (``start_from="denoise"``), a model file or a model
object (a :class:`~..core.network.Network` such as a ``Pix2PixModel``). Its architecture and
normalization are used; the user's model is never modified (the run trains a copy). Tasks
must agree, except that a denoiser may start a ``translate`` run (both map an image to an
image of the same kind). A different number of channels is adapted in the first and last
layers: new input channels share the weights of the old ones (a gray image repeated on every
channel gives the old response), new output channels copy them. A 2D model starts a 2.5D run
(``z_context=k``) as itself: the plane's own channels keep the old weights and its
neighbours' channels start at zero, so the first step predicts exactly what the 2D model does
and training learns what the neighbours add. A 2D model starts a 3D run the same way
(:func:`inflate`): its kernels become 3D kernels whose other planes start at zero.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...nn import UNetConfig, UNetGenerator
from ..core.network import Network
from ..core.tasks import Task
from ..formats.networks import load_network

StartFrom = str | os.PathLike[str] | Network


def compatible_tasks(start: str, task: str) -> bool:
    """Whether a `start` model may start a `task` run."""
    return start == task or (start == "denoise" and task == "translate")


def load_start(start_from: StartFrom) -> Network:
    """The starting model, loaded once, as the run's own copy (a bundled name, a file, or a model object copied)."""
    if isinstance(start_from, Network):
        model = start_from.copy_as()
        model.generator.load_state_dict(copy.deepcopy(start_from.generator.state_dict()))
        return model
    return load_network(start_from)


def start_model(model: Network, task: Task, image_channels: int, target_channels: int, *,
                spatial_dims: int = 2, z_context: int = 0) -> Network:
    """The run's starting network (:func:`load_start`), checked against its task and dimensions, channels adapted.

    `image_channels` counts a 2.5D input's context channels (the plane and its 2k neighbours).
    `model` is the run's own copy: it is returned as it is when it fits, else a network built from it.

    Raises
    ------
    ValueError
        If the tasks or dimensions do not fit, or the channels cannot be adapted.
    """
    name = model.name
    if not compatible_tasks(model.task.name, task.name):
        raise ValueError(
            f"“{name}” is a {model.task.name} model: it cannot start a {task.name} run (a model starts runs of "
            f"its own task; a denoiser may also start a translate run). Start from a {task.name} model or "
            "from scratch")
    if model.config.spatial_dims == 2 and spatial_dims == 3 and not model.z_context:  # a 2D model starts a 3D run
        return start_model(inflate(model), task, image_channels, target_channels, spatial_dims=3)
    if model.config.spatial_dims != spatial_dims:
        kind = {2: "2D", 3: "3D"}
        raise ValueError(f"“{name}” is a {kind[model.config.spatial_dims]} model: it cannot start a "
                         f"{kind[spatial_dims]} run. Start from a {kind[spatial_dims]} model or from scratch")
    if model.z_context not in (0, z_context):
        raise ValueError(f"“{name}” sees {model.z_context} neighbouring planes each side; this run sees {z_context}."
                         f" Use z_context={model.z_context}, or start from a 2D model or from scratch")
    plane_channels = image_channels // (2 * z_context + 1)
    cin, cout = task.network_channels(plane_channels, target_channels)
    if z_context and not model.z_context:  # a 2D model starts a 2.5D run as itself
        return _with_context(model, task, plane_channels, target_channels, z_context)
    cin += 2 * z_context * task.image_channels(cin)  # the neighbours' channels
    old = model.config
    if (old.in_channels, old.out_channels) == (cin, cout):
        return model
    if model.z_context:
        raise ValueError(f"“{name}” takes {old.in_channels} and gives {old.out_channels} channel(s) with its "
                         f"neighbouring planes; this run needs {cin} -> {cout}. Start from scratch")
    try:
        new_cfg = UNetConfig(**{**old.to_dict(), "in_channels": cin, "out_channels": cout})
    except ValueError as e:
        raise ValueError(f"{name} takes {old.in_channels} and gives {old.out_channels} channel(s); it cannot be "
                         f"adapted to {cin} -> {cout} ({e})") from e
    adapted = model.copy_as(new_cfg, z_context=0)
    adapted.generator.load_state_dict(_adapt_state(model.generator, adapted.generator, old, new_cfg,
                                                   mask=task.needs_mask))
    return adapted


def _rebuilt(model: Network, cfg: UNetConfig, weight: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor],
             z_context: int = 0) -> Network:
    """`model` with the generator `cfg`; each weight is ``weight(key, old, new)`` (`new`: the fresh tensor).

    Normalization, name, card, source and training record are kept.
    """
    out = model.copy_as(cfg, z_context=z_context)
    old = model.generator.state_dict()
    out.generator.load_state_dict({key: weight(key, old[key], new) for key, new in out.generator.state_dict().items()})
    return out


def _with_context(model: Network, task: Task, image_channels: int, target_channels: int, k: int
                  ) -> Network:
    """`model` (2D, adapted to the plane's channels first) with the plane's 2k neighbours as extra channels, at 0."""
    plane = start_model(model, task, image_channels, target_channels)
    old = plane.config
    extra = 2 * k * task.image_channels(old.in_channels)
    first = _first_conv(plane.generator)
    c = task.image_channels(old.in_channels)

    def weight(key: str, w: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if key != first:
            return w.clone()
        # (out, in, kh, kw): the image channels, then (inpaint) the mask channel; the plane's own channels first
        zeros = torch.zeros(w.shape[0], extra, *w.shape[2:], dtype=w.dtype)
        return torch.cat([w[:, :c], zeros, w[:, c:]], dim=1)

    return _rebuilt(plane, UNetConfig(**{**old.to_dict(), "in_channels": old.in_channels + extra}), weight, z_context=k)


def inflate(model: Network, z_kernel_levels: int | None = None) -> Network:
    """A 2D model as a 3D network that starts out predicting exactly what the 2D model does, plane by plane.

    The network is the same with 3D layers and no Z halvings (``z_levels=0``): every kernel gets a
    Z extent (3 for 3x3 and 4x4 layers, 1 for 1x1), the 2D weights sit in its centre plane and the
    other planes start at zero, so each plane's output at first depends on that plane only;
    training learns what the neighbouring planes add. Norm layers keep their statistics.
    With `z_kernel_levels`, only the finest levels read neighbouring planes (the coarser ones,
    where most of the weights are, stay plane by plane: about a third of the weights).
    """
    def weight(key: str, w: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if new.dim() == 5 and w.dim() == 4:  # (out, in, [z,] ky, kx): the 2D kernel in the centre plane
            out = torch.zeros(new.shape, dtype=w.dtype)
            out[:, :, new.shape[2] // 2] = w
            return out
        return w.clone()

    cfg = UNetConfig(**{**model.config.to_dict(), "spatial_dims": 3, "z_levels": 0,
                        "z_kernel_levels": z_kernel_levels})
    vol = _rebuilt(model, cfg, weight)
    vol.card["inflated_from"] = f"{model.name} (2D), inflated to 3D"
    return vol


def narrow_z(model: Network, z_kernel_levels: int) -> Network:
    """A 3D model whose levels from `z_kernel_levels` on work plane by plane: their kernels' centre planes kept.

    Most of a U-Net's weights are in its coarse levels; reading neighbouring planes there adds
    little (measured on the bundled 3D denoiser: 0.01 dB) for three times the weights.
    """
    if model.config.spatial_dims != 3:
        raise ValueError("narrow_z takes a 3D model")

    def weight(key: str, w: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        if w.dim() == 5 and new.shape[2] < w.shape[2]:  # this level's kernels: their centre plane
            w = w[:, :, w.shape[2] // 2 : w.shape[2] // 2 + 1]
        return w.clone()

    return _rebuilt(model, UNetConfig(**{**model.config.to_dict(), "z_kernel_levels": z_kernel_levels}), weight)


def _first_conv(net: UNetGenerator) -> str:
    """The state-dict key of the weight that reads the network's input channels."""
    cin = net.config.in_channels
    for name, module in net.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.in_channels == cin:
            return f"{name}.weight"
    raise ValueError("no input convolution found")


def _adapt_state(old_net: UNetGenerator, new_net: UNetGenerator, old: UNetConfig, new: UNetConfig, mask: bool
                 ) -> dict[str, torch.Tensor]:
    """The old weights in the new network's shapes: first layer's inputs and last layer's outputs adapted."""
    old_state, new_state = old_net.state_dict(), new_net.state_dict()
    modules = dict(new_net.named_modules())
    out: dict[str, torch.Tensor] = {}
    for key, target in new_state.items():
        src = old_state[key]
        if src.shape == target.shape:
            out[key] = src.clone()
            continue
        module = modules[key.rsplit(".", 1)[0]]
        transposed = isinstance(module, (nn.ConvTranspose2d, nn.ConvTranspose3d))
        if key.endswith("bias"):  # output channels of the last layer
            out[key] = _copy_channels(src, 0, target.shape[0])
        elif src.shape[1 if not transposed else 0] != target.shape[1 if not transposed else 0]:
            out[key] = _share_inputs(src, 0 if transposed else 1, old.in_channels, new.in_channels, mask)
        else:  # output channels of the last layer
            out[key] = _copy_channels(src, 1 if transposed else 0, target.shape[1 if transposed else 0])
    return out


def _copy_channels(w: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """`n` output channels along `dim`, cycling through the old ones."""
    idx = torch.arange(n) % w.shape[dim]
    return w.index_select(dim, idx).clone()


def _share_inputs(w: torch.Tensor, dim: int, old_in: int, new_in: int, mask: bool) -> torch.Tensor:
    """New input channels along `dim`: image channels share the old image weights; a mask channel is kept."""
    k_old, k_new = old_in - mask, new_in - mask
    img = w.narrow(dim, 0, k_old)
    if k_new >= k_old:  # spread: a gray image repeated on every channel gives the old response
        parts = [img.narrow(dim, j % k_old, 1) * (k_old / k_new) for j in range(k_new)]
    else:  # pool: channel j collects the old channels i with i % k_new == j
        parts = [torch.stack([img.narrow(dim, i, 1) for i in range(j, k_old, k_new)]).sum(0) for j in range(k_new)]
    if mask:
        parts.append(w.narrow(dim, k_old, 1))
    return torch.cat(parts, dim=dim).clone()


def describe_start(model: Network, start_from: Any) -> str:
    """A short record of where a run started from (a bundled name, a file, or a model's name)."""
    if isinstance(start_from, Network):
        return f"{model.name} (a model object{': ' + str(start_from.source) if start_from.source else ''})"
    return str(start_from)
