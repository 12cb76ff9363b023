"""A run's state: its networks and optimisers, its own random numbers, its best weights; and what it saves.

:class:`Run` holds everything a step changes; :class:`Saver` writes the model file and the
resumable checkpoint (rank 0 only) and keeps the model's training summary: the config as
given, the run's plan (what it decided), and how it went.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...nn import PatchGANDiscriminator
from ..core.network import Network
from ..core.progress import CheckpointSaved, TrainingStatus
from ..formats.networks import write_network
from .checkpoints import BEST, CHECKPOINT, save_checkpoint
from .config import TrainConfig
from .data import PairedData
from .plan import RunPlan
from .validation import VAL_SCHEME


class Ema:
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
class Randomness:
    """A run's own random numbers: numpy's for patches and degradations, torch's (and a GPU's) for dropout."""

    numpy_rng: np.random.Generator
    torch_rng: torch.Tensor  # torch's CPU generator state; the caller's global one is never touched
    cuda_rng: torch.Tensor | None = None  # ... and the GPU's, on a GPU

    @contextlib.contextmanager
    def torch_scope(self, device: torch.device) -> Iterator[None]:
        """Torch's random numbers from the run's own state for the time being (the global state is restored)."""
        cuda = [device] if self.cuda_rng is not None and device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.set_rng_state(self.torch_rng)
            if cuda and self.cuda_rng is not None:
                torch.cuda.set_rng_state(self.cuda_rng, device)
            yield
            self.torch_rng = torch.get_rng_state()
            if cuda:
                self.cuda_rng = torch.cuda.get_rng_state(device)


@dataclass
class Best:
    """The best validation so far: its score, its step and the weights that scored it."""

    psnr: float = -math.inf
    weights: dict[str, torch.Tensor] | None = None  # the generator (EMA if on) at the best validation
    step: int | None = None
    rescore: bool = False  # a resumed checkpoint's best score comes from another validation scheme
    update: Any = None  # the best ValidationUpdate of this session (estimated scores are compared patch by patch)


@dataclass
class Run:
    """The state of a run: networks, optimisers, random state, progress."""

    model: Network
    disc: PatchGANDiscriminator | None  # None when the recipe has no adversarial term
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: Any  # torch.amp.GradScaler: enabled for fp16 only
    random: Randomness
    amp_dtype: torch.dtype | None
    memory_format: torch.memory_format
    ema: Ema | None = None
    g_net: nn.Module = field(init=False)  # the networks as called (DDP wrappers under torchrun)
    d_net: nn.Module | None = field(init=False)
    step: int = 0
    best: Best = field(default_factory=Best)
    history: list[dict[str, Any]] = field(default_factory=list)
    fp32_from: int | None = None  # the step from which a bf16 run went on in fp32 (non-finite bf16 gradients)
    freeze_norm: bool = False  # the generator's BatchNorm layers keep their running statistics (fine-tuning)

    def __post_init__(self) -> None:
        self.g_net, self.d_net = self.model.generator, self.disc

    @property
    def device(self) -> torch.device:
        """Where the networks are."""
        return next(self.model.generator.parameters()).device

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
        if self.best.weights is not None:
            current = {k: v.detach().clone() for k, v in net.state_dict().items()}
            net.load_state_dict(self.best.weights)
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


class Saver:
    """Writes the model file and the checkpoint (rank 0 only) and keeps the model's training summary.

    The summary holds the config as given (``config``), the run's plan (``plan``: what it
    decided, updated when a time budget fixes the steps) and how the run went.
    """

    def __init__(self, cfg: TrainConfig, plan: RunPlan, data: PairedData, run: Run,
                 model_path: str | os.PathLike[str] | None, checkpoint_dir: str | os.PathLike[str] | None,
                 writes: bool, world: int, extra: dict[str, Any]) -> None:
        self.cfg, self.plan, self.run, self.writes = cfg, plan, run, writes
        self.model_path = Path(model_path) if model_path is not None else None
        if checkpoint_dir is None and self.model_path is not None:
            checkpoint_dir = self.model_path.with_name(self.model_path.stem + ".checkpoints")
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.summary: dict[str, Any] = {"n_train_planes": len(data.planes), "n_val_planes": len(data.val),
                                        "synthesized": data.synthesize, "world_size": world, **extra}

    def finish_metadata(self, status: TrainingStatus) -> None:
        """The model's training summary as the run stands."""
        r = self.run
        r.model.training_summary = {
            "config": self.cfg.to_dict(), "plan": self.plan.to_dict(), **self.summary, "steps_done": r.step,
            "status": status.value, "best_val_psnr": r.best.psnr,
            "weights_of_step": r.best.step if r.best.step is not None else r.step,  # (step 0: the start's)
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
            extra = {"config": self.cfg.to_dict(), "plan": self.plan.to_dict(), "best": r.best.psnr,
                     "val_scheme": VAL_SCHEME, "history": r.history[-200:], "status": status.value,
                     "grad_scaler": r.scaler.state_dict() if r.scaler.is_enabled() else None,
                     "best_step": r.best.step}
            more = {f"E.{k}": v for k, v in r.ema.state.items()} if r.ema is not None else {}
            more.update({f"B.{k}": v for k, v in (r.best.weights or {}).items()})
            p = save_checkpoint(self.ckpt_dir / CHECKPOINT, r.model, r.disc, r.opt_g, r.opt_d, r.step,
                                r.random.numpy_rng, r.random.torch_rng, extra, more)
            out.append(CheckpointSaved(r.step, str(p), "checkpoint"))
        if self.model_path is not None:
            out.append(CheckpointSaved(r.step, str(self._model_file(self.model_path)), "model"))
        return out

    def save_best(self) -> list[CheckpointSaved]:
        """The best weights so far, as ``best.safetensors`` in the checkpoint folder."""
        if self.ckpt_dir is None or not self.writes:
            return []
        self.finish_metadata(TrainingStatus.BEST)
        return [CheckpointSaved(self.run.step, str(self._model_file(self.ckpt_dir / BEST)), "best")]
