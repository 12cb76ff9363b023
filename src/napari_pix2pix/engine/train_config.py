"""The settings of a training run (:class:`TrainConfig`) and the rule for what a resumed run may change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..nn import preset_config
from ..nn.losses import GAN_MODES
from ..nn.unet import PRESETS, UNetConfig
from .device import PRECISIONS
from .tasks import TASKS, get_task

# What a resumed run may change: how long it trains, where, and how often it reports and saves.
# Everything else (task, architecture, data split, losses, optimiser, schedule) is the checkpoint's.
RESUMABLE = ("steps", "device", "precision", "val_every", "checkpoint_every")
# keyword arguments of train()/train_iter() that name the data rather than settings
SOURCE_KEYS = ("input", "target", "clean", "input_dir", "target_dir", "clean_dir", "aligned_dir", "channel_axis")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; stored in the model file.

    Defaults follow the paper: vanilla GAN loss + 100·L1, Adam 2e-4, betas (0.5, 0.999), one D
    step then one G step, constant learning rate for the first half then linear decay to 0.
    """

    task: str = "denoise"
    preset: str = "unet_tiny"  # "unet_256" is the paper's; the small presets suit CPUs
    generator: dict[str, Any] = field(default_factory=dict)  # UNetConfig overrides (ngf, levels, ...)
    channels: int | None = None  # image channels; None = from the data
    out_channels: int | None = None  # translate: target channels; None = from the data
    ndf: int = 64
    n_layers: int = 3  # 3 = the paper's 70x70 PatchGAN
    gan_mode: str = "vanilla"
    lambda_l1: float = 100.0
    gan_weight: float = 1.0  # weight of the adversarial term; 0 trains the generator on L1 alone (no D)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    steps: int = 2000
    decay_steps: int | None = None  # linear decay over the last N steps; None = steps // 2
    batch_size: int = 1
    patch_size: int = 256
    augment: bool = True
    val_fraction: float = 0.1
    val_split: str = "image"  # "image" or "region"
    val_every: int = 100
    val_patches: int = 4
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # "auto": bf16 autocast where it is native (AMX/AVX512-BF16, CUDA)
    grad_clip: float | None = None
    channels_last: bool = False  # slower for training on an AVX2 CPU (0.75x unet_256, benchmarks/results)
    percentiles: tuple[float, float] = (0.5, 99.9)
    noise: dict[str, Any] | None = None  # NoiseConfig fields for denoise synthesis

    def __post_init__(self) -> None:
        checks = [
            (self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}"),
            (self.preset in PRESETS, f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}"),
            (self.gan_mode in GAN_MODES, f"gan_mode must be one of {GAN_MODES}, got {self.gan_mode!r}"),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.lambda_l1 >= 0, f"lambda_l1 must be non-negative, got {self.lambda_l1}"),
            (self.gan_weight >= 0, f"gan_weight must be non-negative, got {self.gan_weight}"),
            (self.gan_weight > 0 or self.lambda_l1 > 0, "gan_weight and lambda_l1 are both 0: nothing to train"),
            (self.val_every >= 1 and self.checkpoint_every >= 1, "val_every and checkpoint_every must be >= 1"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        # builds the generator config for this task's channels: invalid overrides fail here, not at step 0
        multiple = max(self.generator_config(*get_task(self.task).network_channels(1, 1)).size_multiple)
        if self.patch_size < 32 or self.patch_size % multiple:
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of {multiple} (the size multiple of "
                f"{self.preset} with these settings) and at least 32; try {max(multiple, 32 // multiple * multiple)}"
            )

    @property
    def decay(self) -> int:
        """Steps of linear learning-rate decay at the end."""
        return self.steps // 2 if self.decay_steps is None else min(self.decay_steps, self.steps)

    def generator_config(self, cin: int, cout: int) -> UNetConfig:
        """The generator's UNetConfig for these channels."""
        return preset_config(self.preset, in_channels=cin, out_channels=cout, **self.generator)

    def lr_at(self, step: int) -> float:
        """Learning rate for (0-based) `step`: constant, then linear decay to 0."""
        start = self.steps - self.decay
        if step < start:
            return self.lr
        return self.lr * max(0.0, 1.0 - (step - start + 1) / (self.decay + 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "percentiles" in d:
            d["percentiles"] = tuple(d["percentiles"])
        return cls(**d)


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into (data source, TrainConfig fields); unknown names are refused."""
    names = {f.name for f in fields(TrainConfig)}
    src = {k: kwargs[k] for k in kwargs if k in SOURCE_KEYS}
    rest = {k: v for k, v in kwargs.items() if k not in SOURCE_KEYS}
    unknown = [k for k in rest if k not in names]
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; see napari_pix2pix.engine.training.TrainConfig")
    return src, rest


def resume_config(saved: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """The settings of a resumed run: the checkpoint's, with only the :data:`RESUMABLE` fields changed.

    A resumed run continues the same run: it may train longer (``steps``), elsewhere
    (``device``, ``precision``) and report or save at another pace (``val_every``,
    ``checkpoint_every``). Any other setting given with a value that differs from the
    checkpoint's is an error (the same value is accepted, so that a command can be rerun
    with ``--resume`` added); the Python API, the command line and the Train widget all
    use this rule.

    Raises
    ------
    ValueError
        Naming every setting that differs from the checkpoint's.
    """
    current = saved.to_dict()
    given = TrainConfig.from_dict({**current, **changes}).to_dict()  # normalized (tuples, lists)
    differ = [k for k in changes if k not in RESUMABLE and given[k] != current[k]]
    if differ:
        detail = ", ".join(f"{k} (checkpoint {current[k]!r}, given {given[k]!r})" for k in differ)
        raise ValueError(
            f"a resumed run keeps the checkpoint's settings, but these differ: {detail}. On resume only "
            f"{', '.join(RESUMABLE)} may change; start a new run (or warm-start one) to change the rest"
        )
    return replace(saved, **{k: v for k, v in changes.items() if k in RESUMABLE})
