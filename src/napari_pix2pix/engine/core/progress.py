"""Long work as generators of typed updates: the updates, cancelling, and draining a generator.

Prediction (:func:`~napari_pix2pix.engine.predict.tiled.predict_iter`) yields :class:`Progress`;
training (:func:`~napari_pix2pix.engine.training.loop.train_iter`) yields :class:`StepUpdate`,
:class:`ValidationUpdate`, :class:`CheckpointSaved` and :class:`StatusUpdate`. Scripts drain
them with :func:`run_to_end`; the napari widgets run them in a worker thread and stop them
between two updates. Nothing here knows about networks, images or napari.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
U = TypeVar("U")
CancelHook = threading.Event | Callable[[], bool] | None


class Cancelled(RuntimeError):
    """Raised by :func:`run_to_end` when its `cancel` hook asks to stop (prediction or training)."""


PredictionCancelled = Cancelled  # the name of 0.1.0, kept for scripts that catch it


@dataclass(frozen=True)
class Progress:
    """Progress of a prediction: `done` of `total` tiles (on a cluster: blocks, see `unit`)."""

    done: int
    total: int
    message: str = ""
    unit: str = "tiles"

    @property
    def fraction(self) -> float:
        """Share finished, 0 to 1."""
        return self.done / self.total if self.total else 1.0


class TrainingStatus(str, Enum):
    """Where a training run stands; stored (as its value) in model files and checkpoints."""

    RUNNING = "running"
    STOPPED = "stopped"  # by the user (stop event, Ctrl-C, closing the generator): saved
    FINISHED = "finished"  # every step done
    FAILED = "failed"  # an error: the last good weights were saved
    BEST = "best"  # the best-by-validation snapshot (best.safetensors)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StepUpdate:
    """After each training step."""

    step: int  # steps done
    total: int
    losses: dict[str, float]  # G_GAN, G_L1, D
    lr: float
    elapsed: float  # seconds
    eta: float  # seconds left
    it_per_s: float


@dataclass(frozen=True)
class ValidationUpdate:
    """Validation of the model exactly as prediction runs it (eval mode, running stats)."""

    step: int
    psnr: float
    ssim: float
    psnr_input: float | None  # the raw input against the target, for comparison
    ssim_input: float | None
    l1: float
    preview: tuple[np.ndarray, np.ndarray, np.ndarray]  # input, output, target (C, h, w) in [0, 1]
    uncertainty: float = 0.0  # mean spread over the 8 flips/rotations of the preview patch ([0, 1] units)
    preview_uncertainty: np.ndarray | None = None  # (h, w) spread map of the preview patch
    # what the scores are measured against: "clean"; "noisy" (noise2noise: a second acquisition); for noisy images
    # alone "estimated" (Stein's unbiased risk under the estimated noise) or "blind-spot" (pixels the model did not see)
    target: str = "clean"
    patch_errors: tuple[float, ...] | None = None  # noisy images alone: each patch's estimated MSE (paired tests)


@dataclass(frozen=True)
class CheckpointSaved:
    """A file was written."""

    step: int
    path: str
    kind: str  # "checkpoint", "best", "model"


@dataclass(frozen=True)
class StatusUpdate:
    """The run's status changed: RUNNING when the loop starts, FINISHED or STOPPED at its end.

    A run that fails raises instead (its checkpoint is saved first); a generator closed by
    its consumer saves and ends without a last update. `plan` is the run's plan (what "auto"
    and the recipe decided; the steps of a time budget once known:
    :class:`~napari_pix2pix.engine.training.plan.RunPlan`) and `message` says what was decided
    or is happening.
    """

    step: int
    status: TrainingStatus
    plan: Any = None  # RunPlan
    message: str = ""

    @property
    def config(self) -> Any:
        """The run's plan, under its name of 0.2 (it read like a config: patch_size, batch_size, lr, steps, ...)."""
        return self.plan


TrainEvent = StepUpdate | ValidationUpdate | CheckpointSaved | StatusUpdate


def is_cancelled(cancel: CancelHook) -> bool:
    """Whether a cancel hook (an Event, a callable, or None) says stop."""
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else bool(cancel())


def run_to_end(
    gen: Generator[Any, None, T],
    progress: Callable[[Any], Any] | None = None,
    cancel: CancelHook = None,
    what: str = "the work",
) -> T:
    """Drain a generator of updates, calling `progress` on each; return its result.

    Raises
    ------
    Cancelled
        When `cancel` (an Event or a callable) says so between two updates; the generator
        is closed first (a training saves its checkpoint then).
    """
    while True:
        try:
            update = next(gen)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if progress is not None:
            progress(update)
        if is_cancelled(cancel):
            gen.close()
            raise Cancelled(f"{what} was cancelled")


def relay(
    gen: Generator[U, None, T],
    cancel: CancelHook = None,
    recount: Callable[[U], U] | None = None,
) -> Generator[U, None, T | None]:
    """Yield `gen`'s updates (through `recount`, if given) and return its value.

    As part of a longer job: ``result = yield from relay(...)``. When `cancel` says stop
    (checked before each update) it returns None. `gen` is closed either way.
    """
    try:
        while True:
            if is_cancelled(cancel):
                return None
            try:
                update = next(gen)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            except Cancelled:  # stopped inside a step (between the forward passes of a batch)
                if is_cancelled(cancel):
                    return None
                raise
            yield recount(update) if recount is not None else update
    finally:
        gen.close()
