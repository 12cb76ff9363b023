"""The settings of a training run: :class:`TrainConfig` in parts, one table of options, and the resume rule.

A config is what the user asked for. Options left at None are "from the recipe" (the loss,
discriminator and optimiser options, see :data:`~.recipes.RECIPES`) or "auto" (batch size,
patch size, learning rate, steps, validation interval); what the run decides for them is its
:class:`~.plan.RunPlan`, stored beside the config in the model file.

Every option is a field of one of five frozen parts — :class:`NetworkOptions`,
:class:`RecipeOptions`, :class:`ScheduleOptions`, :class:`DataOptions`,
:class:`RuntimeOptions` — whose field metadata (help, command-line kind, resumable, widget)
is the one table (:data:`OPTIONS`) from which the command line, the Train widget's Advanced
fields and the resume rule are made. ``TrainConfig(steps=100, recipe="paper")`` takes the
options by name, and ``config.steps`` reads one.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from ...nn import preset_config
from ...nn.losses import GAN_MODES
from ...nn.unet import PRESETS, PRESETS_3D, UNetConfig
from ..core.device import DEVICES, PRECISIONS
from ..core.tasks import TASKS, get_task
from .recipes import DEFAULT_PRESET, DEFAULT_PRESET_3D, DEFAULT_RECIPES, PIXEL_LOSSES, RECIPES, SELF_SUPERVISED, Recipe

# keyword arguments of train()/train_iter() that name the data rather than settings
SOURCE_KEYS = ("input", "target", "clean", "input_dir", "target_dir", "clean_dir", "aligned_dir", "channel_axis")


def option(default: Any = None, help: str = "", *, cli: str | None = None, choices: Any = None,
           resumable: bool = False, widget: dict[str, Any] | None = None, factory: Any = None) -> Any:
    """A config field with its entry in the table of options.

    Parameters
    ----------
    default, factory
        The default (None: from the recipe, or "auto"), or a factory for mutable defaults.
    help : str
        One line for the command line's help and the widget's tooltip.
    cli : str, optional
        How the command line reads it: "int+" (positive), "int0" (non-negative), "int", "float+",
        "float0", "choice" (one of `choices`), "flag", "patch" (an int or z,y,x), "str"; None: not on
        the command line (set through ``--config`` JSON).
    resumable : bool
        A resumed run may change it (:func:`resume_config`).
    widget : dict, optional
        Its field in the Train widget's Advanced section, as plain data: ``label``, ``row`` (its
        place), and for numbers ``max``, ``step``, ``decimals``, ``suffix`` and ``scale`` (shown
        value = value x scale). None: not in the widget.
    """
    meta = {"help": help, "cli": cli, "choices": choices, "resumable": resumable, "widget": widget}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NetworkOptions:
    """Which network trains: a new one of a preset, or a trained one to start from; its dimensions."""

    preset: str | None = option(help="a new network's size: unet_tiny (default), unet_small, unet_128, unet_256 "
                                "(the paper's), unet3d_tiny, unet3d_small", cli="choice", choices=tuple(PRESETS))
    generator: dict[str, Any] = option(factory=dict, help="UNetConfig overrides of the preset (ngf, levels, ...)")
    start_from: str | None = option(help="warm start: a bundled model's name (e.g. denoise) or a model file; "
                                    "'scratch' for a new network; default: the task's bundled model where it "
                                    "fits", cli="str")
    spatial_dims: int | None = option(help="3: a 3D network for volumes (Z, Y, X); default 2 (images; stacks plane "
                                      "by plane)", cli="choice", choices=(2, 3))
    z_context: int = option(0, "2.5D: a 2D network sees each plane with this many neighbours on either side",
                            cli="int0")
    channels: int | None = option(help="image channels (default: from the data)")
    out_channels: int | None = option(help="translate: target channels (default: from the data)")


@dataclass(frozen=True)
class RecipeOptions:
    """How the network learns: the recipe and the losses it fills (None: the recipe's)."""

    recipe: str | None = option(help="how to train: " + "; ".join(f"{r.name}: {r.description}"
                                                                  for r in RECIPES.values())
                                + " (default: fidelity; colorize: paper)", cli="choice", choices=tuple(RECIPES))
    gan_weight: float | None = option(help="weight of the adversarial term (0: no discriminator)", cli="float0")
    lambda_l1: float | None = option(help="weight of the pixel loss (the paper's 100)", cli="float0",
                                     widget={"label": "Pixel-loss weight", "row": 3, "max": 10_000, "decimals": 2})
    pixel_loss: str | None = option(help="l1 or l2 (noise2noise: l2)", cli="choice", choices=PIXEL_LOSSES)
    gan_mode: str | None = option(help="vanilla (the paper's) or lsgan", cli="choice", choices=GAN_MODES)
    ndf: int | None = option(help="discriminator width (the recipe's: 64)", cli="int+")
    n_layers: int | None = option(help="discriminator depth: 3 is the paper's 70x70 PatchGAN", cli="int+")
    gan_warmup: float | None = option(help="share of the steps on the pixel loss alone before the adversarial term")
    gan_ramp: float | None = option(help="share of the steps over which the adversarial term then ramps up")
    ema: float | None = option(help="EMA decay of the generator's weights for validation and the saved model "
                               "(e.g. 0.999; 0: off)", cli="float0")
    d_scales: int | None = option(help="multi-scale discriminator: 1 (the paper's) to 4 (pix2pixHD: 3)", cli="int+")
    spectral_norm: bool | None = option(help="spectral normalisation in the discriminator", cli="flag")
    feature_matching: float | None = option(help="feature-matching weight (pix2pixHD: 10; 0: off)", cli="float0")
    r1: float | None = option(help="R1 gradient-penalty weight on real pairs (0: off)", cli="float0")
    self_supervised: str | None = option(help="learning from noisy images alone: 'blind-spot' (masked pixels are "
                                         "predicted from their neighbours; noise2self's); 'none' for pairs",
                                         cli="choice", choices=SELF_SUPERVISED)


@dataclass(frozen=True)
class ScheduleOptions:
    """How long and how fast: steps or a time budget, the learning-rate schedule, validation and checkpoints."""

    steps: int | None = option(help="training steps (default 2000)", cli="int+", resumable=True)
    minutes: float | None = option(help="time budget of the whole run: the steps are derived from the measured "
                                   "speed", cli="float+", resumable=True)
    lr: float | None = option(help="Adam's learning rate (default: the recipe's, lower for a warm start)",
                              cli="float+", widget={"label": "Learning rate", "row": 2, "max": 1.0, "step": 1e-4,
                                                    "decimals": 6})
    beta1: float | None = option(help="Adam's beta1 (default: the recipe's)")
    beta2: float = option(0.999, "Adam's beta2")
    decay_steps: int | None = option(help="linear decay over the last N steps (default: half the steps)")
    lr_warmup: int = option(0, "steps of a linear learning-rate ramp at the start (a warm start gets 20)")
    freeze_norm: bool | None = option(help="keep the generator's BatchNorm statistics fixed (default: for a warm "
                                      "start)")
    grad_clip: float | None = option(help="clip the gradients' norm to this")
    val_every: int | None = option(help="steps between validations (default 100, or about 10 in a time budget)",
                                   cli="int+", resumable=True, widget={"label": "Validate every", "row": 5,
                                                                        "max": 1_000_000, "step": 10,
                                                                        "suffix": " steps"})
    checkpoint_every: int = option(500, "steps between checkpoints", cli="int+", resumable=True)


@dataclass(frozen=True)
class DataOptions:
    """What each step sees: patches, batches, augmentation, the held-out part, normalization, noise."""

    batch_size: int | None = option(help="patches per step (default: about 64 k pixels)", cli="int+",
                                    widget={"label": "Batch size", "row": 1, "max": 256})
    patch_size: int | tuple[int, ...] | None = option(help="patch side (default 64, or 128 for images of 512 px "
                                                      "and more; volumes 16,64,64); z,y,x for volumes",
                                                      cli="patch", widget={"label": "Patch size", "row": 0,
                                                                           "max": 2048, "step": 32, "suffix": " px"})
    augment: bool = option(True, "random flips and 90-degree rotations")
    intensity_augment: float | None = option(help="random gains up to exp(±x) in network units (default: 0.9 for "
                                             "a warm start, else 0)")
    val_fraction: float = option(0.1, "share held out to measure progress (0: no validation)", cli="float0",
                                 widget={"label": "Held out", "row": 4, "max": 50, "step": 5, "decimals": 0,
                                         "suffix": " %", "scale": 100})
    val_split: str = option("image", "hold out whole images ('image') or a band of each ('region')", cli="choice",
                            choices=("image", "region"))
    val_patches: int = option(4, "validation patches (each the fullest of 8 positions)")
    percentiles: tuple[float, float] = option((0.5, 99.9), "intensity percentiles mapped to the network's range")
    normalization: str | None = option(help="'dataset' (the training data's percentiles for every image; default "
                                       "for real translate pairs) or 'plane' (each plane's own)", cli="choice",
                                       choices=("dataset", "plane"))
    noise: dict[str, Any] | None = option(help="NoiseConfig fields of the noise synthesized for denoise")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how reproducibly: the random seed, the device, the numeric precision."""

    seed: int = option(0, "random seed (initial weights, patches, synthesized degradations)", cli="int")
    device: str = option("auto", "auto, cpu, cuda or mps", cli="choice", choices=DEVICES, resumable=True,
                         widget={"label": "Device", "row": 6})
    precision: str = option("auto", "auto: bf16 autocast where it is native (AMX/AVX512-BF16, CUDA)", cli="choice",
                            choices=PRECISIONS, resumable=True)
    channels_last: bool = option(False, "channels-last tensors (slower for training on an AVX2 CPU)")


PARTS: dict[str, type] = {"network": NetworkOptions, "recipe": RecipeOptions, "schedule": ScheduleOptions,
                          "data": DataOptions, "runtime": RuntimeOptions}


@dataclass(frozen=True)
class Option:
    """One row of the table of options: its name, its part and its field (default, help, metadata)."""

    name: str
    part: str
    field: Field[Any]

    @property
    def help(self) -> str:
        """The option's one-line description."""
        return str(self.field.metadata["help"])

    @property
    def default(self) -> Any:
        """The option's default value."""
        f = self.field
        if f.default is MISSING and f.default_factory is not MISSING:
            return f.default_factory()
        return f.default

    def __getattr__(self, key: str) -> Any:  # cli, choices, resumable, widget
        try:
            return self.field.metadata[key]
        except KeyError:
            raise AttributeError(key) from None


# The table: every training option, by name, from the parts' fields
OPTIONS: dict[str, Option] = {f.name: Option(f.name, part, f) for part, cls in PARTS.items() for f in fields(cls)}
# What a resumed run may change: how long it trains, where, and how often it reports and saves.
RESUMABLE = tuple(name for name, o in OPTIONS.items() if o.resumable)


@dataclass(frozen=True, init=False)
class TrainConfig:
    """What a training run was asked to do: the task and five parts of options (see the module).

    ``TrainConfig(task="denoise", steps=100, recipe="paper")`` takes any option by name (or
    whole parts: ``network=NetworkOptions(...)``); ``config.steps`` reads one. None means "from
    the recipe" or "auto": what the run decides is its :class:`~.plan.RunPlan`.
    """

    task: str
    network: NetworkOptions
    recipe_options: RecipeOptions
    schedule: ScheduleOptions
    data: DataOptions
    runtime: RuntimeOptions

    def __init__(self, task: str = "denoise", *, network: NetworkOptions | None = None,
                 recipe_options: RecipeOptions | None = None, schedule: ScheduleOptions | None = None,
                 data: DataOptions | None = None, runtime: RuntimeOptions | None = None, **options: Any) -> None:
        unknown = sorted(k for k in options if k not in OPTIONS)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; see napari_pix2pix.engine.training.config.OPTIONS")
        given: dict[str, Any] = {"network": network, "recipe": recipe_options, "schedule": schedule, "data": data,
                                 "runtime": runtime}
        for part, cls in PARTS.items():
            values = {k: _normalized(k, v) for k, v in options.items() if OPTIONS[k].part == part}
            base = given[part] if given[part] is not None else cls()
            object.__setattr__(self, "recipe_options" if part == "recipe" else part,
                               replace(base, **values) if values else base)
        object.__setattr__(self, "task", task)
        self._check()

    def __getattr__(self, name: str) -> Any:
        """An option read by name (``config.steps``), from its part."""
        opt = OPTIONS.get(name)
        if opt is None or name.startswith("__"):
            raise AttributeError(f"'TrainConfig' has no attribute {name!r}")
        return getattr(object.__getattribute__(self, "recipe_options" if opt.part == "recipe" else opt.part), name)

    def part(self, name: str) -> Any:
        """The part called `name` ("network", "recipe", "schedule", "data", "runtime")."""
        return self.recipe_options if name == "recipe" else getattr(self, name)

    def with_options(self, **options: Any) -> TrainConfig:
        """A copy with `options` (by name; ``task`` too) changed."""
        task = options.pop("task", self.task)
        return TrainConfig(task, **self._parts(), **options) if options or task != self.task else self

    def _parts(self) -> dict[str, Any]:
        return {"network": self.network, "recipe_options": self.recipe_options, "schedule": self.schedule,
                "data": self.data, "runtime": self.runtime}

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        for ok, msg in self._rules():
            if not ok:
                raise ValueError(msg)
        if self.patch_size is not None and not self.warm:  # checked now; a warm start's in make_plan()
            self.check_patch(self.generator_config(*get_task(self.task).network_channels(1, 1)))

    def _rules(self) -> list[tuple[bool, str]]:
        n, r, s = self.network, self.recipe_options, self.schedule

        def positive_or_none(name: str) -> tuple[bool, str]:
            v = getattr(self, name)
            return v is None or v > 0, f"{name} must be positive (or None: auto), got {v}"

        return [
            (self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}"),
            (r.recipe is None or r.recipe in RECIPES, f"recipe must be one of {tuple(RECIPES)}, got {r.recipe!r}"),
            (r.recipe not in ("noise2noise", "noise2self") or self.task == "denoise",
             f"the {r.recipe} recipe trains denoisers (task='denoise'), not {self.task!r}"),
            (r.self_supervised in (None, *SELF_SUPERVISED),
             f"self_supervised must be one of {SELF_SUPERVISED}, got {r.self_supervised!r}"),
            (n.preset is None or n.preset in PRESETS, f"preset must be one of {sorted(PRESETS)}, got {n.preset!r}"),
            (n.start_from in (None, "auto", "scratch") or (n.preset is None and not n.generator),
             "a warm start (start_from) uses the starting model's network: do not give preset or generator"),
            (r.gan_mode is None or r.gan_mode in GAN_MODES, f"gan_mode must be one of {GAN_MODES}, got {r.gan_mode!r}"),
            (r.pixel_loss is None or r.pixel_loss in PIXEL_LOSSES,
             f"pixel_loss must be one of {PIXEL_LOSSES}, got {r.pixel_loss!r}"),
            (s.steps is None or s.minutes is None,
             "give either steps or minutes (steps are then derived from the time budget), not both"),
            positive_or_none("steps"), positive_or_none("minutes"), positive_or_none("batch_size"),
            positive_or_none("lr"), positive_or_none("val_every"),
            (r.lambda_l1 is None or r.lambda_l1 >= 0, f"lambda_l1 must be non-negative, got {r.lambda_l1}"),
            (r.gan_weight is None or r.gan_weight >= 0, f"gan_weight must be non-negative, got {r.gan_weight}"),
            (not (r.gan_weight == 0 and r.lambda_l1 == 0), "gan_weight and lambda_l1 are both 0: nothing to train"),
            (r.ema is None or 0 <= r.ema < 1, f"ema must be a decay in [0, 1), got {r.ema}"),
            (r.d_scales is None or 1 <= r.d_scales <= 4, f"d_scales must be 1 to 4, got {r.d_scales}"),
            (r.feature_matching is None or r.feature_matching >= 0, "feature_matching must be >= 0"),
            (r.r1 is None or r.r1 >= 0, "r1 must be >= 0"),
            (s.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (n.spatial_dims in (None, 2, 3), f"spatial_dims must be 2 or 3, got {n.spatial_dims}"),
            (not (n.spatial_dims == 3 and n.preset is not None and n.preset not in PRESETS_3D),
             f"{n.preset} is a 2D network: for spatial_dims=3 choose one of {PRESETS_3D} (or no preset)"),
            (not (n.spatial_dims == 2 and n.preset in PRESETS_3D),
             f"{n.preset} is a 3D network: give spatial_dims=3 (or no spatial_dims) for it"),
            (n.z_context >= 0, f"z_context must be >= 0, got {n.z_context}"),
            (not (n.z_context and self.dims == 3), "z_context (2.5D) is for 2D networks: a 3D network sees Z"),
            (not (self.dims == 3 and self.task == "colorize"), "colorize is 2D: it trains on planes, not volumes"),
            (self.data.normalization in (None, "dataset", "plane"),
             f"normalization must be 'dataset' or 'plane', got {self.data.normalization!r}"),
            (self.runtime.precision in PRECISIONS,
             f"precision must be one of {PRECISIONS}, got {self.runtime.precision!r}"),
        ]

    def check_patch(self, arch: UNetConfig, patch_size: Any = None) -> None:
        """Raise ValueError unless the patch size fits the network (a multiple of its size multiple, >= 32)."""
        patch = self.patch_size if patch_size is None else patch_size
        if isinstance(patch, (tuple, list)):
            ms = arch.size_multiple
            if len(ms) == 2 and len(patch) == 2 and patch[0] != patch[1]:
                raise ValueError(f"patch_size {tuple(patch)}: 2D patches are square; give one size "
                                 f"(e.g. {min(patch)})")
            bad = any(p % m or p < m for p, m in zip(patch, ms, strict=False))
            if len(patch) != len(ms) or bad:
                raise ValueError(f"patch_size {tuple(patch)} must give one multiple of {ms} per axis "
                                 f"(the size multiple of this {len(ms)}D network)")
            return
        if patch is not None and arch.spatial_dims == 3:
            if any(patch % m for m in arch.size_multiple):
                raise ValueError(f"patch_size {patch} must be a multiple of {arch.size_multiple} per "
                                 f"axis; give (z, y, x), e.g. {arch.size_multiple[0] * 2, 64, 64}")
            return
        multiple = max(arch.size_multiple)
        if patch is not None and (patch < 32 or patch % multiple):
            net = f"the model {self.start_from}" if self.warm and self.start_from not in (None, "auto") else (
                f"{self.preset or DEFAULT_PRESET} with these settings")
            raise ValueError(
                f"patch_size {patch} must be a multiple of {multiple} (the size multiple of {net}) "
                f"and at least 32; try {max(multiple, 32 // multiple * multiple)}"
            )

    # ------------------------------------------------------------------ derived
    @property
    def dims(self) -> int:
        """The run's spatial dimensions: 3 for a 3D network, else 2."""
        if self.network.spatial_dims is not None:
            return self.network.spatial_dims
        return 3 if self.network.preset in PRESETS_3D else 2

    @property
    def warm(self) -> bool:
        """Whether the run may start from a trained model (named, or "auto" with no network chosen)."""
        n = self.network
        if n.start_from == "scratch":
            return False
        auto = n.preset is None and not n.generator  # AUTO_START (2D, 2.5D), AUTO_START_3D
        return n.start_from not in (None, "auto") or auto

    @property
    def recipe_spec(self) -> Recipe:
        """The recipe (the task's default when none is named)."""
        return RECIPES[self.recipe_options.recipe or DEFAULT_RECIPES[self.task]]

    def generator_config(self, cin: int, cout: int) -> UNetConfig:
        """The generator's UNetConfig for these (task's) channels: the preset, or unet_tiny / unet3d_tiny.

        With a z context of k, each input channel of the image comes 2k + 1 times (the plane and
        its neighbours); an inpainting mask once.
        """
        n = self.network
        preset = n.preset or (DEFAULT_PRESET if self.dims == 2 else DEFAULT_PRESET_3D)
        image = get_task(self.task).image_channels(cin)
        return preset_config(preset, in_channels=cin + 2 * n.z_context * image, out_channels=cout, **n.generator)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: every option by name (flat, as files have always stored it)."""
        d: dict[str, Any] = {"task": self.task}
        for name in OPTIONS:
            v = getattr(self, name)
            d[name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys are ignored; files of 0.1.0 get the recipe they trained with)."""
        d = {k: v for k, v in d.items() if k in OPTIONS or k == "task"}
        if "recipe" not in d and "gan_weight" in d:  # 0.1.0: no recipes yet; its fields are all explicit
            d["recipe"] = "paper" if float(d["gan_weight"] or 0) > 0 else "fidelity"
            for k, v in (("pixel_loss", "l1"), ("gan_warmup", 0.0), ("gan_ramp", 0.0), ("ema", 0.0), ("d_scales", 1),
                         ("spectral_norm", False), ("feature_matching", 0.0), ("r1", 0.0)):
                d.setdefault(k, v)
        return cls(**d)


def _normalized(name: str, value: Any) -> Any:
    """JSON lists back to the tuples the options hold."""
    if name in ("percentiles", "patch_size") and isinstance(value, list):
        return tuple(value)
    return value


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword arguments into (data source, options); unknown names are refused, naming the close ones."""
    import difflib

    src = {k: kwargs[k] for k in kwargs if k in SOURCE_KEYS}
    rest = {k: v for k, v in kwargs.items() if k not in SOURCE_KEYS}
    unknown = [k for k in rest if k not in OPTIONS and k != "task"]
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, [*OPTIONS, *SOURCE_KEYS], 1))
                 else k for k in unknown]
        raise TypeError(f"unknown training option(s): {', '.join(hints)}; the options are listed in "
                        "napari_pix2pix.engine.training.config.OPTIONS")
    return src, rest


def resume_config(saved: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """The settings of a resumed run: the checkpoint's, with only the :data:`RESUMABLE` options changed.

    A resumed run continues the same run: it may train longer (``steps``, or ``minutes`` more),
    elsewhere (``device``, ``precision``) and report or save at another pace (``val_every``,
    ``checkpoint_every``). Any other option given with a value that differs from the
    checkpoint's is an error (the same value is accepted, so that a command can be rerun
    with ``--resume`` added); the Python API, the command line and the Train widget all
    use this rule.

    Raises
    ------
    ValueError
        Naming every option that differs from the checkpoint's.
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
    return saved.with_options(**resumable)
