"""One training step: a batch of patches, one discriminator step, one generator step.

The discriminator learns real pairs -> 1, generated -> 0 (at every scale, with an optional R1
penalty); the generator learns to fool it and to stay close to the target (the pixel loss),
with pix2pixHD's feature matching where asked. Under bf16 autocast a step whose gradients are
not finite is not taken and the run goes on in fp32.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ...nn import GANLoss
from .blindspot import blind_spot
from .data import PairedData, stack_batch
from .plan import RunPlan
from .state import Run


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


def batch(run: Run, plan: RunPlan, augment: bool, data: PairedData, shard: list[Any], device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random patch pairs (flipped/rotated when `augment`), on `device`, checked for finite values."""
    a_np, b_np = stack_batch([data.sample(run.random.numpy_rng, plan.patch_size, augment, shard)
                              for _ in range(plan.batch_size)], data.task)
    a = torch.from_numpy(a_np).to(device).contiguous(memory_format=run.memory_format)
    b = torch.from_numpy(b_np).to(device).contiguous(memory_format=run.memory_format)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise TrainingDiverged(f"training data contain NaN or infinite values at step {run.step + 1}; "
                               "clean the images (numpy.nan_to_num) and start again")
    return a, b


def _optimise(run: Run, opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any, clip: float | None) -> bool:
    """One optimiser step on `loss` (scaled for fp16; gradients clipped if asked).

    Under bf16 autocast a step whose gradients are not finite is not taken: False (the caller
    goes on in fp32, :func:`_bf16_fallback`). fp16's gradient scaler skips such steps itself.
    """
    opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    params = [p for p in params if p.grad is not None]
    norm = None
    if clip:
        run.scaler.unscale_(opt)
        norm = nn.utils.clip_grad_norm_(params, clip)
    elif run.amp_dtype == torch.bfloat16 and params:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params]))
    if norm is not None and run.amp_dtype == torch.bfloat16 and not torch.isfinite(norm):
        opt.zero_grad(set_to_none=True)
        return False
    run.scaler.step(opt)
    return True


def _bf16_fallback(run: Run) -> None:
    """A bf16 step gave non-finite gradients: the run goes on in fp32 (the step was not taken)."""
    run.amp_dtype, run.fp32_from = None, run.step + 1
    warnings.warn(f"bf16 gave non-finite gradients at step {run.step + 1} (not taken); training goes on in fp32",
                  RuntimeWarning, stacklevel=3)


def _gan_terms(run: Run, plan: RunPlan, a: torch.Tensor, b: torch.Tensor, fake: torch.Tensor,
               gan_loss: GANLoss, autocast: Any) -> tuple[torch.Tensor, Any]:
    """The D loss on (real, generated) pairs, plus the R1 penalty; and the real pairs' features for matching."""
    assert run.d_net is not None
    r = plan.losses
    if not (r.feature_matching or r.r1 or (r.d_scales or 1) > 1):  # the paper's single-scale D
        with autocast:
            loss = 0.5 * (gan_loss(run.d_net(a, b), True) + gan_loss(run.d_net(a, fake.detach()), False))
        return loss, None
    b_real = b.detach().requires_grad_(bool(r.r1))
    with autocast:
        real, fakes = run.d_net(a, b_real, judge=True), run.d_net(a, fake.detach(), judge=True)
        loss = sum(0.5 * (gan_loss(x[0], True) + gan_loss(f[0], False)) for x, f in zip(real, fakes, strict=True))
        loss = loss / len(real)
    if r.r1:  # R1: the discriminator's gradient on real pairs, squared
        (grad,) = torch.autograd.grad(sum(x[0].float().sum() for x in real), b_real, create_graph=True)
        loss = loss + 0.5 * r.r1 * grad.pow(2).flatten(1).sum(1).mean()
    return loss, [[f.detach() for f in x[1]] for x in real] if r.feature_matching else None


def _g_adversarial(run: Run, plan: RunPlan, a: torch.Tensor, fake: torch.Tensor, gan_loss: GANLoss,
                   real_feats: Any) -> torch.Tensor:
    """The generator's adversarial loss (every scale), plus feature matching against the real pairs."""
    assert run.d_net is not None
    if real_feats is None and not (plan.losses.d_scales or 1) > 1:
        return gan_loss(run.d_net(a, fake), True)
    judged = run.d_net(a, fake, judge=True)
    loss = sum(gan_loss(logits, True) for logits, _ in judged) / len(judged)
    if real_feats is not None:  # pix2pixHD: L1 between the D features of generated and real pairs
        fm = [nn.functional.l1_loss(f.float(), r.float()) for (_, fs), rs in zip(judged, real_feats, strict=True)
              for f, r in zip(fs, rs, strict=True)]
        loss = loss + (plan.losses.feature_matching or 0.0) * sum(fm) / len(judged)
    return loss


def train_step(run: Run, plan: RunPlan, a: torch.Tensor, b: torch.Tensor, gan_loss: GANLoss,
               grad_clip: float | None) -> dict[str, float]:
    """One D step (real pairs -> 1, generated -> 0), then one G step (fool D, stay close to the target)."""
    gan_w = plan.gan_weight_at(run.step)
    adversarial = gan_w > 0 and run.disc is not None and run.d_net is not None and run.opt_d is not None
    autocast = torch.autocast(a.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None)
    l2 = plan.losses.pixel_loss == "l2"
    mask = None
    if plan.losses.self_supervised == "blind-spot":  # noisy images alone: predict masked pixels from neighbours
        a, mask = blind_spot(a)
    with autocast:
        fake = run.g_net(a)
    loss_d, real_feats = None, None
    if adversarial:
        assert run.disc is not None and run.opt_d is not None
        loss_d, real_feats = _gan_terms(run, plan, a, b, fake, gan_loss, autocast)
        if not torch.isfinite(loss_d):
            raise TrainingDiverged(f"the discriminator loss became {loss_d.item()} at step {run.step + 1}")
        if not _optimise(run, run.opt_d, loss_d, run.disc.parameters(), grad_clip):
            _bf16_fallback(run)
            return {"G_GAN": 0.0, "G_L2" if l2 else "G_L1": 0.0, "D": loss_d.item()}
        run.disc.requires_grad_(False)
    with autocast:
        loss_g_gan = _g_adversarial(run, plan, a, fake, gan_loss, real_feats) if adversarial else fake.new_zeros(())
        if mask is not None:  # only where the network did not see the pixel
            err = (fake.float() - b) ** 2 if l2 else (fake.float() - b).abs()
            loss_g_l1 = (err * mask).sum() / (mask.sum() * b.shape[1]).clamp(min=1)
        else:
            pixel = nn.functional.mse_loss if l2 else nn.functional.l1_loss
            loss_g_l1 = pixel(fake.float(), b)
        loss_g = gan_w * loss_g_gan + (plan.losses.lambda_l1 or 0.0) * loss_g_l1
    if adversarial:
        assert run.disc is not None
        run.disc.requires_grad_(True)
    if not torch.isfinite(loss_g):
        raise TrainingDiverged(f"the generator loss became {loss_g.item()} at step {run.step + 1}")
    if not _optimise(run, run.opt_g, loss_g, run.model.generator.parameters(), grad_clip):
        _bf16_fallback(run)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.model.generator, run.step)
    return {"G_GAN": loss_g_gan.item(), "G_L2" if l2 else "G_L1": loss_g_l1.item(),
            "D": loss_d.item() if loss_d is not None else 0.0}


def set_lr(run: Run, lr: float) -> None:
    """The learning rate of both optimisers."""
    for opt in (run.opt_g, run.opt_d):
        if opt is not None:
            for g in opt.param_groups:
                g["lr"] = lr
