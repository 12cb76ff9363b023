"""The Pix2Pix training loop: a generator of typed updates, checkpoints, resume, DDP.

:func:`train_iter` yields :class:`StepUpdate`, :class:`ValidationUpdate`,
:class:`CheckpointSaved` and :class:`StatusUpdate` and returns the trained
:class:`~..core.network.Network`; it can be stopped between any two steps (``close()`` or a
`stop` event) and saves a checkpoint when it is stopped or fails. The front door's
:func:`napari_pix2pix.train` drains it and returns a ``Pix2PixModel``.

Read top to bottom: :func:`train_iter` sets up (:mod:`.setup`: the config, the data and
starting model, the plan, the networks; :class:`~.state.Saver`) and then runs the loop, whose
step is :func:`.step.train_step`; a time budget is followed by :mod:`.budget`, validation
runs as prediction runs (:mod:`.validation`), files are :mod:`.checkpoints`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from ...nn import GANLoss
from ..core.network import Network
from ..core.progress import (
    CheckpointSaved,
    StatusUpdate,
    StepUpdate,
    TrainEvent,
    TrainingStatus,
    ValidationUpdate,
)
from ..images.noise import NoiseModel
from .budget import Budget, follow_budget
from .checkpoints import BEST, CHECKPOINT
from .config import RESUMABLE, TrainConfig
from .data import PairedData, patch_shape
from .distributed import broadcast_from_rank0, close_process_group, device_for, dist_info
from .plan import RunPlan
from .recipes import RECIPES
from .setup import build, prepare, run_config, split_patch_of, training_data
from .state import Run, Saver
from .step import TrainingDiverged, batch, set_lr, train_step
from .validation import ValSet, clearly_better, make_valset, validate
from .warmstart import StartFrom, describe_start

__all__ = [
    "BEST", "CHECKPOINT", "RECIPES", "RESUMABLE", "CheckpointSaved", "StatusUpdate", "StepUpdate", "TrainConfig",
    "TrainEvent", "TrainingDiverged", "TrainingStatus", "ValidationUpdate", "describe", "train_iter", "training_data",
]


def _saver(cfg: TrainConfig, plan: RunPlan, data: PairedData, run: Run, start: Network | None, start_from: Any,
           model_path: str | os.PathLike[str] | None, checkpoint_dir: str | os.PathLike[str] | None, rank: int,
           world: int) -> Saver:
    where = start_from if start_from not in (None, "auto") else (start.source if start is not None else None)
    extra: dict[str, Any] = {"started_from": describe_start(start, where)} if start is not None else {}
    if cfg.schedule.minutes:
        extra["minutes"] = cfg.schedule.minutes
    return Saver(cfg, plan, data, run, model_path, checkpoint_dir, writes=rank == 0, world=world, extra=extra)


def _validation(run: Run, valset: ValSet, saver: Saver, device: torch.device, plan: RunPlan,
                losses: dict[str, float]) -> Generator[TrainEvent, None, None]:
    """Validate as prediction runs (the averaged weights when EMA is on); keep the best model."""
    net = run.model.generator
    if run.ema is not None:
        run.ema.swap(net)
    net.eval()
    try:
        v: ValidationUpdate = validate(run.model, valset, device, run.step, run.model.task.name)
        better = clearly_better(v, run.best.update, run.best.psnr)
        if better:  # the weights just validated (EMA ones when on) become the model's
            run.best.psnr, run.best.step, run.best.update = v.psnr, run.step, v
            run.best.weights = {k: t.detach().clone() for k, t in net.state_dict().items()}
    finally:
        run.train_mode()
        if run.ema is not None:
            run.ema.swap(net)
    if plan.recipe == "noise2noise":
        v = replace(v, target="noisy")
    ssim = v.ssim if math.isfinite(v.ssim) else None
    run.history.append({"step": run.step, **losses, "val_psnr": v.psnr, "val_ssim": ssim,
                        "val_psnr_input": v.psnr_input, "val_l1": v.l1, "val_uncertainty": v.uncertainty})
    yield v
    if better:
        yield from saver.save_best()


def _due(step: int, every: int, plan: RunPlan, budget: Budget | None, cost: str) -> bool:
    """Whether a validation (at the last step too) or checkpoint is due, and the time budget still affords it."""
    due = step % every == 0 or (cost == "val_s" and step == plan.steps)
    return due and (budget is None or budget.affords(getattr(budget, cost)))


def _begin(run: Run, plan: RunPlan, start: Network | None, valset: ValSet | None, saver: Saver,
           device: torch.device) -> Generator[TrainEvent, None, None]:
    """What was decided (the run's plan), and a warm start's own score, which training must beat."""
    size = "x".join(map(str, patch_shape(plan.patch_size, plan.spatial_dims)))
    picked = f"recipe {plan.recipe}, batch {plan.batch_size} of {size} px, lr {plan.lr:g}"
    where = saver.summary.get("started_from")
    yield StatusUpdate(run.step, TrainingStatus.RUNNING, plan, picked + (f", starting from {where}" if where else ""))
    if start is not None and valset is not None:
        yield from _validation(run, valset, saver, device, plan, {})
    if run.best.rescore and valset is not None:  # resumed from an older version: its best, on today's patches
        run.best.psnr = -math.inf
        if run.best.weights:
            with run.deployed():
                run.model.generator.eval()
                run.best.psnr = validate(run.model, valset, device, run.step, run.model.task.name).psnr
            run.train_mode()


def _finish(run: Run, saver: Saver, status: TrainingStatus, world: int) -> Network:
    """The model a run returns: the saved one (best by validation, or EMA), on the CPU, the same on every rank."""
    if run.best.weights is not None:
        run.model.generator.load_state_dict(run.best.weights)
    elif run.ema is not None:
        run.ema.swap(run.model.generator)
    if world > 1:  # only rank 0 validates: its model on every rank
        broadcast_from_rank0(run.model.generator)
    run.model.generator.to("cpu").eval()
    saver.finish_metadata(status)
    return run.model


def train_iter(
    *,
    data: PairedData | None = None,
    config: TrainConfig | None = None,
    model_path: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop: threading.Event | None = None,
    start_from: StartFrom | None = None,
    **kwargs: Any,
) -> Generator[TrainEvent, None, Network]:
    """Train a Pix2Pix generator, yielding updates; returns the trained :class:`~..core.network.Network`.

    Parameters
    ----------
    data : PairedData, optional
        Prepared pairs (not modified); otherwise a source by keyword (``input=``/``target=``,
        ``clean=``, ``input_dir=``/``target_dir=``, ``clean_dir=``, ``aligned_dir=``, ``channel_axis=``).
    config : TrainConfig, optional
        The settings; options may also be given by name (:data:`~.config.OPTIONS`).
    model_path, checkpoint_dir : path, optional
        The model file (also written when stopped or failed) and the folder of ``checkpoint.safetensors``
        and ``best.safetensors`` (default: ``<model>.checkpoints`` beside it).
    resume : path, optional
        A checkpoint to continue from; only the :data:`~.config.RESUMABLE` options may change.
    stop : threading.Event, optional
        Set it to stop after the current step (the run is saved and the model returned).
    start_from : str, path or Network, optional
        Warm start (never modified: a copy is trained); see :mod:`.warmstart`.

    Yields
    ------
    StepUpdate, ValidationUpdate, CheckpointSaved, StatusUpdate
    """
    t_call = time.perf_counter()
    cfg, resume_state, src = run_config(config, resume, start_from, dict(kwargs))
    rank, world = dist_info()
    split = split_patch_of(resume_state[1]) if resume_state is not None else None  # the same held-out part
    plan, data, start = prepare(cfg, data, src, start_from, resume_state is not None, split)
    device = device_for(cfg.runtime.device, world)
    run = build(cfg, plan, data, device, rank, world, resume_state, start)
    saver = _saver(cfg, plan, data, run, start, start_from, model_path, checkpoint_dir, rank, world)
    shard = data.planes[rank::world] if len(data.planes) >= world else data.planes
    gan_loss = GANLoss(plan.losses.gan_mode or "vanilla").to(device)
    noise = NoiseModel(**{k: plan.noise_model[k] for k in ("gain", "offset", "read")}) if plan.noise_model else None
    valset = make_valset(data, plan.patch_size, cfg.data.val_patches, cfg.runtime.seed, noise) if rank == 0 else None
    budget = Budget(cfg.schedule.minutes, t_call, cfg.schedule.checkpoint_every) if cfg.schedule.minutes else None
    t0, start_step, status = time.perf_counter(), run.step, TrainingStatus.RUNNING

    def validation(losses: dict[str, float]) -> Any:
        return None if valset is None else (lambda: _validation(run, valset, saver, device, plan, losses))

    try:
        yield from _begin(run, plan, start, valset, saver, device)
        while plan.steps is None or run.step < plan.steps:
            if stop is not None and stop.is_set():
                status = TrainingStatus.STOPPED
                break
            lr = plan.lr_at(run.step)  # a time budget's warm-up too: a warm start's ramp is not skipped
            set_lr(run, lr)
            with run.random.torch_scope(device):
                losses = train_step(run, plan, *batch(run, plan, cfg.data.augment, data, shard, device), gan_loss,
                                    cfg.schedule.grad_clip)
            run.step += 1
            elapsed = time.perf_counter() - t0
            rate = (run.step - start_step) / max(elapsed, 1e-9)
            total = plan.steps or 0  # 0: not known yet (a time budget's warm-up)
            eta = (total - run.step) / max(rate, 1e-9) if total else 0.0
            yield StepUpdate(run.step, total, losses, lr, elapsed, eta, rate)
            if budget is not None:
                plan = yield from follow_budget(budget, run, plan, validation(losses), saver, device, world)
                if plan.steps is None:  # still measuring the speed
                    continue
            if valset is not None and _due(run.step, plan.val_every or 100, plan, budget, "val_s"):
                yield from _validation(run, valset, saver, device, plan, losses)
            if run.step < plan.total_steps and _due(run.step, cfg.schedule.checkpoint_every, plan, budget, "ckpt_s"):
                yield from saver.save_all(TrainingStatus.RUNNING)
        else:
            status = TrainingStatus.FINISHED
    except (GeneratorExit, KeyboardInterrupt):  # closed by the consumer, or Ctrl-C: save and stop
        status = TrainingStatus.STOPPED
        saver.save_all(status)
        raise
    except BaseException:
        status = TrainingStatus.FAILED
        saver.save_all(status)  # the weights are the last good ones: no step is taken on a bad loss
        raise
    finally:
        if world > 1 and dist.is_initialized() and status != TrainingStatus.RUNNING:
            broadcast_from_rank0(run.model.generator, buffers_only=True)  # BatchNorm statistics: rank 0's, as saved
            dist.barrier()
    yield from saver.save_all(status)
    yield StatusUpdate(run.step, status, plan)
    model = _finish(run, saver, status, world)
    close_process_group(synchronize=True)
    return model


def describe(ev: TrainEvent) -> str:
    """A one-line log of an update."""
    if isinstance(ev, StepUpdate):
        ls = " ".join(f"{k}={v:.4f}" for k, v in ev.losses.items())
        total = ev.total or "?"
        eta = f" eta {ev.eta:.0f}s" if ev.total else ""
        return f"step {ev.step}/{total} {ls} lr={ev.lr:.2e} {ev.it_per_s:.2f} it/s{eta}"
    if isinstance(ev, ValidationUpdate):
        base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
        against = {"noisy": " against the noisy target", "estimated": " (estimated without clean data)",
                   "blind-spot": " against noisy pixels it did not see"}.get(ev.target, "")
        ssim = f" SSIM {ev.ssim:.3f}" if math.isfinite(ev.ssim) else ""
        return (f"step {ev.step} validation PSNR {ev.psnr:.2f} dB{base}{against}{ssim} "
                f"uncertainty {ev.uncertainty:.4f}")
    if isinstance(ev, StatusUpdate):
        return f"step {ev.step} training {ev.status.value}" + (f": {ev.message}" if ev.message else "")
    return f"step {ev.step} saved {ev.kind}: {ev.path}"
