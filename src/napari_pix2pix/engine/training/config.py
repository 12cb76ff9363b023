"""The settings of a training run: :class:`TrainConfig`, the recipes, "auto" values, and the resume rule.

A config as given may leave fields at None: "from the recipe" (the loss and discriminator
options, see :data:`RECIPES`) or "auto" (batch size, patch size, learning rate, steps,
validation interval), decided once the data and the network are known by
:meth:`TrainConfig.resolve`. The resolved config is what a run uses and what its model file
and checkpoints store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from ...nn import preset_config
from ...nn.losses import GAN_MODES
from ...nn.unet import PRESETS, PRESETS_3D, UNetConfig
from ..core.device import PRECISIONS
from ..core.tasks import TASKS, get_task

# What a resumed run may change: how long it trains, where, and how often it reports and saves.
# Everything else (task, architecture, data split, losses, optimiser, schedule) is the checkpoint's.
RESUMABLE = ("steps", "minutes", "device", "precision", "val_every", "checkpoint_every")
# keyword arguments of train()/train_iter() that name the data rather than settings
SOURCE_KEYS = ("input", "target", "clean", "input_dir", "target_dir", "clean_dir", "aligned_dir", "channel_axis")
DEFAULT_PRESET = "unet_tiny"
DEFAULT_PRESET_3D = "unet3d_tiny"
DEFAULT_STEPS = 2000  # without `minutes`
WARM_RAMP = 20  # steps of learning-rate ramp for a warm start: Adam's first steps are as large as the rate


@dataclass(frozen=True)
class Recipe:
    """A named way to train: the losses, the discriminator and the optimiser defaults.

    Every field is a :class:`TrainConfig` field that the recipe fills when the config
    leaves it at None; options given explicitly win.
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
}
RECIPE_FIELDS = ("gan_weight", "lambda_l1", "pixel_loss", "beta1", "gan_mode", "ndf", "n_layers", "gan_warmup",
                 "gan_ramp", "ema", "d_scales", "spectral_norm", "feature_matching", "r1")
DEFAULT_RECIPES = {"denoise": "fidelity", "inpaint": "fidelity", "colorize": "paper", "translate": "fidelity"}
# start_from="auto": the bundled model a task's runs start from when no network is chosen and the channels fit
AUTO_START = {"denoise": "denoise", "translate": "denoise"}
# ... and a 3D run's: the bundled 3D denoiser (the 2D one inflated to 3D and trained on volumes; a 2D model given
# as start_from is inflated the same way: it starts as itself, plane by plane; see warmstart.inflate)
AUTO_START_3D = {"denoise": "denoise3d", "translate": "denoise3d"}
PIXEL_LOSSES = ("l1", "l2")


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


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored (resolved) in the model file.

    None means "from the recipe" for the recipe's fields and "auto" for batch size, patch
    size, learning rate, steps and validation interval: see :meth:`resolve`.
    """

    task: str = "denoise"
    recipe: str | None = None  # "fidelity", "paper", "realism", "noise2noise"; None: the task's default
    preset: str | None = None  # "unet_256" is the paper's; None: unet_tiny (or the warm start's network)
    generator: dict[str, Any] = field(default_factory=dict)  # UNetConfig overrides (ngf, levels, ...)
    start_from: str | None = None  # a bundled model's name or a model file to start from (warm start); "scratch";
    # None / "auto": the task's bundled starting model (AUTO_START) where the data's channels fit it, else scratch
    spatial_dims: int | None = None  # 2: images; 3: volumes (Z, Y, X); None: 3 with a 3D preset, else 2
    z_context: int = 0  # 2.5D: a 2D network sees each plane with its k neighbours on either side along Z
    channels: int | None = None  # image channels; None = from the data
    out_channels: int | None = None  # translate: target channels; None = from the data
    ndf: int | None = None  # discriminator width (recipe: 64)
    n_layers: int | None = None  # 3 = the paper's 70x70 PatchGAN
    gan_mode: str | None = None  # "vanilla" (the paper's) or "lsgan"
    lambda_l1: float | None = None  # weight of the pixel loss (L1, or L2 for noise2noise)
    pixel_loss: str | None = None  # "l1" or "l2"
    gan_weight: float | None = None  # weight of the adversarial term; 0 trains on the pixel loss alone (no D)
    gan_warmup: float | None = None  # share of steps before the adversarial term starts
    gan_ramp: float | None = None  # share of steps over which it then ramps up
    ema: float | None = None  # EMA decay of the generator's weights for validation and the saved model (0: off)
    d_scales: int | None = None  # multi-scale discriminator: 1 (the paper's) to 4 (pix2pixHD: 3)
    spectral_norm: bool | None = None  # spectral normalisation in the discriminator
    feature_matching: float | None = None  # weight of the feature-matching loss (pix2pixHD: 10; 0: off)
    r1: float | None = None  # weight of the R1 penalty on real pairs (0: off)
    lr: float | None = None  # None: the recipe's (lower for a warm start)
    beta1: float | None = None
    beta2: float = 0.999
    steps: int | None = None  # None: 2000, or as many as `minutes` allows
    minutes: float | None = None  # time budget of the whole call (data, validation, saving included)
    decay_steps: int | None = None  # linear decay over the last N steps; None = steps // 2
    freeze_norm: bool | None = None  # keep the generator's BatchNorm statistics fixed; None: for a warm start
    lr_warmup: int = 0  # steps of a linear learning-rate ramp at the start (a warm start gets WARM_RAMP)
    batch_size: int | None = None  # None: about 64 k pixels per step
    patch_size: int | tuple[int, ...] | None = None  # None: 64 px (128 from 512 px); volumes: 16 x 64 x 64
    augment: bool = True  # random flips and 90-degree rotations
    intensity_augment: float | None = None  # random gains up to exp(±x) of the network values (None: default)
    val_fraction: float = 0.1
    val_split: str = "image"  # "image" or "region"
    val_every: int | None = None  # None: 100 steps, or about 10 validations in a `minutes` run
    val_patches: int = 4
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "auto": bf16 autocast where it is native (AMX/AVX512-BF16, CUDA)
    grad_clip: float | None = None
    channels_last: bool = False  # slower for training on an AVX2 CPU (0.75x unet_256, benchmarks/results)
    percentiles: tuple[float, float] = (0.5, 99.9)
    normalization: str | None = None  # "dataset" (the training data's percentiles for every image; default for
    # real pairs) or "plane" (each plane's own; default for pairs synthesized from clean images)
    noise: dict[str, Any] | None = None  # NoiseConfig fields for denoise synthesis

    def __post_init__(self) -> None:
        def positive_or_none(name: str) -> tuple[bool, str]:
            v = getattr(self, name)
            return v is None or v > 0, f"{name} must be positive (or None: auto), got {v}"

        checks = [
            (self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}"),
            (self.recipe is None or self.recipe in RECIPES,
             f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}"),
            (self.recipe != "noise2noise" or self.task == "denoise",
             f"the noise2noise recipe trains denoisers (task='denoise'), not {self.task!r}"),
            (self.preset is None or self.preset in PRESETS,
             f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}"),
            (self.start_from in (None, "auto", "scratch") or (self.preset is None and not self.generator),
             "a warm start (start_from) uses the starting model's network: do not give preset or generator"),
            (self.gan_mode is None or self.gan_mode in GAN_MODES,
             f"gan_mode must be one of {GAN_MODES}, got {self.gan_mode!r}"),
            (self.pixel_loss is None or self.pixel_loss in PIXEL_LOSSES,
             f"pixel_loss must be one of {PIXEL_LOSSES}, got {self.pixel_loss!r}"),
            (self.steps is None or self.minutes is None,
             "give either steps or minutes (steps are then derived from the time budget), not both"),
            positive_or_none("steps"), positive_or_none("minutes"), positive_or_none("batch_size"),
            positive_or_none("lr"), positive_or_none("val_every"),
            (self.lambda_l1 is None or self.lambda_l1 >= 0, f"lambda_l1 must be non-negative, got {self.lambda_l1}"),
            (self.gan_weight is None or self.gan_weight >= 0,
             f"gan_weight must be non-negative, got {self.gan_weight}"),
            (not (self.gan_weight == 0 and self.lambda_l1 == 0),
             "gan_weight and lambda_l1 are both 0: nothing to train"),
            (self.ema is None or 0 <= self.ema < 1, f"ema must be a decay in [0, 1), got {self.ema}"),
            (self.d_scales is None or 1 <= self.d_scales <= 4, f"d_scales must be 1 to 4, got {self.d_scales}"),
            (self.feature_matching is None or self.feature_matching >= 0, "feature_matching must be >= 0"),
            (self.r1 is None or self.r1 >= 0, "r1 must be >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.spatial_dims in (None, 2, 3), f"spatial_dims must be 2 or 3, got {self.spatial_dims}"),
            (not (self.spatial_dims == 3 and self.preset is not None and self.preset not in PRESETS_3D),
             f"{self.preset} is a 2D network: for spatial_dims=3 choose one of {PRESETS_3D} (or no preset)"),
            (not (self.spatial_dims == 2 and self.preset in PRESETS_3D),
             f"{self.preset} is a 3D network: give spatial_dims=3 (or no spatial_dims) for it"),
            (self.z_context >= 0, f"z_context must be >= 0, got {self.z_context}"),
            (not (self.z_context and self.dims == 3), "z_context (2.5D) is for 2D networks: a 3D network sees Z"),
            (not (self.dims == 3 and self.task == "colorize"), "colorize is 2D: it trains on planes, not volumes"),
            (self.normalization in (None, "dataset", "plane"),
             f"normalization must be 'dataset' or 'plane', got {self.normalization!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.patch_size is not None and not self.warm:  # checked now; a warm start's in resolve()
            self.check_patch(self.generator_config(*get_task(self.task).network_channels(1, 1)))

    def check_patch(self, arch: UNetConfig) -> None:
        """Raise ValueError unless the patch size fits the network (a multiple of its size multiple, >= 32)."""
        if isinstance(self.patch_size, (tuple, list)):
            ms = arch.size_multiple
            if len(ms) == 2 and len(self.patch_size) == 2 and self.patch_size[0] != self.patch_size[1]:
                raise ValueError(f"patch_size {tuple(self.patch_size)}: 2D patches are square; give one size "
                                 f"(e.g. {min(self.patch_size)})")
            bad = any(p % m or p < m for p, m in zip(self.patch_size, ms, strict=False))
            if len(self.patch_size) != len(ms) or bad:
                raise ValueError(f"patch_size {tuple(self.patch_size)} must give one multiple of {ms} per axis "
                                 f"(the size multiple of this {len(ms)}D network)")
            return
        if self.patch_size is not None and arch.spatial_dims == 3:
            if any(self.patch_size % m for m in arch.size_multiple):
                raise ValueError(f"patch_size {self.patch_size} must be a multiple of {arch.size_multiple} per "
                                 f"axis; give (z, y, x), e.g. {arch.size_multiple[0] * 2, 64, 64}")
            return
        multiple = max(arch.size_multiple)
        if self.patch_size is not None and (self.patch_size < 32 or self.patch_size % multiple):
            net = f"the model {self.start_from}" if self.warm and self.start_from not in (None, "auto") else (
                f"{self.preset or DEFAULT_PRESET} with these settings")
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of {multiple} (the size multiple of {net}) "
                f"and at least 32; try {max(multiple, 32 // multiple * multiple)}"
            )

    @property
    def dims(self) -> int:
        """The run's spatial dimensions: 3 for a 3D network, else 2."""
        if self.spatial_dims is not None:
            return self.spatial_dims
        return 3 if self.preset in PRESETS_3D else 2

    @property
    def warm(self) -> bool:
        """Whether the run may start from a trained model (named, or "auto" with no network chosen)."""
        if self.start_from == "scratch":
            return False
        auto = self.preset is None and not self.generator  # AUTO_START (2D, 2.5D), AUTO_START_3D
        return self.start_from not in (None, "auto") or auto

    # ------------------------------------------------------------------ resolving None
    @property
    def recipe_spec(self) -> Recipe:
        """The recipe (the task's default when none is named)."""
        return RECIPES[self.recipe or DEFAULT_RECIPES[self.task]]

    def resolve(self, *, min_size: tuple[int, ...], arch: UNetConfig, warm: bool = False) -> TrainConfig:
        """The config with every None decided: the recipe's fields and the "auto" values.

        Parameters
        ----------
        min_size : tuple of int
            The smallest size of the training images along each spatial axis (after the
            validation split).
        arch : UNetConfig
            The generator that will be trained (its size multiple bounds the patch).
        warm : bool
            The run starts from a trained model (a lower "auto" learning rate).
        """
        spec = self.recipe_spec
        filled: dict[str, Any] = {f: getattr(spec, f) for f in RECIPE_FIELDS if getattr(self, f) is None}
        filled["recipe"] = spec.name
        if not warm and self.preset is None:
            filled["preset"] = DEFAULT_PRESET if self.dims == 2 else DEFAULT_PRESET_3D
        filled["spatial_dims"] = arch.spatial_dims
        if self.patch_size is not None:
            patch: int | tuple[int, ...] = self.patch_size
        elif arch.spatial_dims == 3:
            patch = auto_patch_3d(min_size, arch.size_multiple)
        else:
            patch = auto_patch_size(min(min_size), max(arch.size_multiple))
        filled["patch_size"] = patch
        if self.batch_size is None:
            filled["batch_size"] = auto_batch_size(patch)
        if self.lr is None:
            filled["lr"] = spec.lr_warm if warm else spec.lr
        if warm and not self.lr_warmup:
            filled["lr_warmup"] = WARM_RAMP
        if self.freeze_norm is None:  # fine-tuning with small batches: the trained statistics stay
            filled["freeze_norm"] = warm
        if self.steps is None and self.minutes is None:
            filled["steps"] = DEFAULT_STEPS
        if self.val_every is None and self.minutes is None:
            filled["val_every"] = 100
        out = replace(self, **filled)
        out.check_patch(arch)
        return out

    @property
    def resolved(self) -> bool:
        """Whether nothing is left to decide (steps may still wait for a time budget's speed measurement)."""
        return all(getattr(self, f) is not None for f in (*RECIPE_FIELDS, "recipe", "lr", "batch_size",
                                                          "patch_size", "steps", "val_every"))

    # ------------------------------------------------------------------ schedule
    @property
    def total_steps(self) -> int:
        """The number of steps (an error while a time budget has not fixed it yet)."""
        if self.steps is None:
            raise ValueError("the number of steps is not known yet (a time budget decides it after a warm-up)")
        return self.steps

    @property
    def decay(self) -> int:
        """Steps of linear learning-rate decay at the end."""
        return self.total_steps // 2 if self.decay_steps is None else min(self.decay_steps, self.total_steps)

    def generator_config(self, cin: int, cout: int) -> UNetConfig:
        """The generator's UNetConfig for these (task's) channels: the preset, or unet_tiny / unet3d_tiny.

        With a z context of k, each input channel of the image comes 2k + 1 times (the plane and
        its neighbours); an inpainting mask once.
        """
        preset = self.preset or (DEFAULT_PRESET if self.dims == 2 else DEFAULT_PRESET_3D)
        image = get_task(self.task).image_channels(cin)
        return preset_config(preset, in_channels=cin + 2 * self.z_context * image, out_channels=cout,
                             **self.generator)

    def lr_at(self, step: int) -> float:
        """Learning rate for (0-based) `step`: a ramp over the first `lr_warmup` steps, constant, then a decay.

        The decay is linear to 0 over the last `decay` steps; while a time budget has not
        fixed the steps yet, the rate stays constant after the ramp.
        """
        assert self.lr is not None
        ramp = min(1.0, (step + 1) / self.lr_warmup) if self.lr_warmup else 1.0
        if self.steps is None:
            return self.lr * ramp
        start = self.total_steps - self.decay
        if step < start:
            return self.lr * ramp
        return self.lr * ramp * max(0.0, 1.0 - (step - start + 1) / (self.decay + 1))

    def gan_weight_at(self, step: int) -> float:
        """The adversarial weight at `step`: 0 during the warm-up, then a linear ramp up to gan_weight."""
        w = self.gan_weight or 0.0
        if w == 0 or not (self.gan_warmup or self.gan_ramp):
            return w
        start = (self.gan_warmup or 0.0) * self.total_steps
        ramp = max((self.gan_ramp or 0.0) * self.total_steps, 1e-9)
        return w * min(1.0, max(0.0, (step - start) / ramp)) if step >= start else 0.0

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored; files of 0.1.0 get the recipe they trained with)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "percentiles" in d:
            d["percentiles"] = tuple(d["percentiles"])
        if isinstance(d.get("patch_size"), list):
            d["patch_size"] = tuple(d["patch_size"])
        if "recipe" not in d and "gan_weight" in d:  # 0.1.0: no recipes yet; its fields are all explicit
            d["recipe"] = "paper" if float(d["gan_weight"] or 0) > 0 else "fidelity"
            d.setdefault("pixel_loss", "l1")
            d.setdefault("gan_warmup", 0.0)
            d.setdefault("gan_ramp", 0.0)
            d.setdefault("ema", 0.0)
            d.setdefault("d_scales", 1)
            d.setdefault("spectral_norm", False)
            d.setdefault("feature_matching", 0.0)
            d.setdefault("r1", 0.0)
        return cls(**d)


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into (data source, TrainConfig fields); unknown names are refused."""
    names = {f.name for f in fields(TrainConfig)}
    src = {k: kwargs[k] for k in kwargs if k in SOURCE_KEYS}
    rest = {k: v for k, v in kwargs.items() if k not in SOURCE_KEYS}
    unknown = [k for k in rest if k not in names]
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; see napari_pix2pix.engine.training.loop.TrainConfig")
    return src, rest


def resume_config(saved: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """The settings of a resumed run: the checkpoint's, with only the :data:`RESUMABLE` fields changed.

    A resumed run continues the same run: it may train longer (``steps``, or ``minutes`` more),
    elsewhere (``device``, ``precision``) and report or save at another pace (``val_every``,
    ``checkpoint_every``). Any other setting given with a value that differs from the
    checkpoint's is an error (the same value is accepted, so that a command can be rerun
    with ``--resume`` added); the Python API, the command line and the Train widget all
    use this rule.

    Raises
    ------
    ValueError
        Naming every setting that differs from the checkpoint's.
    """
    changes = {k: v for k, v in changes.items() if v is not None}  # None: not given (or "auto": as resolved)
    current = saved.to_dict()
    differ = []
    for k, v in changes.items():
        if k in RESUMABLE:
            continue
        given = TrainConfig.from_dict({**current, k: v}).to_dict()[k]  # normalized (tuples, lists)
        if given != current[k]:
            differ.append(f"{k} (checkpoint {current[k]!r}, given {given!r})")
    if differ:
        raise ValueError(
            f"a resumed run keeps the checkpoint's settings, but these differ: {', '.join(differ)}. On resume only "
            f"{', '.join(RESUMABLE)} may change; start a new run (or warm-start one) to change the rest"
        )
    resumable = {k: v for k, v in changes.items() if k in RESUMABLE}
    if "minutes" in resumable:  # more time: the steps follow from it
        resumable["steps"] = None
    elif "steps" in resumable:
        resumable["minutes"] = None
    return replace(saved, **resumable)


def steps_for_budget(remaining_s: float, step_s: float, val_every: int, val_s: float, ckpt_every: int,
                     ckpt_s: float) -> int:
    """Steps that fit `remaining_s` seconds at `step_s` per step, with validations and checkpoints on the way."""
    per_step = step_s + val_s / max(val_every, 1) + ckpt_s / max(ckpt_every, 1)
    return max(1, math.floor(remaining_s / max(per_step, 1e-9)))
