"""Validation during training: the model run exactly as prediction runs it, on held-out patches.

Eval mode, running BatchNorm statistics, folded BatchNorm, the same normalization as
prediction (the patches are normalized by their plane's percentiles), fp32: the PSNR shown
during training is what :meth:`Pix2PixModel.predict` gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .data import PairedData, Plane, stack_batch
from .progress import ValidationUpdate

if TYPE_CHECKING:
    from .model import Pix2PixModel

def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    win = min(7, *a.shape[1:]) // 2 * 2 + 1 if min(a.shape[1:]) >= 3 else 3
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=win))


def _pad_to(x: np.ndarray, multiple: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple[-2], -w % multiple[-1]
    if ph or pw:
        mode = "reflect" if min(h, w) > 1 else "edge"
        widths = [(0, 0)] * (x.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
        x = np.pad(x, widths, mode=mode)  # type: ignore[call-overload]
    return x, (ph // 2, pw // 2)


@dataclass
class ValSet:
    """Fixed validation patches, as the network sees them."""

    inputs: list[np.ndarray]  # network inputs (Cin, h, w), normalized
    targets: list[np.ndarray]
    raw_inputs: list[np.ndarray]  # the input image part, normalized (for the baseline)


def make_valset(data: PairedData, patch_size: int, n_patches: int, seed: int) -> ValSet | None:
    """Fixed validation patches (drawn once, with their degradation) from the held-out planes."""
    if not data.val:
        return None
    rng = np.random.default_rng(seed + 7919)
    vs = ValSet([], [], [])
    size = patch_size
    for i in range(n_patches):
        p: Plane = data.val[i % len(data.val)]
        h, w = p.input.shape[1:]
        ch, cw = min(size, h), min(size, w)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        a, b, m = data.degrade(p.input[:, y : y + ch, x : x + cw], p.target[:, y : y + ch, x : x + cw], p, rng)
        net_in, _ = stack_batch([(a, b, m)], data.task)
        vs.inputs.append(net_in[0])
        vs.targets.append(b)
        vs.raw_inputs.append(np.where(m[None], np.float32(0), a) if m is not None else a)  # inpaint: zero fill
    return vs


def validate(model: Pix2PixModel, vs: ValSet, device: torch.device, step: int, task: str) -> ValidationUpdate:
    """PSNR, SSIM and L1 of the model on the patches (and of the raw input), a preview and its uncertainty."""
    run = model._runner(device, "fp32")  # as prediction runs: eval, running stats, folded BN
    rng_span = 1.6  # the network range of [lo, hi]
    psnrs, ssims, l1s, psnr_in, ssim_in = [], [], [], [], []
    preview = None
    for a, b, raw in zip(vs.inputs, vs.targets, vs.raw_inputs, strict=True):
        padded, (py, px) = _pad_to(a, model.config.size_multiple)
        out = run(padded[None])[0][:, py : py + a.shape[1], px : px + a.shape[2]]
        if task == "inpaint":  # outside the mask the input is kept, as in prediction
            m = a[-1:] > 0
            out = np.where(m, out, raw)
        psnrs.append(_psnr(out, b, rng_span))
        ssims.append(_ssim(out, b, rng_span))
        l1s.append(float(np.mean(np.abs(out - b))))
        base = np.repeat(raw, b.shape[0], 0) if raw.shape[0] == 1 and b.shape[0] > 1 else raw
        if base.shape == b.shape:
            psnr_in.append(_psnr(base, b, rng_span))
            ssim_in.append(_ssim(base, b, rng_span))
        if preview is None:
            def to01(z: np.ndarray) -> np.ndarray:
                return np.clip((z + 0.8) / 1.6, 0, 1).astype(np.float32)

            preview = (to01(raw), to01(out), to01(b))
    finite = [p for p in psnrs if math.isfinite(p)] or [100.0]
    assert preview is not None
    # uncertainty of the preview patch: spread over the 8 flips/rotations, as in prediction
    a = vs.inputs[0]
    padded, (py, px) = _pad_to(a, model.config.size_multiple)
    samples = np.stack([model._runner(device, "fp32", augment=k)(padded[None])[0] for k in range(8)])
    spread = samples[:, :, py : py + a.shape[1], px : px + a.shape[2]].std(axis=0, ddof=1).mean(axis=0) / rng_span
    if task == "inpaint":
        spread = np.where(a[-1] > 0, spread, 0)
    return ValidationUpdate(
        step, float(np.mean(finite)), float(np.mean(ssims)),
        float(np.mean(psnr_in)) if psnr_in else None, float(np.mean(ssim_in)) if ssim_in else None,
        float(np.mean(l1s)), preview, float(spread.mean()), spread.astype(np.float32),
    )
