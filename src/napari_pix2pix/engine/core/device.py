"""Devices and the fastest accurate numeric path each one has."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a torch device: "auto" picks CUDA, then Apple MPS, then the CPU.

    Raises
    ------
    ValueError
        If a named device is unknown or not available on this machine.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use one of {DEVICES} (or 'cuda:N')")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use device='auto' or 'cpu'")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple MPS is not available; use device='auto' or 'cpu'")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True if this CPU computes bf16 convolutions natively (AVX-512 BF16 or AMX).

    Without them PyTorch emulates bf16 and runs ~100x slower than fp32 (measured on an
    AVX2-only AMD EPYC), so bf16 is only chosen automatically where it is native.
    """
    return cpu_has_amx() or bool(getattr(getattr(torch, "cpu", None), "_is_avx512_bf16_supported", lambda: False)())


def cpu_has_amx() -> bool:
    """True if this CPU has AMX tiles (Intel Sapphire Rapids and later): oneDNN's fastest bf16 kernels."""
    return bool(getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", lambda: False)())


def cuda_has_native_bf16() -> bool:
    """True if the current CUDA GPU computes bf16 natively (Ampere or newer), not by emulation."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # PyTorch < 2.3 has no `including_emulation` (and reports native support only)
        return bool(torch.cuda.is_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype of `precision` on `device`: one rule for prediction and training.

    ========  ===========================  ====================================
    asked     CPU                          CUDA GPU / Apple MPS
    ========  ===========================  ====================================
    "auto"    bf16 where it is native      CUDA: bf16 where native, else fp16;
              (AVX-512 BF16, AMX), else    MPS: fp16
              fp32
    "fp32"    fp32                         fp32
    "bf16"    bf16 (emulated, ~100x        bf16
              slower, without native
              support)
    "fp16"    refused: not on the CPU      fp16 (training scales the loss)
    ========  ===========================  ====================================

    Prediction casts the network to this dtype; training runs the forward pass under
    ``torch.autocast`` with it (:func:`autocast_dtype`), with a gradient scaler for fp16.

    Raises
    ------
    ValueError
        For an unknown precision, or fp16 on the CPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise ValueError("fp16 is not supported on the CPU; use 'bf16' or 'fp32' (or 'auto')")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def autocast_dtype(precision: str, device: torch.device, spatial_dims: int = 2) -> torch.dtype | None:
    """The dtype training autocasts to (:func:`resolve_precision`), or None for plain fp32.

    Where the installed PyTorch cannot autocast on the device (MPS before PyTorch 2.5),
    "auto" trains in fp32 and an explicit "bf16"/"fp16" is refused. 3D networks train in bf16
    on the CPU only with AMX: on an AVX-512 BF16 Xeon without AMX the backward pass of oneDNN's
    3D convolutions gave NaN weight gradients within a few steps (PyTorch 2.13), so they train in
    fp32 there; with AMX 60 steps of denoise3d were finite and 2.4x faster than fp32. Wherever bf16
    gives non-finite gradients, that step is not taken and the run goes on in fp32 (the model's
    ``training["fp32_from_step"]`` says from when). Prediction in bf16 is unaffected.
    """
    dtype = resolve_precision(precision, device)
    if dtype == torch.float32:
        return None
    if spatial_dims == 3 and device.type == "cpu" and not cpu_has_amx():
        if precision == "auto":
            return None
        raise ValueError("3D networks train in fp32 on a CPU without AMX: PyTorch's bf16 3D convolutions give NaN "
                         "gradients there; use precision='fp32' or 'auto'")
    if not _autocast_available(device.type):
        if precision == "auto":
            return None
        raise ValueError(f"this PyTorch ({torch.__version__}) cannot train in {precision} on {device.type}; "
                         "use precision='fp32' or 'auto'")
    return dtype


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)
    if check is None:  # PyTorch < 2.4: autocast on CPU and CUDA only
        return device_type in ("cpu", "cuda")
    return bool(check(device_type))


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm layers into the convolution before them (in place).

    Works on ``nn.Sequential`` containers where a (transposed) convolution is directly
    followed by ``BatchNorm2d`` (or their 3D counterparts); the fused network computes the same function.
    """
    for child in module.children():
        fold_batchnorm(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            conv, bn = layers[i], layers[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d, nn.ConvTranspose3d)) and isinstance(
                    bn, (nn.BatchNorm2d, nn.BatchNorm3d)):
                transpose = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
                module[i] = fuse_conv_bn_eval(conv, bn, transpose=transpose)
                module[i + 1] = nn.Identity()
    return module


def inference_copy(
    generator: nn.Module, device: torch.device, dtype: torch.dtype, keep_dropout: bool = False
) -> nn.Module:
    """A copy of `generator` ready for fast inference (the original is untouched).

    Eval mode, BatchNorm folded into the convolutions, channels_last, weights in `dtype`
    on `device`.
    """
    net = copy.deepcopy(generator).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fold_batchnorm(net)
    if keep_dropout:  # Monte-Carlo dropout samples
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.train()
    net = net.to(device=device, dtype=dtype)
    flat = not any(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in net.modules())
    if device.type != "mps" and flat:  # channels_last is for 4-D tensors (2D networks)
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for p in net.parameters():
        p.requires_grad_(False)
    return net
