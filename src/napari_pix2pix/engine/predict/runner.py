"""The inference runner: a function from a float32 batch to the generator's output, fast and cached.

:func:`runner` turns a generator into ``run(batch) -> output`` for a device and precision:
an inference copy (eval mode, BatchNorm folded, the precision's dtype, channels_last for 2D
networks), optionally applying one flip/rotation (``augment``) or averaging several (``tta``).
Tiling, validation, uncertainty and export checks take such a runner and never need to know
which model object it came from.

Inference copies are cached per generator (the last two device/precision pairs) and dropped
when the generator's weights change: :meth:`torch.nn.Module.load_state_dict` does that by
itself; code that changes weights in place otherwise (an optimiser) calls :func:`forget`, or
registers :func:`forget_after_steps` on its optimiser.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.device import inference_copy, resolve_device, resolve_precision
from ..core.progress import CancelHook, Cancelled, is_cancelled

Runner = Callable[[np.ndarray], np.ndarray]
KEEP = 2  # inference copies kept per generator (e.g. the widgets' bf16 and an export check's fp32)

_copies: weakref.WeakKeyDictionary[nn.Module, OrderedDict[tuple[Any, ...], nn.Module]] = weakref.WeakKeyDictionary()
_hooked: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_lock = threading.Lock()


def forget(generator: nn.Module) -> None:
    """Drop the cached inference copies of `generator` (its weights have changed)."""
    with _lock:
        _copies.pop(generator, None)


def cached(generator: nn.Module) -> list[nn.Module]:
    """The inference copies of `generator` kept now (oldest first)."""
    with _lock:
        return list(_copies.get(generator, {}).values())


def forget_after_steps(optimizer: torch.optim.Optimizer, generator: nn.Module) -> Any:
    """Make every step of `optimizer` drop `generator`'s cached inference copies; returns the hook's handle."""
    ref = weakref.ref(generator)

    def hook(*_: Any) -> None:
        g = ref()
        if g is not None:
            forget(g)

    return optimizer.register_step_post_hook(hook)


def _inference_net(generator: nn.Module, device: torch.device, dtype: torch.dtype, mc_dropout: bool) -> nn.Module:
    key = (str(device), dtype, mc_dropout)
    with _lock:
        if generator not in _hooked:  # loading weights (EMA swaps, the best weights, a checkpoint) drops the copies
            generator.register_load_state_dict_post_hook(lambda module, _keys: forget(module))
            _hooked.add(generator)
        nets = _copies.setdefault(generator, OrderedDict())
        net = nets.get(key)
        if net is None:
            while len(nets) >= KEEP:
                nets.popitem(last=False)
            net = inference_copy(generator, device, dtype, keep_dropout=mc_dropout)
            nets[key] = net
        return net


def runner(generator: nn.Module, device: str | torch.device = "auto", precision: str = "auto", *,
           mc_dropout: bool = False, augment: int = 0, tta: tuple[int, ...] = (), cancel: CancelHook = None) -> Runner:
    """A function mapping a float32 batch (B, C, ...) to the generator's float32 output.

    Parameters
    ----------
    generator : torch.nn.Module
        The network (never modified: an inference copy runs).
    device, precision : str
        See :func:`~napari_pix2pix.engine.core.device.resolve_device` and
        :func:`~napari_pix2pix.engine.core.device.resolve_precision`.
    mc_dropout : bool
        Keep dropout active (Monte-Carlo samples for uncertainty).
    augment : int
        Apply flip/rotation `augment` (:func:`dihedral`) to the batch and undo it on the output.
    tta : tuple of int
        Several flips/rotations whose outputs are averaged (test-time augmentation).
    cancel : threading.Event or callable, optional
        Checked before every forward pass (each flip/rotation of a batch): when it says stop,
        :class:`~napari_pix2pix.engine.core.progress.Cancelled` is raised, so that a long batch
        (a volume's tiles under 16 flips) is not finished first.
    """
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    net = _inference_net(generator, dev, dtype, mc_dropout)
    flat = not any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in net.modules())
    autocast = dev.type == "cuda" and dtype != torch.float32

    def once(x: torch.Tensor, k: int) -> torch.Tensor:
        if is_cancelled(cancel):
            raise Cancelled("prediction cancelled")
        if k:
            x = dihedral(x, k)
        x = x.to(dev, non_blocking=True)
        if dev.type != "mps" and flat:  # channels_last is for 4-D tensors
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=dtype, enabled=autocast):  # in run's inference mode
            y = net(x.to(dtype))
        y = y.float().cpu()
        return dihedral(y, k, inverse=True) if k else y

    transforms = tta or (augment,)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch))
        with torch.inference_mode():
            y = once(x, transforms[0])
            for k in transforms[1:]:
                y += once(x, k)
            if len(transforms) > 1:
                y /= len(transforms)
        return y.numpy()

    return run


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Element `k` (0-7) of the square's symmetry group on the last two axes, or its inverse.

    8-15 (volumes, (B, C, Z, Y, X)): element ``k - 8`` and a flip of Z: the 16 symmetries of
    an anisotropic voxel grid.
    """
    flip, rot, zflip = (k % 8) >= 4, k % 4, k >= 8
    if not inverse:
        x = torch.flip(x, (-3,)) if zflip else x
        x = torch.flip(x, (-1,)) if flip else x
        return torch.rot90(x, rot, (-2, -1))
    x = torch.rot90(x, -rot, (-2, -1))
    x = torch.flip(x, (-1,)) if flip else x
    return torch.flip(x, (-3,)) if zflip else x
