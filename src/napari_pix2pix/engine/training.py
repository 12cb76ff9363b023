"""The Pix2Pix training loop: a generator of typed updates, checkpoints, resume, DDP.

:func:`train_iter` yields :class:`StepUpdate`, :class:`ValidationUpdate` and
:class:`CheckpointSaved` and returns the trained :class:`Pix2PixModel`; it can be stopped
between any two steps (``close()`` or a `stop` event) and saves a checkpoint when it is
stopped or fails. :func:`train` drains it for scripts and the command line.

Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains data-parallel with
DistributedDataParallel: NCCL on GPUs, gloo on CPUs; each rank draws from its own shard
with its own seed and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..nn import GANLoss, PatchGANConfig, PatchGANDiscriminator, preset_config
from ..nn.losses import GAN_MODES
from ..nn.unet import PRESETS
from .data import PairedData, Plane, make_data, stack_batch
from .device import cpu_has_fast_bf16, resolve_device
from .model import Pix2PixModel
from .modelfile import ModelFileError, read_model_file, write_model_file
from .normalization import Normalization, safe_range
from .predict import run_to_end
from .synthesis import NoiseConfig
from .tasks import TASKS, get_task

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


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
            (self.precision in ("auto", "fp32", "bf16", "fp16"), f"unknown precision {self.precision!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        # builds the generator config for this task's channels: invalid overrides fail here, not at step 0
        multiple = self.generator_config(*get_task(self.task).network_channels(1, 1)).multiple
        if self.patch_size < 32 or self.patch_size % multiple:
            raise ValueError(
                f"patch_size {self.patch_size} must be a multiple of {multiple} (the size multiple of "
                f"{self.preset} with these settings) and at least 32; try {max(multiple, 32 // multiple * multiple)}"
            )

    @property
    def decay(self) -> int:
        """Steps of linear learning-rate decay at the end."""
        return self.steps // 2 if self.decay_steps is None else min(self.decay_steps, self.steps)

    def generator_config(self, cin: int, cout: int) -> Any:
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


# ---------------------------------------------------------------------- typed updates
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


@dataclass(frozen=True)
class CheckpointSaved:
    """A file was written."""

    step: int
    path: str
    kind: str  # "checkpoint", "best", "model"


TrainEvent = StepUpdate | ValidationUpdate | CheckpointSaved


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


# ---------------------------------------------------------------------- checkpoints
def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = v
    for key, v in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, model: Pix2PixModel, disc: nn.Module, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer, step: int, rng: np.random.Generator, extra: dict[str, Any]) -> Path:
    """Write everything needed to resume (atomic, no pickle)."""
    tensors = {f"G.{k}": v for k, v in model.generator.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in disc.state_dict().items()})
    tg, mg = _flatten_optimizer("optG", opt_g)
    td, md = _flatten_optimizer("optD", opt_d)
    tensors.update(tg)
    tensors.update(td)
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {"kind": "training-checkpoint", "step": step, "model": model.metadata, "optG": mg, "optD": md,
            "numpy_rng": rng.bit_generator.state, **extra}
    return write_model_file(path, tensors, meta)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    tensors, meta = read_model_file(path)
    if meta.get("kind") != "training-checkpoint":
        raise ModelFileError(f"{Path(path).name} is a model file, not a training checkpoint; resume from "
                             f"the {CHECKPOINT} in the run's checkpoint folder")
    return tensors, meta


# ---------------------------------------------------------------------- validation
def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    win = min(7, *a.shape[1:]) // 2 * 2 + 1 if min(a.shape[1:]) >= 3 else 3
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=0, win_size=win))


def _pad_to(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        mode = "reflect" if min(h, w) > 1 else "edge"
        widths = [(0, 0)] * (x.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
        x = np.pad(x, widths, mode=mode)  # type: ignore[call-overload]
    return x, (ph // 2, pw // 2)


@dataclass
class _ValSet:
    inputs: list[np.ndarray]  # network inputs (Cin, h, w), normalized
    targets: list[np.ndarray]
    raw_inputs: list[np.ndarray]  # the input image part, normalized (for the baseline)


def _make_valset(data: PairedData, cfg: TrainConfig, seed: int) -> _ValSet | None:
    if not data.val:
        return None
    rng = np.random.default_rng(seed + 7919)
    vs = _ValSet([], [], [])
    size = cfg.patch_size
    for i in range(cfg.val_patches):
        p: Plane = data.val[i % len(data.val)]
        h, w = p.input.shape[1:]
        ch, cw = min(size, h), min(size, w)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        a, b, m = data.degrade(p.input[:, y : y + ch, x : x + cw], p.target[:, y : y + ch, x : x + cw], p, rng)
        net_in, _ = stack_batch([(a, b, m)], data.task)
        vs.inputs.append(net_in[0])
        vs.targets.append(b)
        vs.raw_inputs.append(np.where(m[None], np.float32(0), a) if m is not None else a)  # inpaint: zero fill
    return vs


def _validate(model: Pix2PixModel, vs: _ValSet, device: torch.device, step: int, task: str) -> ValidationUpdate:
    run = model._runner(device, "fp32")  # as prediction runs: eval, running stats, folded BN
    rng_span = 1.6  # the network range of [lo, hi]
    psnrs, ssims, l1s, psnr_in, ssim_in = [], [], [], [], []
    preview = None
    for a, b, raw in zip(vs.inputs, vs.targets, vs.raw_inputs, strict=True):
        padded, (py, px) = _pad_to(a, model.config.multiple)
        out = run(padded[None])[0][:, py : py + a.shape[1], px : px + a.shape[2]]
        if task == "inpaint":  # outside the mask the input is kept, as in prediction
            m = a[-1:] > 0
            out = np.where(m, out, raw)
        psnrs.append(_psnr(out, b, rng_span))
        ssims.append(_ssim(out, b, rng_span))
        l1s.append(float(np.mean(np.abs(out - b))))
        base = np.repeat(raw, b.shape[0], 0) if raw.shape[0] == 1 and b.shape[0] > 1 else raw
        if base.shape == b.shape:
            psnr_in.append(_psnr(base, b, rng_span))
            ssim_in.append(_ssim(base, b, rng_span))
        if preview is None:
            def to01(z: np.ndarray) -> np.ndarray:
                return np.clip((z + 0.8) / 1.6, 0, 1).astype(np.float32)

            preview = (to01(raw), to01(out), to01(b))
    finite = [p for p in psnrs if math.isfinite(p)] or [100.0]
    assert preview is not None
    # uncertainty of the preview patch: spread over the 8 flips/rotations, as in prediction
    a = vs.inputs[0]
    padded, (py, px) = _pad_to(a, model.config.multiple)
    samples = np.stack([model._runner(device, "fp32", augment=k)(padded[None])[0] for k in range(8)])
    spread = samples[:, :, py : py + a.shape[1], px : px + a.shape[2]].std(axis=0, ddof=1).mean(axis=0) / rng_span
    if task == "inpaint":
        spread = np.where(a[-1] > 0, spread, 0)
    return ValidationUpdate(
        step, float(np.mean(finite)), float(np.mean(ssims)),
        float(np.mean(psnr_in)) if psnr_in else None, float(np.mean(ssim_in)) if ssim_in else None,
        float(np.mean(l1s)), preview, float(spread.mean()), spread.astype(np.float32),
    )


# ---------------------------------------------------------------------- the loop
_SOURCE_KEYS = ("input", "target", "clean", "input_dir", "target_dir", "clean_dir", "aligned_dir", "channel_axis")


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in fields(TrainConfig)}
    src = {k: kwargs.pop(k) for k in list(kwargs) if k in _SOURCE_KEYS}
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; see napari_pix2pix.engine.training.TrainConfig")
    return src, kwargs


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
        schedule and random state. The data must be given again.
    stop : threading.Event, optional
        Set it to stop after the current step (the run is saved and the model returned).

    Yields
    ------
    StepUpdate, ValidationUpdate, CheckpointSaved
    """
    src, cfg_kwargs = _split_kwargs(dict(kwargs))
    resume_state = None
    if resume is not None:
        resume_state = load_checkpoint(resume)
        saved = TrainConfig.from_dict(resume_state[1]["config"])
        config = replace(saved, **cfg_kwargs) if cfg_kwargs else saved
    elif config is None:
        config = TrainConfig(**cfg_kwargs)
    elif cfg_kwargs:
        config = replace(config, **cfg_kwargs)
    cfg = config
    rank, world = _dist_info()

    if data is None:
        noise = NoiseConfig(**cfg.noise) if cfg.noise else None
        data = make_data(cfg.task, **src, normalization=Normalization(*cfg.percentiles), noise=noise,
                         val_fraction=cfg.val_fraction, val_split=cfg.val_split, patch_size=cfg.patch_size,
                         seed=cfg.seed)
    elif src:
        raise TypeError("give either data= or a data source, not both")
    if data.task.name != cfg.task:
        raise ValueError(f"the data were prepared for {data.task.name!r} but the config trains {cfg.task!r}")

    device = resolve_device(cfg.device if world == 1 or not torch.cuda.is_available()
                            else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp_dtype = None
    if cfg.precision == "bf16" or (cfg.precision == "auto" and (
            (device.type == "cpu" and cpu_has_fast_bf16()) or device.type == "cuda")):
        amp_dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    elif cfg.precision == "fp16":
        amp_dtype = torch.float16

    # model, discriminator, optimizers
    img_c, tgt_c = data.channels
    cin, cout = data.task.network_channels(img_c, tgt_c)
    norm = data.normalization
    if cfg.task == "translate":  # outputs on the training targets' typical scale
        lo = float(np.median([p.tgt_range[0] for p in data.planes]))
        hi = float(np.median([p.tgt_range[1] for p in data.planes]))
        lo, hi = safe_range(lo, hi)
        norm = replace(norm, output="fixed", out_lo=lo, out_hi=hi)
    torch.manual_seed(cfg.seed + rank)
    model = Pix2PixModel(cfg.task, cfg.preset, config=cfg.generator_config(cin, cout), normalization=norm)
    disc = PatchGANDiscriminator(PatchGANConfig(in_channels=cin + cout, ndf=cfg.ndf, n_layers=cfg.n_layers))
    model.generator.to(device).train()
    disc.to(device).train()
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    rng = np.random.default_rng(cfg.seed + 1000 * rank)
    step = 0
    best = -math.inf
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        tensors, meta = resume_state
        model.generator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        opt_g.load_state_dict(_unflatten_optimizer("optG", tensors, meta["optG"]))
        opt_d.load_state_dict(_unflatten_optimizer("optD", tensors, meta["optD"]))
        torch.set_rng_state(tensors["torch_rng"])
        rng.bit_generator.state = meta["numpy_rng"]
        step = int(meta["step"])
        best = float(meta.get("best", -math.inf))
        history = list(meta.get("history", []))
        model.normalization = Normalization(**meta["model"]["normalization"])
    model.generator.to(device)
    disc.to(device)
    fmt = torch.channels_last if cfg.channels_last and device.type != "mps" else torch.contiguous_format
    model.generator.to(memory_format=fmt)  # type: ignore[call-overload]
    disc.to(memory_format=fmt)  # type: ignore[call-overload]

    g_net: nn.Module = model.generator
    d_net: nn.Module = disc
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        g_net, d_net = DDP(model.generator, device_ids=ids), DDP(disc, device_ids=ids)
    shard = data.planes[rank::world] if len(data.planes) >= world else data.planes
    gan_loss = GANLoss(cfg.gan_mode).to(device)
    adversarial = cfg.gan_weight > 0  # without it, D is neither run nor trained
    l1 = nn.L1Loss()
    valset = _make_valset(data, cfg, cfg.seed) if rank == 0 else None

    writes = rank == 0
    model_path = Path(model_path) if model_path is not None else None
    if checkpoint_dir is None and model_path is not None:
        checkpoint_dir = model_path.with_name(model_path.stem + ".checkpoints")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    summary: dict[str, Any] = {"config": cfg.to_dict(), "n_train_planes": len(data.planes),
                               "n_val_planes": len(data.val), "synthesized": data.synthesize,
                               "world_size": world}

    def finish_metadata(status: str) -> None:
        model.training = {**summary, "steps_done": step, "status": status, "best_val_psnr": best,
                          "history": history[-200:]}

    def save_all(status: str) -> list[CheckpointSaved]:
        if not writes:
            return []
        finish_metadata(status)
        out = []
        if ckpt_dir is not None:
            p = save_checkpoint(ckpt_dir / CHECKPOINT, model, disc, opt_g, opt_d, step, rng,
                                {"config": cfg.to_dict(), "best": best, "history": history[-200:], "status": status})
            out.append(CheckpointSaved(step, str(p), "checkpoint"))
        if model_path is not None:
            out.append(CheckpointSaved(step, str(model.save(model_path)), "model"))
        return out

    t0 = time.perf_counter()
    start_step = step
    status = "running"
    try:
        while step < cfg.steps:
            if stop is not None and stop.is_set():
                status = "stopped"
                break
            lr = cfg.lr_at(step)
            for opt in (opt_g, opt_d):
                for g in opt.param_groups:
                    g["lr"] = lr
            a_np, b_np = stack_batch([data.sample(rng, cfg.patch_size, cfg.augment, shard)
                                      for _ in range(cfg.batch_size)], data.task)
            a = torch.from_numpy(a_np).to(device).contiguous(memory_format=fmt)
            b = torch.from_numpy(b_np).to(device).contiguous(memory_format=fmt)
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise TrainingDiverged(f"training data contain NaN or infinite values at step {step + 1}; "
                                       "clean the images (numpy.nan_to_num) and start again")
            autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
            with autocast:
                fake = g_net(a)
            if adversarial:
                with autocast:  # D step: real pairs -> 1, generated pairs -> 0
                    loss_d = 0.5 * (gan_loss(d_net(a, b), True) + gan_loss(d_net(a, fake.detach()), False))
                if not torch.isfinite(loss_d):
                    raise TrainingDiverged(f"the discriminator loss became {loss_d.item()} at step {step + 1}")
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(disc.parameters(), cfg.grad_clip)
                opt_d.step()
                for p in disc.parameters():
                    p.requires_grad_(False)
            # G step: fool D and stay close to the target
            with autocast:
                loss_g_gan = gan_loss(d_net(a, fake), True) if adversarial else fake.new_zeros(())
                loss_g_l1 = l1(fake.float(), b)
                loss_g = cfg.gan_weight * loss_g_gan + cfg.lambda_l1 * loss_g_l1
            if adversarial:
                for p in disc.parameters():
                    p.requires_grad_(True)
            if not torch.isfinite(loss_g):
                raise TrainingDiverged(f"the generator loss became {loss_g.item()} at step {step + 1}")
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.generator.parameters(), cfg.grad_clip)
            opt_g.step()
            step += 1

            elapsed = time.perf_counter() - t0
            rate = (step - start_step) / max(elapsed, 1e-9)
            losses = {"G_GAN": loss_g_gan.item(), "G_L1": loss_g_l1.item(), "D": loss_d.item() if adversarial else 0.0}
            yield StepUpdate(step, cfg.steps, losses, lr, elapsed, (cfg.steps - step) / max(rate, 1e-9), rate)

            if valset is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                model.generator.eval()
                v = _validate(model, valset, device, step, cfg.task)
                model.generator.train()
                history.append({"step": step, **losses, "val_psnr": v.psnr, "val_ssim": v.ssim,
                                "val_psnr_input": v.psnr_input, "val_l1": v.l1, "val_uncertainty": v.uncertainty})
                yield v
                if v.psnr > best:
                    best = v.psnr
                    if ckpt_dir is not None and writes:
                        finish_metadata("best")
                        yield CheckpointSaved(step, str(model.save(ckpt_dir / BEST)), "best")
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                for ev in save_all("running"):
                    yield ev
        else:
            status = "finished"
    except GeneratorExit:  # closed by the consumer: save and stop
        status = "stopped"
        save_all(status)
        raise
    except BaseException:
        status = "failed"
        save_all(status)  # the weights are the last good ones: no step is taken on a bad loss
        raise
    finally:
        if world > 1 and dist.is_initialized() and status != "running":
            dist.barrier()
    for ev in save_all(status):
        yield ev
    model.generator.to("cpu").eval()
    finish_metadata(status)
    return model


def train(progress: Callable[[TrainEvent], Any] | None = None, **kwargs: Any) -> Pix2PixModel:
    """Train a Pix2Pix model and return it; see :func:`train_iter` for the arguments.

    Examples
    --------
    >>> from skimage import data
    >>> import napari_pix2pix as p2p
    >>> model = p2p.train(clean=data.camera(), task="denoise", steps=2, patch_size=64,
    ...                   preset="unet_tiny", val_fraction=0)  # doctest: +SKIP
    """
    return run_to_end(train_iter(**kwargs), progress)


def describe(ev: TrainEvent) -> str:
    """A one-line log of an update."""
    if isinstance(ev, StepUpdate):
        ls = " ".join(f"{k}={v:.4f}" for k, v in ev.losses.items())
        return f"step {ev.step}/{ev.total} {ls} lr={ev.lr:.2e} {ev.it_per_s:.2f} it/s eta {ev.eta:.0f}s"
    if isinstance(ev, ValidationUpdate):
        base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
        return (f"step {ev.step} validation PSNR {ev.psnr:.2f} dB{base} SSIM {ev.ssim:.3f} "
                f"uncertainty {ev.uncertainty:.4f}")
    return f"step {ev.step} saved {ev.kind}: {ev.path}"


def history_json(model: Pix2PixModel) -> str:
    """The training history stored in a model, as JSON."""
    return json.dumps(model.training.get("history", []), indent=1)
