"""The Pix2Pix training loop: a generator of typed updates, checkpoints, resume, DDP.

:func:`train_iter` yields :class:`StepUpdate`, :class:`ValidationUpdate`,
:class:`CheckpointSaved` and :class:`StatusUpdate` and returns the trained
:class:`Network`; it can be stopped between any two steps (``close()`` or a `stop`
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

import atexit
import contextlib
import math
import os
import threading
import time
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ...nn import GANLoss, PatchGANConfig, PatchGANDiscriminator
from ..core.device import autocast_dtype, resolve_device
from ..core.network import Network
from ..core.normalization import Normalization, safe_range
from ..core.progress import (
    CheckpointSaved,
    StatusUpdate,
    StepUpdate,
    TrainEvent,
    TrainingStatus,
    ValidationUpdate,
)
from ..formats.networks import network_from_metadata, write_network
from ..images.synthesis import NoiseConfig
from ..predict.runner import forget_after_steps
from .checkpoints import BEST, CHECKPOINT, load_checkpoint, save_checkpoint, unflatten_optimizer
from .config import (
    AUTO_START,
    AUTO_START_3D,
    RECIPES,
    RESUMABLE,
    TrainConfig,
    resume_config,
    split_kwargs,
    steps_for_budget,
)
from .data import PairedData, make_data, patch_shape, stack_batch
from .validation import VAL_SCHEME, ValSet, make_valset, validate
from .warmstart import StartFrom, describe_start, load_start, start_model

__all__ = [
    "BEST", "CHECKPOINT", "RECIPES", "RESUMABLE", "CheckpointSaved", "StatusUpdate", "StepUpdate", "TrainConfig",
    "TrainEvent", "TrainingDiverged", "TrainingStatus", "ValidationUpdate", "describe", "train_iter", "training_data",
]


# Default intensity augmentation (PairedData.intensity) of a warm start: a model fine-tuned on one image then
# meets other images' percentile normalization (measured on the dev images: cell denoise 27.0 -> 36.8 dB).
INTENSITY_AUGMENT_WARM = 0.9


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


# ---------------------------------------------------------------------- set-up
def _run_config(config: TrainConfig | None, resume: str | os.PathLike[str] | None, start_from: Any,
                kwargs: dict[str, Any]
                ) -> tuple[TrainConfig, tuple[dict[str, torch.Tensor], dict[str, Any]] | None, dict[str, Any]]:
    """(settings as given, checkpoint to resume or None, data source keywords) from train_iter's arguments."""
    src, changes = split_kwargs(kwargs)
    if start_from is not None:
        changes["start_from"] = start_from.name if isinstance(start_from, Network) else str(start_from)
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
    folder, a patch larger than an image, ...), before any training. With an "auto" patch
    size the images need only be as large as the smallest patch (32 px).
    """
    noise = NoiseConfig(**cfg.noise) if cfg.noise else None
    smallest: int | tuple[int, ...] = 32 if cfg.dims == 2 else (1, 32, 32)  # "auto": decided after, to fit
    return make_data(cfg.task, **source, normalization=Normalization(*cfg.percentiles), noise=noise,
                     val_fraction=cfg.val_fraction, val_split=cfg.val_split, patch_size=cfg.patch_size or smallest,
                     seed=cfg.seed, dims=cfg.dims, z_context=cfg.z_context)


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        _OWN_GROUP.append(True)
        atexit.register(_close_process_group)  # a failed run: still torn down before the interpreter exits
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_OWN_GROUP: list[bool] = []  # non-empty once this module has started the process group


def _close_process_group(synchronize: bool = False) -> None:
    """Tear down the process group this module started, once every rank is done with it.

    A rank that leaves while another still talks to it (rank 1 exits while rank 0 saves) can
    abort in gloo's threads at interpreter exit: a barrier first, then the group is destroyed.
    """
    if _OWN_GROUP and dist.is_initialized():
        _OWN_GROUP.clear()
        try:
            if synchronize:
                dist.barrier()
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway; never mask the run's own outcome
            pass


def _broadcast_int(value: int, world: int, device: torch.device) -> int:
    """Rank 0's `value` on every rank (a no-op without DDP)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, src=0)
    return int(t.item())


def _agreed(flag: bool, world: int, device: torch.device) -> bool:
    """Rank 0's decision on every rank (timing-based decisions must not differ between ranks)."""
    return bool(_broadcast_int(int(flag), world, device))


def _device_for(cfg: TrainConfig, world: int) -> torch.device:
    """The run's device; under DDP on GPUs, this rank's GPU."""
    name = cfg.device if world == 1 or not torch.cuda.is_available() else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _prepare(cfg: TrainConfig, data: PairedData | None, src: dict[str, Any], start_from: StartFrom | None,
             resuming: bool) -> tuple[TrainConfig, PairedData, Network | None]:
    """The run's data, its starting model (warm start, loaded once) and its resolved settings.

    A `data` given is not modified: the run's normalization and augmentation go into a copy.
    """
    start = loaded = None
    if start_from is None and not resuming:
        start_from = cfg.start_from
    auto = start_from in (None, "auto")
    if auto or start_from == "scratch" or resuming:
        starts = AUTO_START_3D if cfg.dims == 3 else AUTO_START
        start_from = starts.get(cfg.task) if auto and cfg.warm and not resuming else None
    if start_from is not None:  # the starting model's normalization is the data's
        loaded = load_start(start_from)  # the run's own copy, loaded once
        cfg = replace(cfg, percentiles=(loaded.normalization.low, loaded.normalization.high))
        if not auto and cfg.spatial_dims is None and not cfg.z_context:  # a named model: its dimensions
            cfg = replace(cfg, spatial_dims=loaded.spatial_dims, z_context=loaded.z_context)
    if data is None:
        data = training_data(cfg, src)
    elif src:
        raise TypeError("give either data= or a data source, not both")
    if data.task.name != cfg.task:
        raise ValueError(f"the data were prepared for {data.task.name!r} but the config trains {cfg.task!r}")
    if cfg.recipe == "noise2noise" and data.synthesize:
        raise ValueError("noise2noise trains on pairs of two noisy acquisitions (input= and target=, or folders), "
                         "not on clean images: with clean images use the fidelity recipe")
    plane_channels = data.channels[0] // (2 * cfg.z_context + 1)
    if auto and start_from is not None and (plane_channels, data.channels[1]) != (1, 1):
        start_from = None  # the bundled starting models are for 1-channel planes (2.5D: the plane's) and volumes
    if start_from is not None and loaded is not None:
        start = start_model(loaded, data.task, *data.channels, spatial_dims=cfg.dims, z_context=cfg.z_context)
        if auto:
            start.source = f"{start_from} (automatic)"
        else:
            cfg = replace(cfg, start_from=start.name if isinstance(start_from, Network) else str(start_from))
        arch = start.config
    else:
        arch = cfg.generator_config(*data.task.network_channels(data.channels[0] // (2 * cfg.z_context + 1),
                                                                data.channels[1]))
    intensity = cfg.intensity_augment if cfg.intensity_augment is not None else (
        INTENSITY_AUGMENT_WARM if start is not None else 0.0)
    data = replace(data, normalization=_output_normalization(cfg, data, start),  # targets on the outputs' scale
                   intensity=intensity)
    if auto and start_from is None and cfg.preset is None:  # automatic, nothing fitting: a new network
        cfg = replace(cfg, start_from="scratch")
    if not cfg.resolved or cfg.steps is None:
        cfg = cfg.resolve(min_size=data.min_size(), arch=arch, warm=start is not None)
    _check_patch_fits(cfg, data)
    return cfg, data, start


def _check_patch_fits(cfg: TrainConfig, data: PairedData) -> None:
    from .data import _check_patch

    if cfg.patch_size is not None:
        _check_patch(data.planes, patch_shape(cfg.patch_size, data.dims), "")


class _Ema:
    """An exponential moving average of the generator's weights (buffers copied), swapped in when used."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone().float() if v.is_floating_point() else v.detach().clone()
                      for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        """Average in the weights after `step` (0-based) steps.

        The decay ramps up, min(decay, (1 + step) / (10 + step)), as in TensorFlow's
        ExponentialMovingAverage: a fixed 0.999 would keep most of the starting (random)
        weights for the first thousands of steps, and a short run saved its average of noise.
        """
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in net.state_dict().items():
            e = self.state[k]
            if v.is_floating_point() and k.rsplit(".", 1)[-1] in ("weight", "bias"):
                e.mul_(decay).add_(v.detach().float(), alpha=1 - decay)
            else:  # running statistics, counters: as they are
                e.copy_(v.detach())

    def swap(self, net: nn.Module) -> None:
        """Exchange the network's weights with the average (call again to swap back)."""
        current = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict({k: v.to(current[k].dtype) for k, v in self.state.items()})
        self.state = {k: v.float() if v.is_floating_point() else v for k, v in current.items()}


@dataclass
class _Run:
    """The state of a run: networks, optimisers, random state, progress."""

    model: Network
    disc: PatchGANDiscriminator | None  # None when the recipe has no adversarial term
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: Any  # torch.amp.GradScaler: enabled for fp16 only
    rng: np.random.Generator
    torch_rng: torch.Tensor  # the run's own torch random state (dropout): the caller's global one is not touched
    cuda_rng: torch.Tensor | None  # ... and its CUDA generator's, on a GPU
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    ema: _Ema | None = None
    g_net: nn.Module = field(init=False)  # the networks as called (DDP wrappers under torchrun)
    d_net: nn.Module | None = field(init=False)
    step: int = 0
    best: float = -math.inf
    best_weights: dict[str, torch.Tensor] | None = None  # the generator (EMA if on) at the best validation
    best_step: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    fp32_from: int | None = None  # the step from which a bf16 run went on in fp32 (non-finite bf16 gradients)
    freeze_norm: bool = False  # the generator's BatchNorm layers keep their running statistics (fine-tuning)
    rescore: bool = False  # a resumed checkpoint's best score comes from another validation scheme

    def __post_init__(self) -> None:
        self.g_net, self.d_net = self.model.generator, self.disc

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Torch's random numbers from the run's own state for the time being (the global state is restored)."""
        device = next(self.model.generator.parameters()).device
        cuda = [device] if self.cuda_rng is not None and device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self.torch_rng)
            if cuda and self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, device)
            yield
            self.torch_rng = torch.get_rng_state()
            if cuda:
                self.cuda_rng = torch.cuda.get_rng_state(device)

    def train_mode(self) -> None:
        """Networks in training mode (the generator's norm layers frozen when asked)."""
        self.model.generator.train()
        if self.disc is not None:
            self.disc.train()
        if self.freeze_norm:
            for m in self.model.generator.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    @contextlib.contextmanager
    def deployed(self) -> Iterator[None]:
        """The weights a model file gets, in the generator for the time being: the best by validation, else EMA."""
        net = self.model.generator
        if self.best_weights is not None:
            current = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(self.best_weights)
            try:
                yield
            finally:
                net.load_state_dict(current)
        elif self.ema is not None:
            self.ema.swap(net)
            try:
                yield
            finally:
                self.ema.swap(net)
        else:
            yield


def _output_normalization(cfg: TrainConfig, data: PairedData, start: Network | None) -> Normalization:
    """How the model will normalize, decided from the data (training then normalizes the same way).

    A warm start keeps the starting model's. Otherwise each plane is normalized by its own
    percentiles (``normalization="plane"``), except for ``translate`` from real pairs, where
    every image is normalized by the training data's typical percentiles
    (``normalization="dataset"``, as CARE does: per-plane percentiles of an image whose content
    differs would shift its outputs on the fixed output scale), and its outputs are on the
    targets' typical scale.
    """
    if start is not None and cfg.normalization is None:
        return start.normalization
    norm = start.normalization if start is not None else data.normalization
    mode = cfg.normalization or ("dataset" if cfg.task == "translate" and not data.synthesize else "plane")
    if mode == "dataset" and not data.synthesize:
        lo, hi = safe_range(float(np.median([p.in_range[0] for p in data.planes])),
                            float(np.median([p.in_range[1] for p in data.planes])))
        norm = replace(norm, input="fixed", in_lo=lo, in_hi=hi)
    if cfg.task == "translate" and norm.output != "fixed":  # outputs on the training targets' typical scale
        lo, hi = safe_range(float(np.median([p.tgt_range[0] for p in data.planes])),
                            float(np.median([p.tgt_range[1] for p in data.planes])))
        norm = replace(norm, output="fixed", out_lo=lo, out_hi=hi)
    return norm


def _grad_scaler(device: torch.device, enabled: bool) -> Any:
    """A gradient scaler for fp16 (loss scaling against underflow); a disabled one otherwise."""
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")  # PyTorch < 2.3


def _generator(cfg: TrainConfig, data: PairedData, start: Network | None,
               resume_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None) -> Network:
    """The network to train: the checkpoint's, the starting model's (the run's own copy), or a new one."""
    if resume_state is not None:  # the architecture the checkpoint was made with (weights: _restore)
        saved: Network = network_from_metadata(resume_state[1]["model"])
        return Network(cfg.task, saved.preset, normalization=saved.normalization, name=saved.name,
                       z_context=saved.z_context, generator=saved.generator)
    if start is not None:  # trains the start's generator itself: load_start made it the run's own
        return Network(cfg.task, start.preset, normalization=data.normalization, z_context=start.z_context,
                       generator=start.generator)
    image_c = data.channels[0] // (2 * cfg.z_context + 1)  # a 2.5D plane carries its neighbours as channels
    cin, cout = data.task.network_channels(image_c, data.channels[1])
    return Network(cfg.task, cfg.preset or "unet_tiny", config=cfg.generator_config(cin, cout),
                   normalization=data.normalization, z_context=cfg.z_context)


def _build(cfg: TrainConfig, data: PairedData, device: torch.device, rank: int, world: int,
           resume_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None, start: Network | None) -> _Run:
    """Networks and optimisers for `cfg` and `data`, restored from `resume_state` when resuming.

    Random initial weights come from the run's own seeded torch state (`seed` + rank), not the caller's.
    """
    gpu = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpu):
        torch.manual_seed(cfg.seed + rank)  # the CPU's and every GPU's generator, inside the fork only
        model = _generator(cfg, data, start, resume_state)
        cin, cout = model.config.in_channels, model.config.out_channels
        disc = PatchGANDiscriminator(_disc_config(cfg, cin + cout)) if cfg.gan_weight else None
        torch_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(device) if gpu else None
    betas = (cfg.beta1 if cfg.beta1 is not None else 0.5, cfg.beta2)
    amp_dtype = autocast_dtype(cfg.precision, device, cfg.dims)
    fmt = torch.channels_last if cfg.channels_last and device.type != "mps" and cfg.dims == 2 else (
        torch.contiguous_format)
    for net in (model.generator, disc):  # on the device before the optimisers load their state onto it
        if net is not None:
            net.to(device)
            net.to(memory_format=fmt)  # type: ignore[call-overload]
    run = _Run(model, disc, torch.optim.Adam(model.generator.parameters(), lr=cfg.lr or 2e-4, betas=betas),
               torch.optim.Adam(disc.parameters(), lr=cfg.lr or 2e-4, betas=betas) if disc is not None else None,
               _grad_scaler(device, amp_dtype == torch.float16), np.random.default_rng(cfg.seed + 1000 * rank),
               torch_rng, cuda_rng, amp_dtype, fmt)
    forget_after_steps(run.opt_g, model.generator)  # cached inference copies (validation) follow the weights
    if resume_state is not None:
        _restore(run, *resume_state, device)
    run.freeze_norm = bool(cfg.freeze_norm)
    run.train_mode()
    if cfg.ema:
        run.ema = _Ema(model.generator, cfg.ema)
        if resume_state is not None and any(k.startswith("E.") for k in resume_state[0]):
            run.ema.state = {k[2:]: v.to(device) for k, v in resume_state[0].items() if k.startswith("E.")}
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        run.g_net = DDP(model.generator, device_ids=ids)
        run.d_net = DDP(disc, device_ids=ids) if disc is not None else None
    return run


def _disc_config(cfg: TrainConfig, channels: int) -> PatchGANConfig:
    """The discriminator of a recipe: scales that fit the patch (the last sees at least 32 px)."""
    patch = min(patch_shape(cfg.patch_size or 64, cfg.dims)[-2:])  # Y, X: a volume's Z is not halved
    scales = max(1, min(cfg.d_scales or 1, int(math.log2(max(patch, 32) / 32)) + 1))
    return PatchGANConfig(in_channels=channels, ndf=cfg.ndf or 64, n_layers=cfg.n_layers or 3, scales=scales,
                          spectral_norm=bool(cfg.spectral_norm), spatial_dims=cfg.dims)


def _restore(run: _Run, tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device) -> None:
    """Load a checkpoint's weights, optimiser and random state into `run` (networks already on `device`)."""
    run.model.generator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    run.opt_g.load_state_dict(unflatten_optimizer("optG", tensors, meta["optG"]))
    if run.disc is not None and run.opt_d is not None and any(k.startswith("D.") for k in tensors):
        run.disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        if meta.get("optD") is not None:
            run.opt_d.load_state_dict(unflatten_optimizer("optD", tensors, meta["optD"]))
    if meta.get("grad_scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(meta["grad_scaler"])
    run.torch_rng = tensors["torch_rng"]
    run.rng.bit_generator.state = meta["numpy_rng"]
    run.step = int(meta["step"])
    run.best = float(meta.get("best", -math.inf))
    best = {k[2:]: v for k, v in tensors.items() if k.startswith("B.")}
    run.best_weights, run.best_step = (best or None), meta.get("best_step")
    run.rescore = meta.get("val_scheme") != VAL_SCHEME  # its best was scored on other patches: score it again
    run.history = list(meta.get("history", []))
    run.model.normalization = Normalization(**meta["model"]["normalization"])


class _Saver:
    """Writes the model file and the checkpoint (rank 0 only) and keeps the model's training summary."""

    def __init__(self, cfg: TrainConfig, data: PairedData, run: _Run, model_path: str | os.PathLike[str] | None,
                 checkpoint_dir: str | os.PathLike[str] | None, writes: bool, world: int,
                 extra: dict[str, Any]) -> None:
        self.cfg, self.run, self.writes = cfg, run, writes
        self.model_path = Path(model_path) if model_path is not None else None
        if checkpoint_dir is None and self.model_path is not None:
            checkpoint_dir = self.model_path.with_name(self.model_path.stem + ".checkpoints")
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.summary: dict[str, Any] = {"n_train_planes": len(data.planes), "n_val_planes": len(data.val),
                                        "synthesized": data.synthesize, "world_size": world, **extra}

    def finish_metadata(self, status: TrainingStatus) -> None:
        r = self.run
        r.model.training_summary = {"config": self.cfg.to_dict(), **self.summary, "steps_done": r.step,
                            "status": status.value, "best_val_psnr": r.best, "weights_of_step": r.best_step or r.step,
                            "history": r.history[-200:]}
        if r.fp32_from is not None:
            r.model.training_summary["fp32_from_step"] = r.fp32_from

    def _model_file(self, path: Path) -> Path:
        """The model file: the best weights by validation (or the averaged ones when EMA is on)."""
        with self.run.deployed():
            return write_network(self.run.model, path)

    def save_all(self, status: TrainingStatus) -> list[CheckpointSaved]:
        """The checkpoint and the model file, as they stand (nothing before a new run's first step)."""
        if not self.writes or self.run.step == 0:
            return []
        r = self.run
        self.finish_metadata(status)
        out = []
        if self.ckpt_dir is not None:
            extra = {"config": self.cfg.to_dict(), "best": r.best, "val_scheme": VAL_SCHEME,
                     "history": r.history[-200:], "status": status.value,
                     "grad_scaler": r.scaler.state_dict() if r.scaler.is_enabled() else None}
            more = {f"E.{k}": v for k, v in r.ema.state.items()} if r.ema is not None else {}
            more.update({f"B.{k}": v for k, v in (r.best_weights or {}).items()})
            extra["best_step"] = r.best_step
            p = save_checkpoint(self.ckpt_dir / CHECKPOINT, r.model, r.disc, r.opt_g, r.opt_d, r.step, r.rng,
                                r.torch_rng, extra, more)
            out.append(CheckpointSaved(r.step, str(p), "checkpoint"))
        if self.model_path is not None:
            out.append(CheckpointSaved(r.step, str(self._model_file(self.model_path)), "model"))
        return out

    def save_best(self) -> list[CheckpointSaved]:
        if self.ckpt_dir is None or not self.writes:
            return []
        self.finish_metadata(TrainingStatus.BEST)
        return [CheckpointSaved(self.run.step, str(self._model_file(self.ckpt_dir / BEST)), "best")]


def _saver(cfg: TrainConfig, data: PairedData, run: _Run, start: Network | None, start_from: Any,
           model_path: str | os.PathLike[str] | None, checkpoint_dir: str | os.PathLike[str] | None, rank: int,
           world: int) -> _Saver:
    where = start_from if start_from not in (None, "auto") else (start.source if start is not None else None)
    extra: dict[str, Any] = {"started_from": describe_start(start, where)} if start is not None else {}
    if cfg.minutes:
        extra["minutes"] = cfg.minutes
    return _Saver(cfg, data, run, model_path, checkpoint_dir, writes=rank == 0, world=world, extra=extra)


# ---------------------------------------------------------------------- one step
def _batch(run: _Run, cfg: TrainConfig, data: PairedData, shard: list[Any], device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor]:
    assert cfg.patch_size is not None and cfg.batch_size is not None
    a_np, b_np = stack_batch([data.sample(run.rng, cfg.patch_size, cfg.augment, shard)
                              for _ in range(cfg.batch_size)], data.task)
    a = torch.from_numpy(a_np).to(device).contiguous(memory_format=run.memory_format)
    b = torch.from_numpy(b_np).to(device).contiguous(memory_format=run.memory_format)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise TrainingDiverged(f"training data contain NaN or infinite values at step {run.step + 1}; "
                               "clean the images (numpy.nan_to_num) and start again")
    return a, b


def _optimise(run: _Run, opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any, clip: float | None) -> bool:
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


def _bf16_fallback(run: _Run) -> None:
    """A bf16 step gave non-finite gradients: the run goes on in fp32 (the step was not taken)."""
    run.amp_dtype, run.fp32_from = None, run.step + 1
    warnings.warn(f"bf16 gave non-finite gradients at step {run.step + 1} (not taken); training goes on in fp32",
                  RuntimeWarning, stacklevel=3)


def _gan_terms(run: _Run, cfg: TrainConfig, a: torch.Tensor, b: torch.Tensor, fake: torch.Tensor,
               gan_loss: GANLoss, autocast: Any) -> tuple[torch.Tensor, Any]:
    """The D loss on (real, generated) pairs, plus the R1 penalty; and the real pairs' features for matching."""
    assert run.d_net is not None
    if not (cfg.feature_matching or cfg.r1 or (cfg.d_scales or 1) > 1):  # the paper's single-scale D
        with autocast:
            loss = 0.5 * (gan_loss(run.d_net(a, b), True) + gan_loss(run.d_net(a, fake.detach()), False))
        return loss, None
    b_real = b.detach().requires_grad_(bool(cfg.r1))
    with autocast:
        real, fakes = run.d_net(a, b_real, judge=True), run.d_net(a, fake.detach(), judge=True)
        loss = sum(0.5 * (gan_loss(r[0], True) + gan_loss(f[0], False)) for r, f in zip(real, fakes, strict=True))
        loss = loss / len(real)
    if cfg.r1:  # R1: the discriminator's gradient on real pairs, squared
        (grad,) = torch.autograd.grad(sum(r[0].float().sum() for r in real), b_real, create_graph=True)
        loss = loss + 0.5 * cfg.r1 * grad.pow(2).flatten(1).sum(1).mean()
    return loss, [[f.detach() for f in r[1]] for r in real] if cfg.feature_matching else None


def _g_adversarial(run: _Run, cfg: TrainConfig, a: torch.Tensor, fake: torch.Tensor, gan_loss: GANLoss,
                   real_feats: Any) -> torch.Tensor:
    """The generator's adversarial loss (every scale), plus feature matching against the real pairs."""
    assert run.d_net is not None
    if real_feats is None and not (cfg.d_scales or 1) > 1:
        return gan_loss(run.d_net(a, fake), True)
    judged = run.d_net(a, fake, judge=True)
    loss = sum(gan_loss(logits, True) for logits, _ in judged) / len(judged)
    if real_feats is not None:  # pix2pixHD: L1 between the D features of generated and real pairs
        fm = [nn.functional.l1_loss(f.float(), r.float()) for (_, fs), rs in zip(judged, real_feats, strict=True)
              for f, r in zip(fs, rs, strict=True)]
        loss = loss + (cfg.feature_matching or 0.0) * sum(fm) / len(judged)
    return loss


def _train_step(run: _Run, cfg: TrainConfig, a: torch.Tensor, b: torch.Tensor, gan_loss: GANLoss
                ) -> dict[str, float]:
    """One D step (real pairs -> 1, generated -> 0), then one G step (fool D, stay close to the target)."""
    gan_w = cfg.gan_weight_at(run.step) if cfg.steps is not None else (0.0 if cfg.gan_warmup else cfg.gan_weight or 0)
    adversarial = gan_w > 0 and run.disc is not None and run.d_net is not None and run.opt_d is not None
    autocast = torch.autocast(a.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None)
    with autocast:
        fake = run.g_net(a)
    loss_d, real_feats = None, None
    if adversarial:
        assert run.disc is not None and run.opt_d is not None
        loss_d, real_feats = _gan_terms(run, cfg, a, b, fake, gan_loss, autocast)
        if not torch.isfinite(loss_d):
            raise TrainingDiverged(f"the discriminator loss became {loss_d.item()} at step {run.step + 1}")
        if not _optimise(run, run.opt_d, loss_d, run.disc.parameters(), cfg.grad_clip):
            _bf16_fallback(run)
            return {"G_GAN": 0.0, "G_L2" if cfg.pixel_loss == "l2" else "G_L1": 0.0, "D": loss_d.item()}
        run.disc.requires_grad_(False)
    with autocast:
        loss_g_gan = _g_adversarial(run, cfg, a, fake, gan_loss, real_feats) if adversarial else fake.new_zeros(())
        pixel = nn.functional.mse_loss if cfg.pixel_loss == "l2" else nn.functional.l1_loss
        loss_g_l1 = pixel(fake.float(), b)
        loss_g = gan_w * loss_g_gan + (cfg.lambda_l1 or 0.0) * loss_g_l1
    if adversarial:
        assert run.disc is not None
        run.disc.requires_grad_(True)
    if not torch.isfinite(loss_g):
        raise TrainingDiverged(f"the generator loss became {loss_g.item()} at step {run.step + 1}")
    if not _optimise(run, run.opt_g, loss_g, run.model.generator.parameters(), cfg.grad_clip):
        _bf16_fallback(run)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update(run.model.generator, run.step)
    name = "G_L2" if cfg.pixel_loss == "l2" else "G_L1"
    return {"G_GAN": loss_g_gan.item(), name: loss_g_l1.item(), "D": loss_d.item() if loss_d is not None else 0.0}


def _set_lr(run: _Run, lr: float) -> None:
    for opt in (run.opt_g, run.opt_d):
        if opt is not None:
            for g in opt.param_groups:
                g["lr"] = lr


def _validation(run: _Run, valset: ValSet, saver: _Saver, device: torch.device, cfg: TrainConfig,
                losses: dict[str, float]) -> Generator[TrainEvent, None, None]:
    """Validate as prediction runs (the averaged weights when EMA is on); keep the best model."""
    net = run.model.generator
    if run.ema is not None:
        run.ema.swap(net)
    net.eval()
    try:
        v: ValidationUpdate = validate(run.model, valset, device, run.step, cfg.task)
        better = v.psnr > run.best
        if better:  # the weights just validated (EMA ones when on) become the model's
            run.best, run.best_step = v.psnr, run.step
            run.best_weights = {k: t.detach().clone() for k, t in net.state_dict().items()}
    finally:
        run.train_mode()
        if run.ema is not None:
            run.ema.swap(net)
    if cfg.recipe == "noise2noise":
        v = replace(v, target="noisy")
    run.history.append({"step": run.step, **losses, "val_psnr": v.psnr, "val_ssim": v.ssim,
                        "val_psnr_input": v.psnr_input, "val_l1": v.l1, "val_uncertainty": v.uncertainty})
    yield v
    if better:
        yield from saver.save_best()


# ---------------------------------------------------------------------- a time budget
class _Budget:
    """Fits a run into `minutes` (from the call's start): measures the speed after a warm-up, then fixes the steps.

    The schedule completes: the learning rate stays constant during the warm-up (after a warm
    start's ramp; the first half of any run) and the decay is planned over the steps that fit.
    Validations and checkpoints on the way and the final save are counted; at the start of the
    decay the speed is measured again and the plan corrected.
    """

    WARMUP_S = 1.0  # seconds of steps to measure the speed on (after the first step)

    def __init__(self, minutes: float, t_call: float) -> None:
        self.seconds, self.t_call = 60.0 * minutes, t_call
        self.t_first: float | None = None  # after the first step (its one-time costs are not typical)
        self.n_first = 0
        self.val_s = self.ckpt_s = 0.0
        self.replanned = False

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t_call)

    @property
    def final_s(self) -> float:
        """Seconds to keep for the end: the last checkpoint and model file, and a margin."""
        return 2 * self.ckpt_s + 0.02 * self.seconds

    def over(self) -> bool:
        """Whether the time left is only enough to save (a slower machine than measured: stop here)."""
        return self.left() <= self.final_s

    def affords(self, seconds: float) -> bool:
        """Whether a validation or checkpoint of `seconds` still fits before the end."""
        return self.left() - seconds > self.final_s

    def ready(self, run: _Run) -> bool:
        """Whether the warm-up has run long enough to plan."""
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first, self.n_first = now, run.step
            return False
        done = run.step - self.n_first
        return done >= 3 and (now - self.t_first >= self.WARMUP_S or self.left() < 0.8 * self.seconds)

    def step_s(self, run: _Run) -> float:
        return (time.perf_counter() - (self.t_first or self.t_call)) / max(run.step - self.n_first, 1)

    def plan(self, run: _Run, cfg: TrainConfig, val: bool) -> TrainConfig:
        """The config with its steps (and validation interval) fixed to fit what is left."""
        step_s = self.step_s(run)
        remaining = self.left() - self.final_s
        n_val = min(10, math.floor(0.1 * remaining / self.val_s)) if val and self.val_s > 0 else (10 if val else 0)
        val_every = cfg.val_every
        if val_every is None:
            steps_est = max(1, math.floor(remaining / step_s))
            val_every = max(1, math.ceil(steps_est / max(n_val, 1)))
        n = steps_for_budget(remaining, step_s, val_every, self.val_s if val else 0.0, cfg.checkpoint_every,
                             self.ckpt_s)
        self.t_first, self.n_first = time.perf_counter(), run.step  # re-measure from here
        return replace(cfg, steps=run.step + max(n, 1), minutes=None, val_every=val_every)  # minutes: in the summary

    def replan(self, run: _Run, cfg: TrainConfig, val: bool) -> TrainConfig:
        """At the start of the decay: the steps that still fit, with the decay over exactly those."""
        self.replanned = True
        step_s = self.step_s(run)
        remaining = self.left() - self.final_s
        n = steps_for_budget(remaining, step_s, cfg.val_every or 100, self.val_s if val else 0.0,
                             cfg.checkpoint_every, self.ckpt_s)
        total = run.step + max(n, 1)
        if abs(total - cfg.total_steps) <= 0.03 * cfg.total_steps:
            return cfg
        return replace(cfg, steps=total, decay_steps=total - run.step)


def _plan_budget(budget: _Budget, run: _Run, cfg: TrainConfig, valset: ValSet | None, saver: _Saver,
                 device: torch.device, world: int) -> Generator[TrainEvent, None, TrainConfig]:
    """After the warm-up: time a validation and a checkpoint, then fix the steps (rank 0 decides)."""
    if valset is not None and budget.left() > 0.5 * budget.seconds:  # timed once (skipped when time is short)
        t = time.perf_counter()
        yield from _validation(run, valset, saver, device, cfg, run.history[-1] if run.history else {})
        budget.val_s = time.perf_counter() - t
    t = time.perf_counter()
    yield from saver.save_all(TrainingStatus.RUNNING)
    budget.ckpt_s = time.perf_counter() - t
    planned = budget.plan(run, cfg, valset is not None)
    steps = _broadcast_int(planned.total_steps, world, device)
    val_every = _broadcast_int(planned.val_every or 100, world, device)
    planned = replace(planned, steps=steps, val_every=val_every)
    saver.cfg = planned
    yield StatusUpdate(run.step, TrainingStatus.RUNNING, planned,
                       f"time budget {budget.seconds / 60:g} min: {steps} steps, validation every {val_every}")
    return planned


def _due(step: int, every: int, cfg: TrainConfig, budget: _Budget | None, cost: str) -> bool:
    """Whether a validation (at the last step too) or checkpoint is due, and the time budget still affords it."""
    due = step % every == 0 or (cost == "val_s" and step == cfg.steps)
    return due and (budget is None or budget.affords(getattr(budget, cost)))


def _follow_budget(budget: _Budget, run: _Run, cfg: TrainConfig, valset: ValSet | None, saver: _Saver,
                   device: torch.device, world: int) -> Generator[TrainEvent, None, TrainConfig]:
    """After each step of a time-budgeted run: plan once the warm-up is done, correct at the start of the decay."""
    if cfg.steps is None:
        if _agreed(budget.ready(run), world, device):
            cfg = yield from _plan_budget(budget, run, cfg, valset, saver, device, world)
        return cfg
    if not budget.replanned and run.step >= cfg.total_steps - cfg.decay:
        before = cfg.total_steps
        cfg = budget.replan(run, cfg, valset is not None)
        cfg = replace(cfg, steps=_broadcast_int(cfg.total_steps, world, device))
        saver.cfg = cfg
        if cfg.total_steps != before:  # the plan the user was shown has changed: say so
            yield StatusUpdate(run.step, TrainingStatus.RUNNING, cfg,
                               f"time budget {budget.seconds / 60:g} min: {cfg.total_steps} steps (measured again)")
    if _agreed(budget.over() and run.step < cfg.total_steps, world, device):  # slower than measured: end on time
        cfg = replace(cfg, steps=run.step)
        saver.cfg = cfg
    return cfg


def _begin(run: _Run, cfg: TrainConfig, start: Network | None, valset: ValSet | None, saver: _Saver,
           device: torch.device) -> Generator[TrainEvent, None, None]:
    """What was decided (the run's resolved settings), and a warm start's own score, which training must beat."""
    size = "x".join(map(str, patch_shape(cfg.patch_size or 64, cfg.dims)))
    picked = f"recipe {cfg.recipe}, batch {cfg.batch_size} of {size} px, lr {cfg.lr:g}"
    where = saver.summary.get("started_from")
    yield StatusUpdate(run.step, TrainingStatus.RUNNING, cfg, picked + (f", starting from {where}" if where else ""))
    if start is not None and valset is not None:
        yield from _validation(run, valset, saver, device, cfg, {})
    if run.rescore and valset is not None:  # resumed from an older version: its best, on today's patches
        run.best = -math.inf
        if run.best_weights:
            with run.deployed():
                run.model.generator.eval()
                run.best = validate(run.model, valset, device, run.step, cfg.task).psnr
            run.train_mode()


def _finish(run: _Run, saver: _Saver, status: TrainingStatus, world: int) -> Network:
    """The model a run returns: the saved one (best by validation, or EMA), on the CPU, the same on every rank."""
    if run.best_weights is not None:
        run.model.generator.load_state_dict(run.best_weights)
    elif run.ema is not None:
        run.ema.swap(run.model.generator)
    if world > 1 and dist.is_initialized():  # only rank 0 validates: its model on every rank
        for t in run.model.generator.state_dict().values():
            dist.broadcast(t, src=0)
    run.model.generator.to("cpu").eval()
    saver.finish_metadata(status)
    return run.model


# ---------------------------------------------------------------------- the loop
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
    """Train a Pix2Pix model, yielding updates; returns the trained :class:`Network`.

    Parameters
    ----------
    data : PairedData, optional
        Prepared pairs; otherwise give a source as keyword (``input=``/``target=``,
        ``clean=``, ``input_dir=``/``target_dir=``, ``clean_dir=``, ``aligned_dir=``,
        with ``channel_axis=``), see :func:`napari_pix2pix.engine.training.data.make_data`.
    config : TrainConfig, optional
        The run's settings; any :class:`TrainConfig` field may also be given as keyword
        (``recipe=``, ``minutes=``, ``steps=``, ...). None values are decided once the data
        are known ("auto"; see :meth:`TrainConfig.resolve`).
    model_path : path, optional
        Where the final model file is written (also when stopped or failed).
    checkpoint_dir : path, optional
        Folder for ``checkpoint.safetensors`` (resume) and ``best.safetensors`` (best
        validation PSNR). Default: beside `model_path`, in ``<model>.checkpoints``.
    resume : path, optional
        A ``checkpoint.safetensors`` to continue from (weights, optimizers, schedule, random
        state); give the data again. Only the :data:`~.train_config.RESUMABLE` fields may
        change (:func:`~.train_config.resume_config`); ``minutes`` is the additional time.
    stop : threading.Event, optional
        Set it to stop after the current step (the run is saved and the model returned).
    start_from : str, path or Network, optional
        Warm start: a bundled model's name (``"denoise"``), a model file or a model. Its
        network and normalization are used (never modified: a copy is trained); giving
        ``preset`` or ``generator`` as well is an error. See :mod:`.warmstart`.

    Yields
    ------
    StepUpdate, ValidationUpdate, CheckpointSaved, StatusUpdate
    """
    t_call = time.perf_counter()
    cfg, resume_state, src = _run_config(config, resume, start_from, dict(kwargs))
    rank, world = _dist_info()
    cfg, data, start = _prepare(cfg, data, src, start_from, resume_state is not None)
    device = _device_for(cfg, world)
    run = _build(cfg, data, device, rank, world, resume_state, start)
    saver = _saver(cfg, data, run, start, start_from, model_path, checkpoint_dir, rank, world)
    shard = data.planes[rank::world] if len(data.planes) >= world else data.planes
    gan_loss = GANLoss(cfg.gan_mode or "vanilla").to(device)
    valset = make_valset(data, cfg.patch_size or 64, cfg.val_patches, cfg.seed) if rank == 0 else None
    budget = _Budget(cfg.minutes, t_call) if cfg.minutes else None
    t0, start_step, status = time.perf_counter(), run.step, TrainingStatus.RUNNING
    try:
        yield from _begin(run, cfg, start, valset, saver, device)
        while cfg.steps is None or run.step < cfg.steps:
            if stop is not None and stop.is_set():
                status = TrainingStatus.STOPPED
                break
            lr = cfg.lr_at(run.step)  # a time budget's warm-up too: a warm start's ramp is not skipped
            _set_lr(run, lr)
            with run.own_rng():
                losses = _train_step(run, cfg, *_batch(run, cfg, data, shard, device), gan_loss)
            run.step += 1
            elapsed = time.perf_counter() - t0
            rate = (run.step - start_step) / max(elapsed, 1e-9)
            total = cfg.steps or run.step
            yield StepUpdate(run.step, total, losses, lr, elapsed, (total - run.step) / max(rate, 1e-9), rate)
            if budget is not None:
                cfg = yield from _follow_budget(budget, run, cfg, valset, saver, device, world)
                if cfg.steps is None:  # still measuring the speed
                    continue
            if valset is not None and _due(run.step, cfg.val_every or 100, cfg, budget, "val_s"):
                yield from _validation(run, valset, saver, device, cfg, losses)
            if run.step < cfg.total_steps and _due(run.step, cfg.checkpoint_every, cfg, budget, "ckpt_s"):
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
            for buf in run.model.generator.buffers():  # BatchNorm statistics: rank 0's on every rank, as saved
                dist.broadcast(buf.data, src=0)
            dist.barrier()
    yield from saver.save_all(status)
    yield StatusUpdate(run.step, status, cfg)
    model = _finish(run, saver, status, world)
    _close_process_group(synchronize=True)
    return model


def describe(ev: TrainEvent) -> str:
    """A one-line log of an update."""
    if isinstance(ev, StepUpdate):
        ls = " ".join(f"{k}={v:.4f}" for k, v in ev.losses.items())
        return f"step {ev.step}/{ev.total} {ls} lr={ev.lr:.2e} {ev.it_per_s:.2f} it/s eta {ev.eta:.0f}s"
    if isinstance(ev, ValidationUpdate):
        base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
        against = " against the noisy target" if ev.target == "noisy" else ""
        return (f"step {ev.step} validation PSNR {ev.psnr:.2f} dB{base}{against} SSIM {ev.ssim:.3f} "
                f"uncertainty {ev.uncertainty:.4f}")
    if isinstance(ev, StatusUpdate):
        return f"step {ev.step} training {ev.status.value}" + (f": {ev.message}" if ev.message else "")
    return f"step {ev.step} saved {ev.kind}: {ev.path}"
