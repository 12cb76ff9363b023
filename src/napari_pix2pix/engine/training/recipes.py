"""Recipes (named ways to train) and the "auto" rules: patch, batch, steps, the starting models.

A recipe fills the loss, discriminator and optimiser options a config leaves at None;
options given explicitly win. The "auto" rules decide patch and batch sizes from the data
and the network (:func:`~.plan.make_plan` applies them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_PRESET = "unet_tiny"
DEFAULT_PRESET_3D = "unet3d_tiny"
DEFAULT_STEPS = 2000  # without `minutes`
WARM_RAMP = 20  # steps of learning-rate ramp for a warm start: Adam's first steps are as large as the rate
PIXEL_LOSSES = ("l1", "l2")


@dataclass(frozen=True)
class Recipe:
    """A named way to train: the losses, the discriminator and the optimiser defaults.

    Every field is a :class:`~.config.TrainConfig` option that the recipe fills when the
    config leaves it at None; options given explicitly win.
    """

    name: str
    description: str
    gan_weight: float  # 0: no discriminator at all
    lambda_l1: float  # weight of the pixel loss
    pixel_loss: str  # "l1" or "l2"
    beta1: float
    lr: float  # the "auto" learning rate from scratch (a warm start uses lr_warm)
    lr_warm: float
    gan_mode: str = "vanilla"
    ndf: int = 64
    n_layers: int = 3
    gan_warmup: float = 0.0  # share of the steps trained on the pixel loss alone before the GAN term starts
    gan_ramp: float = 0.0  # share of the steps over which the GAN term then ramps up to gan_weight
    ema: float = 0.0  # decay of an exponential moving average of the generator's weights (0: off)
    d_scales: int = 1  # discriminators at 1, 1/2, ... resolution (pix2pixHD: 3)
    spectral_norm: bool = False  # spectral normalisation of the discriminator's convolutions
    feature_matching: float = 0.0  # weight of pix2pixHD's feature-matching loss (its default: 10)
    r1: float = 0.0  # weight of an R1 gradient penalty on real pairs (Mescheder et al. 2018)
    self_supervised: str = "none"  # noisy images alone: "blind-spot" (each masked pixel predicted from its neighbours)


RECIPES: dict[str, Recipe] = {
    "fidelity": Recipe(
        "fidelity", "L1 only, no discriminator: the most faithful output (best PSNR/SSIM); CARE-like",
        gan_weight=0.0, lambda_l1=100.0, pixel_loss="l1", beta1=0.9, lr=1e-3, lr_warm=3e-4),
    "paper": Recipe(
        "paper", "the paper's loop: vanilla GAN + 100·L1, Adam 2e-4, β1 0.5, one D step per G step",
        gan_weight=1.0, lambda_l1=100.0, pixel_loss="l1", beta1=0.5, lr=2e-4, lr_warm=1e-4),
    "realism": Recipe(
        "realism", "fidelity first, then the adversarial term ramped in: sharper, more realistic texture",
        gan_weight=1.0, lambda_l1=100.0, pixel_loss="l1", beta1=0.5, lr=5e-4, lr_warm=2e-4,
        gan_warmup=0.3, gan_ramp=0.2),
    "noise2noise": Recipe(
        "noise2noise", "denoise from pairs of two noisy acquisitions of the same field (no clean image): L2, "
        "no discriminator",
        gan_weight=0.0, lambda_l1=100.0, pixel_loss="l2", beta1=0.9, lr=1e-3, lr_warm=3e-4),
    "noise2self": Recipe(
        "noise2self", "denoise from the noisy images alone (no target, no second acquisition): blind-spot "
        "training, validated by Stein's unbiased risk under the noise model estimated from the images",
        gan_weight=0.0, lambda_l1=100.0, pixel_loss="l2", beta1=0.9, lr=4e-4, lr_warm=5e-5,
        self_supervised="blind-spot"),
}
SELF_SUPERVISED = ("none", "blind-spot")
# the options a recipe fills (RecipeOptions' loss fields, and the optimiser's beta1)
RECIPE_FIELDS = ("gan_weight", "lambda_l1", "pixel_loss", "beta1", "gan_mode", "ndf", "n_layers", "gan_warmup",
                 "gan_ramp", "ema", "d_scales", "spectral_norm", "feature_matching", "r1", "self_supervised")
DEFAULT_RECIPES = {"denoise": "fidelity", "inpaint": "fidelity", "colorize": "paper", "translate": "fidelity"}
# start_from="auto": the bundled model a task's runs start from when no network is chosen and the channels fit
AUTO_START = {"denoise": "denoise", "translate": "denoise"}
# ... and a 3D run's: the bundled 3D denoiser (the 2D one inflated to 3D and trained on volumes; a 2D model given
# as start_from is inflated the same way: it starts as itself, plane by plane; see warmstart.inflate)
AUTO_START_3D = {"denoise": "denoise3d", "translate": "denoise3d"}


def auto_patch_size(min_side: int, multiple: int) -> int:
    """The "auto" patch: 64 px for small images, 128 px from 512 px on (a multiple of `multiple`).

    Small patches give many independent samples per step from one image; larger ones give
    the network more context once the images are large enough to offer it.
    """
    target = 128 if min_side >= 512 else 64
    patch = max(multiple, target // multiple * multiple)
    while patch > min_side and patch > multiple:
        patch -= multiple
    return patch


def auto_patch_3d(min_size: tuple[int, ...], multiple: tuple[int, ...]) -> tuple[int, int, int]:
    """The "auto" 3D patch: 16 planes (or as many as the volumes have, on Z's multiple) of 64² px."""
    def fit(target: int, n: int, m: int) -> int:
        p = max(m, target // m * m)
        while p > n and p > m:
            p -= m
        return p

    return (fit(16, min_size[0], multiple[0]), fit(64, min_size[1], multiple[1]), fit(64, min_size[2], multiple[2]))


def auto_batch_size(patch: int | tuple[int, ...]) -> int:
    """The "auto" batch: about 64 k pixels per step (16 patches of 64², 4 of 128²; one 16 x 64² volume)."""
    pixels = int(np.prod(patch)) if isinstance(patch, (tuple, list)) else patch**2
    return max(1, min(64, round(65536 / pixels)))
