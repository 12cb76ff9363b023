"""A run's set-up: its settings (or a checkpoint's), its data, its starting model, its plan, its networks.

:func:`run_config` turns :func:`~.loop.train_iter`'s arguments into the config as given (or
the checkpoint's, by the resume rule); :func:`prepare` loads the starting model once, prepares
the pairs and decides the plan; :func:`build` makes the networks, optimisers and the run's own
random state, restored from the checkpoint when resuming.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ...nn import PatchGANConfig, PatchGANDiscriminator
from ..core.device import autocast_dtype
from ..core.network import Network
from ..core.normalization import Normalization, safe_range
from ..formats.networks import network_from_metadata
from ..images.noise import NoiseModel, NoisyCleanImagesWarning, estimate_noise
from ..images.synthesis import NoiseConfig
from ..predict.runner import forget_after_steps
from .checkpoints import load_checkpoint, unflatten_optimizer
from .config import RESUMABLE, TrainConfig, resume_config, split_kwargs
from .data import PairedData, check_patch, make_data, patch_shape
from .plan import RunPlan, make_plan
from .recipes import AUTO_START, AUTO_START_3D
from .state import Best, Ema, Randomness, Run
from .validation import VAL_SCHEME
from .warmstart import StartFrom, load_start, start_model

# Default intensity augmentation (PairedData.intensity) of a warm start: a model fine-tuned on one image then
# meets other images' percentile normalization (measured on the dev images: cell denoise 27.0 -> 36.8 dB).
INTENSITY_AUGMENT_WARM = 0.9
Checkpoint = tuple[dict[str, torch.Tensor], dict[str, Any]]


def run_config(config: TrainConfig | None, resume: str | os.PathLike[str] | None, start_from: Any,
               kwargs: dict[str, Any]) -> tuple[TrainConfig, Checkpoint | None, dict[str, Any]]:
    """(settings as given, checkpoint to resume or None, data source keywords) from train_iter's arguments.

    A resumed run's settings are the checkpoint's (its config with its plan's decisions), with
    only the resumable options changed (:func:`~.config.resume_config`).
    """
    src, changes = split_kwargs(kwargs)
    if start_from is not None:
        changes["start_from"] = start_from.name if isinstance(start_from, Network) else str(start_from)
    if resume is not None:
        state = load_checkpoint(resume)
        saved = checkpoint_config(state[1])
        if config is not None:  # a config given with resume: its resumable options apply
            changes = {**{k: getattr(config, k) for k in RESUMABLE}, **changes}
        return resume_config(saved, changes), state, src
    if config is None:
        return TrainConfig(**changes), None, src
    return config.with_options(**changes), None, src


def checkpoint_config(meta: dict[str, Any]) -> TrainConfig:
    """The settings a checkpoint's run continues with: its config with its plan's decisions.

    The steps a time budget fixed replace the budget (a resumed run's ``minutes`` are more time).
    """
    plan = meta.get("plan", {})
    out = {**meta["config"], **plan}
    if plan.get("steps") is not None:
        out["minutes"] = None
    return TrainConfig.from_dict(out)


def training_data(cfg: TrainConfig, source: dict[str, Any], split_patch: Any = None) -> PairedData:
    """Training pairs for `cfg` from one source (``input``/``target``, ``clean``, folders, ...).

    Raises the engine's ValueError/TypeError for bad choices (shapes that differ, an empty
    folder, a patch larger than an image, ...), before any training. With an "auto" patch
    size the images need only be as large as the smallest patch (32 px). The held-out part
    is cut to hold at least one patch: `split_patch` (a resumed run: the patch its first run cut
    for, :func:`split_patch_of`) or the config's.
    """
    d = cfg.data
    noise = NoiseConfig(**d.noise) if d.noise else None
    patch = split_patch or d.patch_size or _smallest(cfg.dims)  # "auto": decided after, to fit
    return make_data(cfg.task, **source, normalization=Normalization(*d.percentiles), noise=noise,
                     val_fraction=d.val_fraction, val_split=d.val_split, patch_size=patch,
                     seed=cfg.runtime.seed, dims=cfg.dims, z_context=cfg.network.z_context)


def _smallest(dims: int) -> int | tuple[int, ...]:
    return 32 if dims == 2 else (1, 32, 32)


def split_patch_of(meta: dict[str, Any]) -> int | tuple[int, ...]:
    """The patch a checkpoint's run cut its held-out part for: its config's, or the smallest (an automatic size).

    A resumed run cuts the same part, so that it validates on exactly the patches of the run
    it continues (its plan's patch size, decided later, may be larger).
    """
    given = meta["config"].get("patch_size")
    if given:
        return tuple(given) if isinstance(given, list) else int(given)
    dims = meta.get("plan", {}).get("spatial_dims") or meta["config"].get("spatial_dims") or 2
    return _smallest(int(dims))


def _start(cfg: TrainConfig, start_from: StartFrom | None, resuming: bool) -> tuple[StartFrom | None, bool]:
    """(what the run starts from, whether it was chosen automatically)."""
    if start_from is None and not resuming:
        start_from = cfg.network.start_from
    auto = start_from in (None, "auto")
    if auto or start_from == "scratch" or resuming:
        starts = AUTO_START_3D if cfg.dims == 3 else AUTO_START
        start_from = starts.get(cfg.task) if auto and cfg.warm and not resuming else None
    return start_from, auto


def prepare(cfg: TrainConfig, data: PairedData | None, src: dict[str, Any], start_from: StartFrom | None,
            resuming: bool, split_patch: Any = None) -> tuple[RunPlan, PairedData, Network | None]:
    """The run's plan, its data and its starting model (warm start, loaded once).

    What the run finds (the starting model's percentiles and dimensions, where it starts from)
    and decides (the recipe's options, the automatic sizes) goes into the plan; `cfg` is left as
    given, and a `data` given is not modified (the run's normalization goes into a copy).
    """
    start = loaded = None
    start_from, auto = _start(cfg, start_from, resuming)
    found = cfg
    if start_from is not None:  # the starting model's normalization is the data's
        loaded = load_start(start_from)  # the run's own copy, loaded once
        found = found.with_options(percentiles=(loaded.normalization.low, loaded.normalization.high))
        if not auto and cfg.network.spatial_dims is None and not cfg.network.z_context:  # a named model's dims
            found = found.with_options(spatial_dims=loaded.spatial_dims, z_context=loaded.z_context)
    if data is None:
        data = training_data(found, src, split_patch)
    elif src:
        raise TypeError("give either data= or a data source, not both")
    if data.task.name != cfg.task:
        raise ValueError(f"the data were prepared for {data.task.name!r} but the config trains {cfg.task!r}")
    found = _self_supervised(found, data)
    if found.recipe_spec.name == "noise2noise" and data.synthesize:
        raise ValueError("noise2noise trains on pairs of two noisy acquisitions (input= and target=, or folders), "
                         "not on clean images: with clean images use the fidelity recipe")
    z = found.network.z_context
    plane_channels = data.channels[0] // (2 * z + 1)
    if auto and start_from is not None and (plane_channels, data.channels[1]) != (1, 1):
        start_from = None  # the bundled starting models are for 1-channel planes (2.5D: the plane's) and volumes
    if start_from is not None and loaded is not None:
        start = start_model(loaded, data.task, *data.channels, spatial_dims=found.dims, z_context=z)
        if auto:
            start.source = f"{start_from} (automatic)"
        else:
            found = found.with_options(start_from=start.name if isinstance(start_from, Network) else str(start_from))
        arch = start.config
    else:
        arch = found.generator_config(*data.task.network_channels(plane_channels, data.channels[1]))
    d = cfg.data
    intensity = d.intensity_augment if d.intensity_augment is not None else (
        INTENSITY_AUGMENT_WARM if start is not None else 0.0)
    data = replace(data, normalization=_output_normalization(cfg, data, start),  # targets on the outputs' scale
                   intensity=intensity)
    if auto and start_from is None and cfg.network.preset is None:  # automatic, nothing fitting: a new network
        found = found.with_options(start_from="scratch")
    noise = _estimated_noise(data) if data.self_supervised else None
    if not resuming and (share := clean_images_noise(data)) is not None and share >= NOISY_CLEAN:
        warnings.warn(noisy_clean_message(share), NoisyCleanImagesWarning, stacklevel=2)
    plan = make_plan(found, min_size=data.min_size(), arch=arch, warm=start is not None,
                     noise_model=noise.to_dict() if noise is not None else None)
    check_patch(data.planes, patch_shape(plan.patch_size, data.dims), "")
    return plan, data, start


NOISY_CLEAN = 0.35  # their own noise / the noise the pairs add (typical microscopy references: <= 0.3)


def clean_images_noise(data: PairedData, planes: int = 8, crop: int = 1024) -> float | None:
    """How noisy a denoiser's clean images are: their own noise over the noise its pairs add.

    Both on the clean images' [0, 1] scale: their noise is estimated (wavelet MAD,
    :func:`skimage.restoration.estimate_sigma`, on a central crop of up to `crop` px of a few
    planes; the median), the noise the pairs add is the median standard deviation of the
    noise config's draws at the images' mean intensity. None unless the pairs are synthesized
    for denoising. A clean image that is really clean gives ~0.0-0.1, a real microscope
    reference up to ~0.3, a noisy image given as clean ~1.
    """
    from skimage.restoration import estimate_sigma

    if not (data.synthesize and data.task.name == "denoise"):
        return None
    own, means = [], []
    for p in [*data.planes, *data.val][:planes]:
        t = p.target
        while t.ndim > 3:  # a volume (C, Z, Y, X): its middle plane
            t = t[:, t.shape[1] // 2]
        h, w = t.shape[-2:]
        y0, x0 = max((h - crop) // 2, 0), max((w - crop) // 2, 0)
        t = np.asarray(t[:, y0: y0 + crop, x0: x0 + crop], np.float32)
        if min(t.shape[-2:]) < 8:
            continue
        own.append(float(np.mean([estimate_sigma(c) for c in t])))
        means.append(float(np.clip(t.mean(), 0, None)))
    if not own:
        return None
    rng = np.random.default_rng(0)
    mean = float(np.median(means))
    added = []
    for _ in range(256):
        d = (data.synth or NoiseConfig()).draw(rng)
        added.append(math.sqrt(mean / d["photons"] + d["sigma"] ** 2) if d["photons"] > 0 else d["sigma"])
    typical = float(np.median(added))
    return float(np.median(own)) / typical if typical > 0 else None


def noisy_clean_message(share: float) -> str:
    """What a user whose clean images are noisy is told, and what to do."""
    return (f"the clean images look noisy: their own noise is about {share:.0%} of the noise added to make the "
            "training inputs, and a denoiser trained on pairs synthesized from them learns to keep it. Denoise them "
            "first (the Denoise widget, or p2p.denoise), or learn from the noisy images alone (Train: target 'none — "
            "learn from the noisy images'; p2p.train(input=noisy, task='denoise'))")


def _self_supervised(cfg: TrainConfig, data: PairedData) -> TrainConfig:
    """Noisy images alone train with noise2self (its default); noise2self needs noisy images alone."""
    recipe = cfg.recipe_options.recipe
    if data.self_supervised:
        if recipe not in (None, "noise2self"):
            raise ValueError(f"noisy images alone (no target) train with the noise2self recipe, not {recipe!r}: give "
                             f"the targets (target= or target_dir=) to train with {recipe}")
        return cfg.with_options(recipe="noise2self")
    if recipe == "noise2self":
        raise ValueError("noise2self learns from noisy images alone: give input= (or input_dir=) without a target; "
                         "with a second acquisition of the same field use recipe='noise2noise'")
    return cfg


def _estimated_noise(data: PairedData, planes: int = 8) -> NoiseModel | None:
    """The noise of the training images (the median of a few planes' estimates); None where it cannot be told."""
    found = []
    for p in data.planes[:planes]:
        own = p.input[: p.input.shape[0] // (2 * data.z_context + 1)]  # 2.5D: the plane itself
        try:
            found.append(estimate_noise(own.reshape(-1, *own.shape[-2:]), channel_axis=0))
        except ValueError:
            continue
    if not found:
        return None
    return NoiseModel(*(float(np.median([getattr(m, k) for m in found])) for k in ("gain", "offset", "read")))


def _output_normalization(cfg: TrainConfig, data: PairedData, start: Network | None) -> Normalization:
    """How the model will normalize, decided from the data (training then normalizes the same way).

    A warm start keeps the starting model's. Otherwise each plane is normalized by its own
    percentiles (``normalization="plane"``), except for ``translate`` from real pairs, where
    every image is normalized by the training data's typical percentiles
    (``normalization="dataset"``, as CARE does: per-plane percentiles of an image whose content
    differs would shift its outputs on the fixed output scale), and its outputs are on the
    targets' typical scale.
    """
    given = cfg.data.normalization
    if start is not None and given is None:
        return start.normalization
    norm = start.normalization if start is not None else data.normalization
    mode = given or ("dataset" if cfg.task == "translate" and not data.synthesize else "plane")
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


def _generator(cfg: TrainConfig, plan: RunPlan, data: PairedData, start: Network | None,
               resume_state: Checkpoint | None) -> Network:
    """The network to train: the checkpoint's, the starting model's (the run's own copy), or a new one."""
    if resume_state is not None:  # the architecture the checkpoint was made with (weights: _restore)
        saved: Network = network_from_metadata(resume_state[1]["model"])
        return Network(cfg.task, saved.preset, normalization=saved.normalization, name=saved.name,
                       z_context=saved.z_context, generator=saved.generator)
    if start is not None:  # trains the start's generator itself: load_start made it the run's own
        return Network(cfg.task, start.preset, normalization=data.normalization, z_context=start.z_context,
                       generator=start.generator)
    image_c = data.channels[0] // (2 * plan.z_context + 1)  # a 2.5D plane carries its neighbours as channels
    cin, cout = data.task.network_channels(image_c, data.channels[1])
    arch = cfg.with_options(spatial_dims=plan.spatial_dims).generator_config(cin, cout)
    return Network(cfg.task, plan.preset or "unet_tiny", config=arch, normalization=data.normalization,
                   z_context=plan.z_context)


def _disc_config(plan: RunPlan, channels: int) -> PatchGANConfig:
    """The discriminator of a recipe: scales that fit the patch (the last sees at least 32 px)."""
    r = plan.losses
    patch = min(patch_shape(plan.patch_size, plan.spatial_dims)[-2:])  # Y, X: a volume's Z is not halved
    scales = max(1, min(r.d_scales or 1, int(math.log2(max(patch, 32) / 32)) + 1))
    return PatchGANConfig(in_channels=channels, ndf=r.ndf or 64, n_layers=r.n_layers or 3, scales=scales,
                          spectral_norm=bool(r.spectral_norm), spatial_dims=plan.spatial_dims)


def build(cfg: TrainConfig, plan: RunPlan, data: PairedData, device: torch.device, rank: int, world: int,
          resume_state: Checkpoint | None, start: Network | None) -> Run:
    """Networks and optimisers for the plan and `data`, restored from `resume_state` when resuming.

    Random initial weights come from the run's own seeded torch state (`seed` + rank), not the caller's.
    """
    seed = cfg.runtime.seed
    gpu = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpu):
        torch.manual_seed(seed + rank)  # the CPU's and every GPU's generator, inside the fork only
        model = _generator(cfg, plan, data, start, resume_state)
        cin, cout = model.config.in_channels, model.config.out_channels
        disc = PatchGANDiscriminator(_disc_config(plan, cin + cout)) if plan.losses.gan_weight else None
        random = Randomness(np.random.default_rng(seed + 1000 * rank), torch.get_rng_state(),
                            torch.cuda.get_rng_state(device) if gpu else None)
    betas = (plan.beta1, cfg.schedule.beta2)
    amp_dtype = autocast_dtype(cfg.runtime.precision, device, plan.spatial_dims)
    flat = cfg.runtime.channels_last and device.type != "mps" and plan.spatial_dims == 2
    fmt = torch.channels_last if flat else torch.contiguous_format
    for net in (model.generator, disc):  # on the device before the optimisers load their state onto it
        if net is not None:
            net.to(device)
            net.to(memory_format=fmt)  # type: ignore[call-overload]
    run = Run(model, disc, torch.optim.Adam(model.generator.parameters(), lr=plan.lr, betas=betas),
              torch.optim.Adam(disc.parameters(), lr=plan.lr, betas=betas) if disc is not None else None,
              _grad_scaler(device, amp_dtype == torch.float16), random, amp_dtype, fmt)
    forget_after_steps(run.opt_g, model.generator)  # cached inference copies (validation) follow the weights
    if resume_state is not None:
        _restore(run, *resume_state)
    run.freeze_norm = plan.freeze_norm
    run.train_mode()
    if plan.losses.ema:
        run.ema = Ema(model.generator, plan.losses.ema)
        if resume_state is not None and any(k.startswith("E.") for k in resume_state[0]):
            run.ema.state = {k[2:]: v.to(device) for k, v in resume_state[0].items() if k.startswith("E.")}
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        run.g_net = DDP(model.generator, device_ids=ids)
        run.d_net = DDP(disc, device_ids=ids) if disc is not None else None
    return run


def _restore(run: Run, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Load a checkpoint's weights, optimiser and random state into `run` (networks already on their device)."""
    run.model.generator.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
    run.opt_g.load_state_dict(unflatten_optimizer("optG", tensors, meta["optG"]))
    if run.disc is not None and run.opt_d is not None and any(k.startswith("D.") for k in tensors):
        run.disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        if meta.get("optD") is not None:
            run.opt_d.load_state_dict(unflatten_optimizer("optD", tensors, meta["optD"]))
    if meta.get("grad_scaler") and run.scaler.is_enabled():
        run.scaler.load_state_dict(meta["grad_scaler"])
    run.random.torch_rng = tensors["torch_rng"]
    run.random.numpy_rng.bit_generator.state = meta["numpy_rng"]
    run.step = int(meta["step"])
    best = {k[2:]: v for k, v in tensors.items() if k.startswith("B.")}
    run.best = Best(float(meta.get("best", -math.inf)), best or None, meta.get("best_step"),
                    rescore=meta.get("val_scheme") != VAL_SCHEME)  # scored on other patches: score it again
    run.history = list(meta.get("history", []))
    run.model.normalization = Normalization(**meta["model"]["normalization"])
