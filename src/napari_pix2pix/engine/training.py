"""The Pix2Pix training loop: a generator of typed updates, checkpoints, resume, DDP.

:func:`train_iter` yields :class:`StepUpdate`, :class:`ValidationUpdate`,
:class:`CheckpointSaved` and :class:`StatusUpdate` and returns the trained
:class:`Pix2PixModel`; it can be stopped between any two steps (``close()`` or a `stop`
event) and saves a checkpoint when it is stopped or fails. :func:`train` drains it for
scripts and the command line.

Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel with
DistributedDataParallel: NCCL on GPUs, gloo on CPUs; each rank draws from its own shard
with its own seed and only rank 0 writes files.

Read top to bottom: :func:`train_iter` sets up (:func:`_run_config`, :func:`training_data`,
:func:`_device_for`, :func:`_build`, :class:`_Saver`) and then runs the loop, whose step is
:func:`_train_step`; settings live in :mod:`.train_config`, files in :mod:`.checkpoints`,
validation in :mod:`.validation`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..nn import GANLoss, PatchGANConfig, PatchGANDiscriminator
from .checkpoints import BEST, CHECKPOINT, load_checkpoint, save_checkpoint, unflatten_optimizer
from .data import PairedData, make_data, stack_batch
from .device import autocast_dtype, resolve_device
from .model import Pix2PixModel
from .normalization import Normalization, safe_range
from .progress import (
    CheckpointSaved,
    StatusUpdate,
    StepUpdate,
    TrainEvent,
    TrainingStatus,
    ValidationUpdate,
    run_to_end,
)
from .synthesis import NoiseConfig
from .train_config import RESUMABLE, TrainConfig, resume_config, split_kwargs
from .validation import ValSet, make_valset, validate

__all__ = [
    "BEST", "CHECKPOINT", "RESUMABLE", "CheckpointSaved", "StatusUpdate", "StepUpdate", "TrainConfig", "TrainEvent",
    "TrainingDiverged", "TrainingStatus", "ValidationUpdate", "describe", "train", "train_iter", "training_data",
]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


# ---------------------------------------------------------------------- set-up
def _run_config(config: TrainConfig | None, resume: str | os.PathLike[str] | None, kwargs: dict[str, Any]
                ) -> tuple[TrainConfig, tuple[dict[str, torch.Tensor], dict[str, Any]] | None, dict[str, Any]]:
    """(settings, checkpoint to resume or None, data source keywords) from the arguments of train_iter."""
    src, changes = split_kwargs(kwargs)
    if resume is not None:
        state = load_checkpoint(resume)
        saved = TrainConfig.from_dict(state[1]["config"])
        if config is not None:  # a config given with resume: its resumable fields apply
            changes = {**{k: getattr(config, k) for k in RESUMABLE}, **changes}
        return resume_config(saved, changes), state, src
    if config is None:
        return TrainConfig(**changes), None, src
    return (replace(config, **changes) if changes else config), None, src


def training_data(cfg: TrainConfig, source: dict[str, Any]) -> PairedData:
    """Training pairs for `cfg` from one source (``input``/``target``, ``clean``, folders, ...).

    Raises the engine's ValueError/TypeError for bad choices (shapes that differ, an empty
    folder, a patch larger than an image, ...), before any training.
    """
    noise = NoiseConfig(**cfg.noise) if cfg.noise else None
    return make_data(cfg.task, **source, normalization=Normalization(*cfg.percentiles), noise=noise,
                     val_fraction=cfg.val_fraction, val_split=cfg.val_split, patch_size=cfg.patch_size,
                     seed=cfg.seed)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device_for(cfg: TrainConfig, world: int) -> torch.device:
    """The run's device; under DDP on GPUs, this rank's GPU."""
    name = cfg.device if world == 1 or not torch.cuda.is_available() else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@dataclass
class _Run:
    """The state of a run: networks, optimisers, random state, progress."""

    model: Pix2PixModel
    disc: PatchGANDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: Any  # torch.amp.GradScaler: enabled for fp16 only
    rng: np.random.Generator
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    g_net: nn.Module = field(init=False)  # the networks as called (DDP wrappers under torchrun)
    d_net: nn.Module = field(init=False)
    step: int = 0
    best: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.g_net, self.d_net = self.model.generator, self.disc


def _output_normalization(cfg: TrainConfig, data: PairedData) -> Normalization:
    """translate: outputs on the training targets' typical scale; other tasks: the input's."""
    if cfg.task != "translate":
        return data.normalization
    lo = float(np.median([p.tgt_range[0] for p in data.planes]))
    hi = float(np.median([p.tgt_range[1] for p in data.planes]))
    lo, hi = safe_range(lo, hi)
    return replace(data.normalization, output="fixed", out_lo=lo, out_hi=hi)


def _grad_scaler(device: torch.device, enabled: bool) -> Any:
    """A gradient scaler for fp16 (loss scaling against underflow); a disabled one otherwise."""
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")  # PyTorch < 2.3


def _build(cfg: TrainConfig, data: PairedData, device: torch.device, rank: int, world: int,
           resume_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None) -> _Run:
    """Networks and optimisers for `cfg` and `data`, restored from `resume_state` when resuming."""
    cin, cout = data.task.network_channels(*data.channels)
    torch.manual_seed(cfg.seed + rank)
    model = Pix2PixModel(cfg.task, cfg.preset, config=cfg.generator_config(cin, cout),
                         normalization=_output_normalization(cfg, data))
    disc = PatchGANDiscriminator(PatchGANConfig(in_channels=cin + cout, ndf=cfg.ndf, n_layers=cfg.n_layers))
    betas = (cfg.beta1, cfg.beta2)
    amp_dtype = autocast_dtype(cfg.precision, device)
    fmt = torch.channels_last if cfg.channels_last and device.type != "mps" else torch.contiguous_format
    run = _Run(model, disc, torch.optim.Adam(model.generator.parameters(), lr=cfg.lr, betas=betas),
               torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=betas),
               _grad_scaler(device, amp_dtype == torch.float16), np.random.default_rng(cfg.seed + 1000 * rank),
               amp_dtype, fmt)
    if resume_state is not None:
        _restore(run, *resume_state)
    for net in (model.generator, disc):
        net.to(device).train()
        net.to(memory_format=fmt)  # type: ignore[call-overload]
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        run.g_net, run.d_net = DDP(model.generator, device_ids=ids), DDP(disc, device_ids=ids)
    return run


def _restore(run: _Run, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load a checkpoint's weights, optimiser and random state into `run`."""
    run.model.generator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    run.disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
    run.opt_g.load_state_dict(unflatten_optimizer("optG", tensors, meta["optG"]))
    run.opt_d.load_state_dict(unflatten_optimizer("optD", tensors, meta["optD"]))
    if meta.get("grad_scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(meta["grad_scaler"])
    torch.set_rng_state(tensors["torch_rng"])
    run.rng.bit_generator.state = meta["numpy_rng"]
    run.step = int(meta["step"])
    run.best = float(meta.get("best", -math.inf))
    run.history = list(meta.get("history", []))
    run.model.normalization = Normalization(**meta["model"]["normalization"])


class _Saver:
    """Writes the model file and the checkpoint (rank 0 only) and keeps the model's training summary."""

    def __init__(self, cfg: TrainConfig, data: PairedData, run: _Run, model_path: str | os.PathLike[str] | None,
                 checkpoint_dir: str | os.PathLike[str] | None, writes: bool, world: int) -> None:
        self.cfg, self.run, self.writes = cfg, run, writes
        self.model_path = Path(model_path) if model_path is not None else None
        if checkpoint_dir is None and self.model_path is not None:
            checkpoint_dir = self.model_path.with_name(self.model_path.stem + ".checkpoints")
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.summary: dict[str, Any] = {"config": cfg.to_dict(), "n_train_planes": len(data.planes),
                                        "n_val_planes": len(data.val), "synthesized": data.synthesize,
                                        "world_size": world}

    def finish_metadata(self, status: TrainingStatus) -> None:
        r = self.run
        r.model.training = {**self.summary, "steps_done": r.step, "status": status.value, "best_val_psnr": r.best,
                            "history": r.history[-200:]}

    def save_all(self, status: TrainingStatus) -> list[CheckpointSaved]:
        """The checkpoint and the model file, as they stand."""
        if not self.writes:
            return []
        r = self.run
        self.finish_metadata(status)
        out = []
        if self.ckpt_dir is not None:
            extra = {"config": self.cfg.to_dict(), "best": r.best, "history": r.history[-200:],
                     "status": status.value, "grad_scaler": r.scaler.state_dict() if r.scaler.is_enabled() else None}
            p = save_checkpoint(self.ckpt_dir / CHECKPOINT, r.model, r.disc, r.opt_g, r.opt_d, r.step, r.rng, extra)
            out.append(CheckpointSaved(r.step, str(p), "checkpoint"))
        if self.model_path is not None:
            out.append(CheckpointSaved(r.step, str(r.model.save(self.model_path)), "model"))
        return out

    def save_best(self) -> list[CheckpointSaved]:
        if self.ckpt_dir is None or not self.writes:
            return []
        self.finish_metadata(TrainingStatus.BEST)
        return [CheckpointSaved(self.run.step, str(self.run.model.save(self.ckpt_dir / BEST)), "best")]


# ---------------------------------------------------------------------- one step
def _batch(run: _Run, cfg: TrainConfig, data: PairedData, shard: list[Any], device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor]:
    a_np, b_np = stack_batch([data.sample(run.rng, cfg.patch_size, cfg.augment, shard)
                              for _ in range(cfg.batch_size)], data.task)
    a = torch.from_numpy(a_np).to(device).contiguous(memory_format=run.memory_format)
    b = torch.from_numpy(b_np).to(device).contiguous(memory_format=run.memory_format)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise TrainingDiverged(f"training data contain NaN or infinite values at step {run.step + 1}; "
                               "clean the images (numpy.nan_to_num) and start again")
    return a, b


def _optimise(run: _Run, opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any, clip: float | None) -> None:
    """One optimiser step on `loss` (scaled for fp16; gradients clipped if asked)."""
    opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if clip:
        run.scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(params, clip)
    run.scaler.step(opt)


def _train_step(run: _Run, cfg: TrainConfig, a: torch.Tensor, b: torch.Tensor, gan_loss: GANLoss
                ) -> dict[str, float]:
    """One D step (real pairs -> 1, generated -> 0), then one G step (fool D, stay close to the target)."""
    adversarial = cfg.gan_weight > 0  # without it, D is neither run nor trained
    autocast = torch.autocast(a.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None)
    with autocast:
        fake = run.g_net(a)
    loss_d = None
    if adversarial:
        with autocast:
            loss_d = 0.5 * (gan_loss(run.d_net(a, b), True) + gan_loss(run.d_net(a, fake.detach()), False))
        if not torch.isfinite(loss_d):
            raise TrainingDiverged(f"the discriminator loss became {loss_d.item()} at step {run.step + 1}")
        _optimise(run, run.opt_d, loss_d, run.disc.parameters(), cfg.grad_clip)
        run.disc.requires_grad_(False)
    with autocast:
        loss_g_gan = gan_loss(run.d_net(a, fake), True) if adversarial else fake.new_zeros(())
        loss_g_l1 = nn.functional.l1_loss(fake.float(), b)
        loss_g = cfg.gan_weight * loss_g_gan + cfg.lambda_l1 * loss_g_l1
    if adversarial:
        run.disc.requires_grad_(True)
    if not torch.isfinite(loss_g):
        raise TrainingDiverged(f"the generator loss became {loss_g.item()} at step {run.step + 1}")
    _optimise(run, run.opt_g, loss_g, run.model.generator.parameters(), cfg.grad_clip)
    run.scaler.update()
    return {"G_GAN": loss_g_gan.item(), "G_L1": loss_g_l1.item(), "D": loss_d.item() if loss_d is not None else 0.0}


def _set_lr(run: _Run, lr: float) -> None:
    for opt in (run.opt_g, run.opt_d):
        for g in opt.param_groups:
            g["lr"] = lr


def _validation(run: _Run, valset: ValSet, saver: _Saver, device: torch.device, cfg: TrainConfig,
                losses: dict[str, float]) -> Generator[TrainEvent, None, None]:
    """Validate as prediction runs; keep the best model."""
    run.model.generator.eval()
    v: ValidationUpdate = validate(run.model, valset, device, run.step, cfg.task)
    run.model.generator.train()
    run.history.append({"step": run.step, **losses, "val_psnr": v.psnr, "val_ssim": v.ssim,
                        "val_psnr_input": v.psnr_input, "val_l1": v.l1, "val_uncertainty": v.uncertainty})
    yield v
    if v.psnr > run.best:
        run.best = v.psnr
        yield from saver.save_best()


# ---------------------------------------------------------------------- the loop
def train_iter(
    *,
    data: PairedData | None = None,
    config: TrainConfig | None = None,
    model_path: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop: threading.Event | None = None,
    **kwargs: Any,
) -> Generator[TrainEvent, None, Pix2PixModel]:
    """Train a Pix2Pix model, yielding updates; returns the trained :class:`Pix2PixModel`.

    Parameters
    ----------
    data : PairedData, optional
        Prepared pairs; otherwise give a source as keyword (``input=``/``target=``,
        ``clean=``, ``input_dir=``/``target_dir=``, ``clean_dir=``, ``aligned_dir=``,
        with ``channel_axis=``), see :func:`napari_pix2pix.engine.data.make_data`.
    config : TrainConfig, optional
        The run's settings; any :class:`TrainConfig` field may also be given as keyword.
    model_path : path, optional
        Where the final model file is written (also when stopped or failed).
    checkpoint_dir : path, optional
        Folder for ``checkpoint.safetensors`` (resume) and ``best.safetensors`` (best
        validation PSNR). Default: beside `model_path`, in ``<model>.checkpoints``.
    resume : path, optional
        A ``checkpoint.safetensors`` to continue from: step count, weights, optimizers,
        schedule and random state. The data must be given again. Only the fields in
        :data:`~napari_pix2pix.engine.train_config.RESUMABLE` may change (see
        :func:`~napari_pix2pix.engine.train_config.resume_config`).
    stop : threading.Event, optional
        Set it to stop after the current step (the run is saved and the model returned).

    Yields
    ------
    StepUpdate, ValidationUpdate, CheckpointSaved, StatusUpdate
    """
    cfg, resume_state, src = _run_config(config, resume, dict(kwargs))
    rank, world = _dist_info()
    if data is None:
        data = training_data(cfg, src)
    elif src:
        raise TypeError("give either data= or a data source, not both")
    if data.task.name != cfg.task:
        raise ValueError(f"the data were prepared for {data.task.name!r} but the config trains {cfg.task!r}")
    device = _device_for(cfg, world)
    run = _build(cfg, data, device, rank, world, resume_state)
    saver = _Saver(cfg, data, run, model_path, checkpoint_dir, writes=rank == 0, world=world)
    shard = data.planes[rank::world] if len(data.planes) >= world else data.planes
    gan_loss = GANLoss(cfg.gan_mode).to(device)
    valset = make_valset(data, cfg.patch_size, cfg.val_patches, cfg.seed) if rank == 0 else None
    t0, start_step, status = time.perf_counter(), run.step, TrainingStatus.RUNNING
    try:
        yield StatusUpdate(run.step, status)
        while run.step < cfg.steps:
            if stop is not None and stop.is_set():
                status = TrainingStatus.STOPPED
                break
            lr = cfg.lr_at(run.step)
            _set_lr(run, lr)
            losses = _train_step(run, cfg, *_batch(run, cfg, data, shard, device), gan_loss)
            run.step += 1
            elapsed = time.perf_counter() - t0
            rate = (run.step - start_step) / max(elapsed, 1e-9)
            yield StepUpdate(run.step, cfg.steps, losses, lr, elapsed, (cfg.steps - run.step) / max(rate, 1e-9), rate)
            if valset is not None and (run.step % cfg.val_every == 0 or run.step == cfg.steps):
                yield from _validation(run, valset, saver, device, cfg, losses)
            if run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
                yield from saver.save_all(TrainingStatus.RUNNING)
        else:
            status = TrainingStatus.FINISHED
    except GeneratorExit:  # closed by the consumer: save and stop
        status = TrainingStatus.STOPPED
        saver.save_all(status)
        raise
    except BaseException:
        status = TrainingStatus.FAILED
        saver.save_all(status)  # the weights are the last good ones: no step is taken on a bad loss
        raise
    finally:
        if world > 1 and dist.is_initialized() and status != TrainingStatus.RUNNING:
            dist.barrier()
    yield from saver.save_all(status)
    yield StatusUpdate(run.step, status)
    run.model.generator.to("cpu").eval()
    saver.finish_metadata(status)
    return run.model


def train(progress: Callable[[TrainEvent], Any] | None = None, **kwargs: Any) -> Pix2PixModel:
    """Train a Pix2Pix model and return it; see :func:`train_iter` for the arguments.

    Examples
    --------
    >>> from skimage import data
    >>> import napari_pix2pix as p2p
    >>> model = p2p.train(clean=data.camera(), task="denoise", steps=2, patch_size=64,
    ...                   preset="unet_tiny", val_fraction=0)  # doctest: +SKIP
    """
    return run_to_end(train_iter(**kwargs), progress, what="training")


def describe(ev: TrainEvent) -> str:
    """A one-line log of an update."""
    if isinstance(ev, StepUpdate):
        ls = " ".join(f"{k}={v:.4f}" for k, v in ev.losses.items())
        return f"step {ev.step}/{ev.total} {ls} lr={ev.lr:.2e} {ev.it_per_s:.2f} it/s eta {ev.eta:.0f}s"
    if isinstance(ev, ValidationUpdate):
        base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
        return (f"step {ev.step} validation PSNR {ev.psnr:.2f} dB{base} SSIM {ev.ssim:.3f} "
                f"uncertainty {ev.uncertainty:.4f}")
    if isinstance(ev, StatusUpdate):
        return f"step {ev.step} training {ev.status.value}"
    return f"step {ev.step} saved {ev.kind}: {ev.path}"
