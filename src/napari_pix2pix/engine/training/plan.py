"""What a run decides: the recipe's losses, the automatic sizes and schedule, and the steps a time budget allows.

A :class:`~.config.TrainConfig` is what was asked; :func:`make_plan` decides what it left
open once the data and the network are known (the recipe's options, patch and batch sizes,
learning rate and ramp, steps, validation interval) and what the run found (the starting
model's percentiles and dimensions). A time budget fixes the steps later
(:meth:`RunPlan.with_steps`). The plan is stored in the model file and checkpoints beside the
config (``training["plan"]``); ``{**config.to_dict(), **plan.to_dict()}`` are the run's
effective options.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from ...nn.unet import UNetConfig
from .config import RecipeOptions, TrainConfig
from .recipes import (
    DEFAULT_PRESET,
    DEFAULT_PRESET_3D,
    DEFAULT_STEPS,
    RECIPE_FIELDS,
    WARM_RAMP,
    auto_batch_size,
    auto_patch_3d,
    auto_patch_size,
)


@dataclass(frozen=True)
class RunPlan:
    """The run's decided options (every None of its config filled), by option name."""

    losses: RecipeOptions  # the recipe and every loss option, filled from the recipe where not given
    beta1: float
    preset: str | None  # None: the starting model's network (a warm start)
    start_from: str | None  # where the run starts ("scratch", a bundled name, a file, a model's name)
    spatial_dims: int
    z_context: int
    percentiles: tuple[float, float]
    patch_size: int | tuple[int, ...]
    batch_size: int
    lr: float
    lr_warmup: int
    freeze_norm: bool
    steps: int | None  # None while a time budget measures the speed
    decay_steps: int | None
    val_every: int | None  # None while a time budget measures the speed
    noise_model: dict[str, Any] | None = None  # noisy images alone: the noise estimated from them (images.noise)

    @property
    def recipe(self) -> str:
        """The recipe's name."""
        return str(self.losses.recipe)

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

    def with_steps(self, steps: int, *, val_every: int | None = None, decay_steps: int | None = None) -> RunPlan:
        """The plan with its steps fixed (by a time budget), and optionally its validation interval and decay."""
        return replace(self, steps=int(steps), val_every=self.val_every if val_every is None else val_every,
                       decay_steps=self.decay_steps if decay_steps is None else decay_steps)

    def lr_at(self, step: int) -> float:
        """Learning rate for (0-based) `step`: a ramp over the first `lr_warmup` steps, constant, then a decay.

        The decay is linear to 0 over the last `decay` steps; while a time budget has not
        fixed the steps yet, the rate stays constant after the ramp.
        """
        ramp = min(1.0, (step + 1) / self.lr_warmup) if self.lr_warmup else 1.0
        if self.steps is None:
            return self.lr * ramp
        start = self.total_steps - self.decay
        if step < start:
            return self.lr * ramp
        return self.lr * ramp * max(0.0, 1.0 - (step - start + 1) / (self.decay + 1))

    def gan_weight_at(self, step: int) -> float:
        """The adversarial weight at `step`: 0 during the warm-up, then a linear ramp up to gan_weight.

        While a time budget has not fixed the steps, 0 if there is a warm-up, else the full weight.
        """
        r = self.losses
        w = r.gan_weight or 0.0
        if w == 0 or not (r.gan_warmup or r.gan_ramp):
            return w
        if self.steps is None:
            return 0.0 if r.gan_warmup else w
        start = (r.gan_warmup or 0.0) * self.total_steps
        ramp = max((r.gan_ramp or 0.0) * self.total_steps, 1e-9)
        return w * min(1.0, max(0.0, (step - start) / ramp)) if step >= start else 0.0

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, by option name (``{**config.to_dict(), **plan.to_dict()}``: the effective options)."""
        d = {k: v for k, v in asdict(self).items() if k != "losses"}
        d.update(asdict(self.losses))
        for k in ("percentiles", "patch_size"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPlan:
        """Inverse of :meth:`to_dict`."""
        losses = RecipeOptions(**{k: d.get(k) for k in ("recipe", *RECIPE_FIELDS) if k != "beta1"})
        own = {k: d[k] for k in ("beta1", "preset", "start_from", "spatial_dims", "z_context", "batch_size", "lr",
                                 "lr_warmup", "freeze_norm", "steps", "decay_steps", "val_every")}
        own["noise_model"] = d.get("noise_model")
        return cls(losses=losses, percentiles=tuple(d["percentiles"]),  # type: ignore[arg-type]
                   patch_size=tuple(d["patch_size"]) if isinstance(d["patch_size"], list) else d["patch_size"],
                   **own)


def make_plan(cfg: TrainConfig, *, min_size: tuple[int, ...], arch: UNetConfig, warm: bool = False,
              noise_model: dict[str, Any] | None = None) -> RunPlan:
    """Decide every option `cfg` leaves open, for data whose smallest image is `min_size` and network `arch`.

    Parameters
    ----------
    cfg : TrainConfig
        The run's settings (as given, with what the run found: the starting model's percentiles
        and dimensions).
    min_size : tuple of int
        The smallest size of the training images along each spatial axis (after the
        validation split).
    arch : UNetConfig
        The generator that will be trained (its size multiple bounds the patch).
    warm : bool
        The run starts from a trained model (a lower "auto" learning rate, a ramp, frozen norms).

    Raises
    ------
    ValueError
        If the patch size does not fit the network.
    """
    spec = cfg.recipe_spec
    given = cfg.recipe_options
    losses = replace(given, recipe=spec.name, **{f: getattr(spec, f) for f in RECIPE_FIELDS
                                                 if f != "beta1" and getattr(given, f) is None})
    s = cfg.schedule
    if cfg.data.patch_size is not None:
        patch: int | tuple[int, ...] = cfg.data.patch_size
    elif arch.spatial_dims == 3:
        patch = auto_patch_3d(min_size, arch.size_multiple)
    else:
        patch = auto_patch_size(min(min_size), max(arch.size_multiple))
    cfg.check_patch(arch, patch)
    preset = cfg.network.preset
    if not warm and preset is None:
        preset = DEFAULT_PRESET if cfg.dims == 2 else DEFAULT_PRESET_3D
    return RunPlan(
        losses=losses,
        beta1=s.beta1 if s.beta1 is not None else spec.beta1,
        preset=preset,
        start_from=cfg.network.start_from,
        spatial_dims=arch.spatial_dims,
        z_context=cfg.network.z_context,
        percentiles=tuple(cfg.data.percentiles),  # type: ignore[arg-type]
        patch_size=patch,
        batch_size=cfg.data.batch_size or auto_batch_size(patch),
        lr=s.lr if s.lr is not None else (spec.lr_warm if warm else spec.lr),
        lr_warmup=s.lr_warmup or (WARM_RAMP if warm else 0),
        freeze_norm=warm if s.freeze_norm is None else bool(s.freeze_norm),  # fine-tuning: trained statistics stay
        steps=s.steps if s.steps is not None else (None if s.minutes else DEFAULT_STEPS),
        decay_steps=s.decay_steps,
        val_every=s.val_every if s.val_every is not None else (None if s.minutes else 100),
        noise_model=noise_model,
    )


def steps_for_budget(remaining_s: float, step_s: float, val_every: int, val_s: float, ckpt_every: int,
                     ckpt_s: float) -> int:
    """Steps that fit `remaining_s` seconds at `step_s` per step, with validations and checkpoints on the way."""
    per_step = step_s + val_s / max(val_every, 1) + ckpt_s / max(ckpt_every, 1)
    return max(1, math.floor(remaining_s / max(per_step, 1e-9)))
