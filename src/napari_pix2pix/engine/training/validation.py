"""Validation during training: the model run exactly as prediction runs it, on held-out patches.

Eval mode, running BatchNorm statistics, folded BatchNorm, the same normalization as
prediction (the patches are normalized by their plane's percentiles), fp32: the PSNR shown
during training is what prediction (:mod:`..predict`) gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy import ndimage

from ..core.network import Network
from ..core.normalization import SCALE, from_network
from ..core.progress import ValidationUpdate
from ..images.noise import NoiseModel
from ..predict.runner import Runner, runner
from .blindspot import BLIND_SPOT_FRACTION, neighbour_mean
from .data import PairedData, Plane, patch_shape, stack_batch


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    smallest = min(a.shape[1:])
    win = min(7, smallest) - (1 - min(7, smallest) % 2)  # the largest odd window that fits (6 rows: 5)
    if smallest < 3:  # too thin for a window (a few planes of a volume): the mean over its planes
        return float(np.mean([_ssim(a[:, i], b[:, i], data_range) for i in range(a.shape[1])]))
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=win))


def _pad_to(x: np.ndarray, multiple: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """`x` (C, ...) reflect-padded to multiples of `multiple` on its last axes; the offsets of the original."""
    sizes = x.shape[-len(multiple):]
    pads = [-n % m for n, m in zip(sizes, multiple, strict=True)]
    if any(pads):
        mode = "reflect" if min(sizes) > 1 else "edge"
        widths = [(0, 0)] * (x.ndim - len(multiple)) + [(p // 2, p - p // 2) for p in pads]
        x = np.pad(x, widths, mode=mode)  # type: ignore[call-overload]
    return x, tuple(p // 2 for p in pads)


def _crop(x: np.ndarray, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> np.ndarray:
    return x[(slice(None), *(slice(o, o + n) for o, n in zip(offsets, sizes, strict=True)))]


def _mid(x: np.ndarray) -> np.ndarray:
    """The (C, h, w) preview of a patch: itself in 2D, its middle plane for a volume (C, d, h, w)."""
    return x[:, x.shape[1] // 2] if x.ndim == 4 else x


@dataclass
class ValSet:
    """Fixed validation patches, as the network sees them."""

    inputs: list[np.ndarray]  # network inputs (Cin, h, w), normalized
    targets: list[np.ndarray]
    raw_inputs: list[np.ndarray]  # the input image part, normalized (for the baseline)
    skips: list[int] = field(default_factory=list)  # leading planes of each patch that are context, not scored
    noise_var: list[np.ndarray] = field(default_factory=list)  # noisy images alone: each pixel's noise variance
    self_supervised: bool = False  # noisy images alone: no clean pixel; scores are estimates (see validate)


CANDIDATES = 8  # positions drawn per validation patch; the one with the most signal is kept
VAL_SCHEME = 2  # checkpoints record it: a best score from another scheme is scored again on resume (1: before 0.4)


def _fullest(p: Plane, crop: list[int], rng: np.random.Generator) -> tuple[slice, ...]:
    """The crop box of `p` whose target spreads most, of CANDIDATES random positions (the first of equals)."""
    best: tuple[slice, ...] = ()
    spread = -1.0
    for _ in range(CANDIDATES):
        starts = [int(rng.integers(0, n - c + 1)) for n, c in zip(p.input.shape[1:], crop, strict=True)]
        box = (slice(None), *(slice(s0, s0 + c) for s0, c in zip(starts, crop, strict=True)))
        s = float(np.std(p.target[box][:, p.context :]))  # a slab's context planes are not scored
        if s > spread:
            best, spread = box, s
    return best


SELF_SUPERVISED_PATCHES = 16  # noisy images alone: more patches, so that the ranking of estimates is not noise


def make_valset(data: PairedData, patch_size: int | tuple[int, ...], n_patches: int, seed: int,
                noise: NoiseModel | None = None) -> ValSet | None:
    """Fixed validation patches (drawn once, with their degradation) from the held-out planes.

    Each patch is the one with the most signal (the target's spread) of a few random
    positions, as CARE's patch filter keeps foreground: held-out background says little about
    a model. A held-out slab of a volume gives up to a patch deep of its planes, with the
    context planes before them. Noisy images alone (``data.self_supervised``) get at least
    :data:`SELF_SUPERVISED_PATCHES` patches and, with their `noise` model, each pixel's noise
    variance in network units (for Stein's unbiased risk estimate in :func:`validate`).
    """
    if not data.val:
        return None
    rng = np.random.default_rng(seed + 7919)
    vs = ValSet([], [], [], self_supervised=data.self_supervised)
    if data.self_supervised:
        n_patches = max(n_patches, SELF_SUPERVISED_PATCHES)
    size = patch_shape(patch_size, data.dims)
    for i in range(n_patches):
        p: Plane = data.val[i % len(data.val)]
        if p.context:  # a slab: up to a patch deep of its held-out planes, with the context planes before them
            k = p.input.shape[1] - p.context
            depth = min(k, size[0])
            z0 = int(rng.integers(0, k - depth + 1))
            zs = slice(z0, z0 + p.context + depth)
            p = replace(p, input=p.input[:, zs], target=p.target[:, zs])
        crop = [min(q, n) for q, n in zip(size, p.input.shape[1:], strict=True)]
        if p.context:
            crop[0] = p.input.shape[1]
        box = _fullest(p, crop, rng)
        a, b, m = data.degrade(p.input[box], p.target[box], p, rng)
        net_in, _ = stack_batch([(a, b, m)], data.task)
        vs.inputs.append(net_in[0])
        vs.targets.append(b)
        vs.skips.append(p.context)
        a = a[: a.shape[0] // (2 * data.z_context + 1)]  # 2.5D: the plane itself, without its neighbours
        vs.raw_inputs.append(np.where(m[None], np.float32(0), a) if m is not None else a)  # inpaint: zero fill
        if data.self_supervised and noise is not None:
            vs.noise_var.append(_noise_var(a, p.in_range, noise))
    return vs


def _noise_var(a: np.ndarray, in_range: tuple[float, float], noise: NoiseModel) -> np.ndarray:
    """Each pixel's noise variance in network units: the model's at the local mean intensity."""
    lo, hi = in_range
    scale = 2 * SCALE / (hi - lo)  # network units per intensity unit
    local = ndimage.uniform_filter(from_network(a, lo, hi).astype(np.float64), [1] + [3] * (a.ndim - 1))
    return (noise.variance(local) * scale**2).astype(np.float32)


def validate(model: Network, vs: ValSet, device: torch.device, step: int, task: str) -> ValidationUpdate:
    """PSNR, SSIM and L1 of the model on the patches (and of the raw input), a preview and its uncertainty.

    Noisy images alone have no clean pixel: the PSNR is then estimated, by Stein's unbiased risk
    estimate where a noise model is known (:func:`_sure`: unbiased for the true MSE of the
    prediction as it is deployed), else by the blind-spot loss (:func:`_blind_spot_loss`). Every
    model of a run, its starting model included, is scored the same way on the same patches.
    """
    run = runner(model.generator, device, "fp32")  # as prediction runs: eval, running stats, folded BN
    if vs.self_supervised:
        return _validate_self_supervised(model, vs, run, step)
    rng_span = 1.6  # the network range of [lo, hi]
    psnrs, ssims, l1s, psnr_in, ssim_in = [], [], [], [], []
    preview = None
    skips = vs.skips or [0] * len(vs.inputs)
    for a, b, raw, skip in zip(vs.inputs, vs.targets, vs.raw_inputs, skips, strict=True):
        padded, offsets = _pad_to(a, model.config.size_multiple)
        out = _crop(run(padded[None])[0], offsets, a.shape[1:])
        if task == "inpaint":  # outside the mask the input is kept, as in prediction
            m = a[-1:] > 0
            out = np.where(m, out, raw)
        if skip:  # a volume's held-out slab: its context planes are not scored
            out, b, raw = out[:, skip:], b[:, skip:], raw[:, skip:]
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

            preview = (to01(_mid(raw)), to01(_mid(out)), to01(_mid(b)))
    finite = [p for p in psnrs if math.isfinite(p)] or [100.0]
    assert preview is not None
    # uncertainty of the preview patch: spread over the 8 flips/rotations, as in prediction
    a = vs.inputs[0]
    padded, offsets = _pad_to(a, model.config.size_multiple)
    samples = np.stack([_crop(runner(model.generator, device, "fp32", augment=k)(padded[None])[0], offsets, a.shape[1:])
                        for k in range(8)])
    spread = _mid(samples.std(axis=0, ddof=1)[:, skips[0]:]).mean(axis=0) / rng_span  # the preview's planes
    if task == "inpaint":
        spread = np.where(_mid(a[:, skips[0]:])[-1] > 0, spread, 0)
    return ValidationUpdate(
        step, float(np.mean(finite)), float(np.mean(ssims)),
        float(np.mean(psnr_in)) if psnr_in else None, float(np.mean(ssim_in)) if ssim_in else None,
        float(np.mean(l1s)), preview, float(spread.mean()), spread.astype(np.float32),
    )


# ---------------------------------------------------------------------- noisy images alone
def _validate_self_supervised(model: Network, vs: ValSet, run: Runner, step: int) -> ValidationUpdate:
    """Scores estimated without clean data: Stein's unbiased risk where the noise is known, else the blind-spot loss."""
    rng = np.random.default_rng(4099)  # the same probes for every model of the run
    mses, l1s, noise = [], [], []
    preview = None
    for i, a in enumerate(vs.inputs):
        padded, offsets = _pad_to(a, model.config.size_multiple)
        out = _crop(run(padded[None])[0], offsets, a.shape[1:])
        if vs.noise_var:
            mses.append(_sure(model, run, a, out, vs.noise_var[i], rng))
            noise.append(float(np.mean(vs.noise_var[i])))
        else:
            mses.append(_blind_spot_loss(model, run, a, rng))
        l1s.append(float(np.mean(np.abs(out - a))))
        if preview is None:
            def to01(z: np.ndarray) -> np.ndarray:
                return np.clip((z + 0.8) / 1.6, 0, 1).astype(np.float32)

            preview = (to01(_mid(a)), to01(_mid(out)), to01(_mid(a)))
    assert preview is not None
    span2 = 1.6**2
    psnr = 10 * math.log10(span2 / max(float(np.mean(mses)), 1e-12))
    psnr_in = 10 * math.log10(span2 / float(np.mean(noise))) if noise else None
    return ValidationUpdate(step, psnr, float("nan"), psnr_in, None, float(np.mean(l1s)), preview,
                            target="estimated" if noise else "blind-spot", patch_errors=tuple(mses))


def clearly_better(new: ValidationUpdate, best: ValidationUpdate | None, best_psnr: float = -math.inf) -> bool:
    """Whether `new` beats the best so far (`best`: its update in this session, or only its PSNR `best_psnr`).

    With clean data, a higher PSNR. With estimated scores (noisy images alone) the estimates of
    the same patches are paired and the mean improvement must exceed twice its standard error:
    an estimate's noise alone never replaces the weights a run has (its start's first).
    """
    if best is None or new.patch_errors is None or best.patch_errors is None or len(new.patch_errors) != len(
            best.patch_errors):
        return new.psnr > best_psnr
    gain = np.asarray(best.patch_errors) - np.asarray(new.patch_errors)  # > 0: the new weights err less
    if len(gain) < 2:
        return float(gain.mean()) > 0
    return float(gain.mean()) > 2 * float(gain.std(ddof=1)) / math.sqrt(len(gain))


def _sure(model: Network, run: Runner, a: np.ndarray, out: np.ndarray, var: np.ndarray,
          rng: np.random.Generator) -> float:
    """Stein's unbiased estimate of the prediction's MSE to the unknown clean patch (network units).

    ``‖f(y) − y‖² / n − mean(σ²) + 2 / n · Σ σᵢ² ∂fᵢ/∂yᵢ``, the divergence by one Monte-Carlo
    probe (Ramani et al. 2008); σᵢ² from the noise model (Poisson noise treated as Gaussian
    of the same variance). Only the plane's own channels are noisy inputs (2.5D: not its
    neighbours').
    """
    own = out.shape[0]
    eps = 1e-3
    probe = np.zeros_like(a)
    probe[:own] = rng.standard_normal(a[:own].shape).astype(np.float32)
    padded, offsets = _pad_to(a + eps * probe, model.config.size_multiple)
    out2 = _crop(run(padded[None])[0], offsets, a.shape[1:])
    div = float(np.sum(var * probe[:own] * (out2 - out))) / eps
    n = out.size
    return float(np.sum((out - a[:own]) ** 2)) / n - float(np.mean(var)) + 2 * div / n


def _blind_spot_loss(model: Network, run: Runner, a: np.ndarray, rng: np.random.Generator, masks: int = 4) -> float:
    """Mean squared error to the noisy pixels the network did not see (4 fixed masks of 2 % of the pixels each)."""
    x = torch.from_numpy(a[None])
    filled = neighbour_mean(x)[0].numpy()
    errs = []
    for _ in range(masks):
        mask = (rng.random((1, *a.shape[1:])) < BLIND_SPOT_FRACTION).astype(np.float32)
        padded, offsets = _pad_to(a * (1 - mask) + filled * mask, model.config.size_multiple)
        out = _crop(run(padded[None])[0], offsets, a.shape[1:])
        errs.append(float(np.sum(mask * (out - a[: out.shape[0]]) ** 2) / max(mask.sum() * out.shape[0], 1)))
    return float(np.mean(errs))
