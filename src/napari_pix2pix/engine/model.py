"""`Pix2PixModel`: a generator with its task, normalization and provenance, in one file."""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._version import __version__
from ..nn import UNetConfig, UNetGenerator, preset_config, reference_key_map
from ..nn.unet import PRESETS
from .core.device import inference_copy, resolve_device, resolve_precision
from .core.normalization import Normalization
from .core.progress import Progress, run_to_end
from .core.tasks import TASKS, Task, get_task
from .formats.modelfile import ModelFileError, read_model_file, write_model_file
from .predict.tiled import PredictOptions, predict_iter

if TYPE_CHECKING:
    from .formats.export import ExportReport


class Pix2PixModel:
    """A Pix2Pix generator that knows its task, its normalization and where it came from.

    Parameters
    ----------
    task : {"denoise", "inpaint", "colorize", "translate"}
        What the model does; decides how inputs and outputs are composed.
    preset : str
        Architecture preset: ``"unet_256"`` (the paper's), ``"unet_128"``, or the CPU
        presets ``"unet_small"`` and ``"unet_tiny"``.
    channels : int
        Channels of the images the model takes (colorize: always 1).
    out_channels : int, optional
        Output channels for ``translate`` (default: `channels`).
    config : UNetConfig, optional
        Full architecture; overrides `preset`, `channels` and `out_channels`.
    normalization : Normalization, optional
        Intensity normalization (percentiles; outputs on the input's scale by default).
    name : str, optional
        Human-readable name stored in the file.
    **overrides
        UNetConfig fields applied on top of the preset (``ngf=32``, ``levels=6``, ...).

    Examples
    --------
    >>> model = Pix2PixModel(task="denoise", preset="unet_tiny")
    >>> model.generator.config.levels
    6
    """

    def __init__(
        self,
        task: str = "denoise",
        preset: str = "unet_256",
        *,
        channels: int = 1,
        out_channels: int | None = None,
        config: UNetConfig | None = None,
        normalization: Normalization | None = None,
        name: str | None = None,
        z_context: int = 0,
        **overrides: Any,
    ) -> None:
        self.task: Task = get_task(task)
        if z_context < 0:
            raise ValueError(f"z_context must be >= 0, got {z_context}")
        if config is None:
            cin, cout = self.task.network_channels(channels, out_channels)
            cin += 2 * z_context * self.task.image_channels(cin)  # the neighbouring planes, as channels
            config = preset_config(preset, in_channels=cin, out_channels=cout, **overrides)
        elif not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.config: UNetConfig = config
        if z_context and config.spatial_dims != 2:
            raise ValueError("z_context (2.5D) is for 2D networks; a 3D network convolves Z itself")
        self.z_context = int(z_context)  # 2.5D: the network sees each plane with k neighbours on either side
        self.preset = preset if preset in PRESETS else "custom"
        self.generator: UNetGenerator = UNetGenerator(config).eval()
        self.normalization = normalization or Normalization()
        self.name = name or f"{self.task.name}-{self.preset}"
        self.training: dict[str, Any] = {}  # summary written by the trainer
        self.card: dict[str, Any] = {}  # free-form model card (data, licence, limits)
        self.source: str | None = None  # where it was loaded from
        self._runners: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ metadata
    @property
    def metadata(self) -> dict[str, Any]:
        """Everything stored beside the weights (JSON-serialisable)."""
        return {
            "name": self.name,
            "task": self.task.name,
            "preset": self.preset,
            "architecture": {"type": "unet", **self.config.to_dict()},
            **({"z_context": self.z_context} if self.z_context else {}),  # 2D files as 0.1 wrote them
            "normalization": self.normalization.to_dict(),
            "training": self.training,
            "card": self.card,
            "package_version": __version__,
            "torch_version": torch.__version__,
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    @property
    def spatial_dims(self) -> int:
        """2: the model restores images (a stack plane by plane, or 2.5D with `z_context`); 3: volumes."""
        return self.config.spatial_dims

    def __repr__(self) -> str:
        c = self.config
        dims = ", spatial_dims=3" if c.spatial_dims == 3 else ""
        dims += f", z_context={self.z_context}" if self.z_context else ""
        return (
            f"Pix2PixModel(task={self.task.name!r}, preset={self.preset!r}, in={c.in_channels}, "
            f"out={c.out_channels}, levels={c.levels}, ngf={c.ngf}{dims}, name={self.name!r})"
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str], *, half: bool = False) -> Path:
        """Save weights (safetensors) and metadata to one file, atomically.

        Parameters
        ----------
        path : path
            Destination (``.safetensors`` is appended when it has no suffix).
        half : bool
            Store floating-point weights as float16 (half the size; they are computed in
            the usual precision again after loading). For shipping models. Tensors with
            values beyond float16's range stay float32.

        Returns
        -------
        Path
            The written file.
        """
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".safetensors")
        state = {k: v for k, v in self.generator.state_dict().items()}
        if half:  # float16, except tensors float16 cannot hold (|x| > 65504, e.g. a BatchNorm variance)
            state = {k: _half_if_it_fits(v) for k, v in state.items()}
        return write_model_file(path, state, self.metadata)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pix2PixModel:
        """Load a model file written by :meth:`save`, or a bioimage.io package of one of our generators.

        Model files are never unpickled, and a corrupted file (its SHA-256 integrity check
        fails) is refused. bioimage.io packages (a ``.zip``, its folder or its ``rdf.yaml``; see
        :meth:`export_bioimageio`) have every file checked against its SHA-256 and their
        weights read with ``torch.load(weights_only=True)``; the package's code is never run.
        Before any network is built, the stored architecture is checked against the stored
        weights (names and shapes, on PyTorch's ``meta`` device: nothing is allocated) and
        against a bound far above every preset, so that a crafted file cannot make the loader
        allocate or run anything.
        """
        from .formats.bioimageio.read import is_package, read_package

        if Path(path).exists() and is_package(path):
            tensors, meta = read_package(path)
        elif Path(path).is_dir():
            raise ModelFileError(f"{Path(path).name} is a folder without an rdf.yaml: neither a model file nor an "
                                 "unpacked bioimage.io package")
        else:
            tensors, meta = read_model_file(path)
        check_weights(_architecture(meta), tensors, Path(path).name)
        model = cls.from_metadata(meta)
        try:  # float16-stored weights are copied into the float32 generator
            model.generator.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise ModelFileError(f"{Path(path).name}: weights do not fit the stored architecture ({e})") from e
        model.generator.eval()
        model.source = str(path)
        return model

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Pix2PixModel:
        """An untrained model with the architecture and settings recorded in `meta` (bounded: see check_weights)."""
        config = _architecture(meta)
        check_size(config, "the model")
        try:
            task = meta["task"]
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}")
            norm = Normalization(**meta.get("normalization", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"model metadata is incomplete or invalid: {e}") from e
        try:
            z_context = int(meta.get("z_context", 0))
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"model metadata is incomplete or invalid: z_context {e}") from e
        model = cls(task, meta.get("preset", "custom"), config=config, normalization=norm, name=meta.get("name"),
                    z_context=z_context)
        model.training = dict(meta.get("training", {}))
        model.card = dict(meta.get("card", {}))
        return model

    # ------------------------------------------------------------------ exchange
    def export(self, path: str | os.PathLike[str], format: str | None = None, *, check: bool = True,
               **options: Any) -> ExportReport:
        """Export to a bioimage.io package, ONNX or TorchScript and check the result.

        Parameters
        ----------
        path : path
            Destination; the format follows its suffix (``.zip``, ``.onnx``, ``.pt``) unless given.
        format : {"bioimageio", "onnx", "torchscript"}, optional
            The format.
        check : bool
            Run the written file on a test image and report its largest difference to
            :meth:`predict` (:attr:`ExportReport.max_abs_diff`).
        **options
            bioimage.io packages: ``image``, ``mask``, ``authors``, ``license`` (see
            :meth:`export_bioimageio`).

        Returns
        -------
        ExportReport
            The file written and the measured differences.
        """
        from .formats.export import (
            FORMATS,
            check_network,
            guess_format,
            onnx_runner,
            torchscript_runner,
            write_onnx,
            write_torchscript,
        )

        fmt = format or guess_format(path)
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
        if fmt == "bioimageio":
            from .formats.bioimageio.write import export_bioimageio

            return export_bioimageio(self, path, check=check, **options)
        if options:
            raise TypeError(f"{fmt} export takes no options {sorted(options)}")
        if fmt == "onnx":
            written = write_onnx(self, path)
            diffs = {"onnxruntime": check_network(self, onnx_runner(written))} if check else {}
        else:
            written = write_torchscript(self, path)
            diffs = {"torchscript": check_network(self, torchscript_runner(written))} if check else {}
        from .formats.export import ExportReport

        return ExportReport(written, fmt, diffs)

    def export_bioimageio(self, path: str | os.PathLike[str], **options: Any) -> ExportReport:
        """Write a bioimage.io model package (zip, spec 0.5) for deepImageJ, ilastik, QuPath, bioimageio.core.

        Needs ``pip install "napari-pix2pix[bioimageio]"``. The package holds
        ``pytorch_state_dict`` (with the architecture source), ``torchscript`` and ``onnx``
        weights, pre/post-processing reproducing the normalization (outputs in normalized
        units of the input: its ``low``/``high`` percentiles are 0/1), tiling information,
        a test input/output pair, a cover, the model card and the Pix2Pix citation; this
        package's :meth:`load` reads it back and predicts exactly as this model does.
        Options: see :func:`napari_pix2pix.engine.formats.bioimageio.write.export_bioimageio`.
        """
        return self.export(path, "bioimageio", **options)

    def export_onnx(self, path: str | os.PathLike[str], *, check: bool = True) -> ExportReport:
        """Write the generator as ONNX (inputs and outputs in network units; see :mod:`.export`)."""
        return self.export(path, "onnx", check=check)

    def export_torchscript(self, path: str | os.PathLike[str], *, check: bool = True) -> ExportReport:
        """Write the generator as TorchScript (inputs and outputs in network units)."""
        return self.export(path, "torchscript", check=check)

    # ------------------------------------------------------------------ prediction
    def _runner(
        self, device: str | torch.device, precision: str, mc_dropout: bool = False, augment: int = 0,
        tta: tuple[int, ...] = (),
    ) -> Callable[[np.ndarray], np.ndarray]:
        """A function mapping a float32 batch (B, C, H, W) to the generator's output.

        ``augment`` applies one flip/rotation (:func:`_dihedral`) to the batch and undoes it on
        the output; ``tta`` lists several, whose outputs are averaged (test-time augmentation).
        """
        dev = resolve_device(device)
        dtype = resolve_precision(precision, dev)
        flat = self.config.spatial_dims == 2  # channels_last is for 4-D tensors
        key = (str(dev), dtype, mc_dropout, id(self.generator), self._weights_version())
        with self._lock:
            net = self._runners.get(key)
            if net is None:
                while len(self._runners) >= 2:  # keep the last two (e.g. the widgets' bf16 and an export check's fp32)
                    self._runners.pop(next(iter(self._runners)))
                net = inference_copy(self.generator, dev, dtype, keep_dropout=mc_dropout)
                self._runners[key] = net
        autocast = dev.type == "cuda" and dtype != torch.float32

        def once(x: torch.Tensor, k: int) -> torch.Tensor:
            if k:
                x = _dihedral(x, k)
            x = x.to(dev, non_blocking=True)
            if dev.type != "mps" and flat:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=dtype, enabled=autocast):  # in run's inference mode
                y = net(x.to(dtype))
            y = y.float().cpu()
            return _dihedral(y, k, inverse=True) if k else y

        transforms = tta or (augment,)

        def run(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(batch))
            with torch.inference_mode():
                y = once(x, transforms[0])
                for k in transforms[1:]:
                    y += once(x, k)
                if len(transforms) > 1:
                    y /= len(transforms)
            return y.numpy()

        return run

    def _weights_version(self) -> int:
        """Changes whenever the generator's weights are modified in place (training)."""
        return sum(int(p._version) for p in self.generator.parameters())

    def predict_iter(self, image: Any, mask: Any = None, **kwargs: Any) -> Generator[Progress, None, Any]:
        """Like :meth:`predict` but a generator yielding :class:`Progress`; returns the result.

        Stop iterating (``close()``) to cancel between any two batches of tiles.
        """
        return predict_iter(self, image, mask, **kwargs)

    def predict(
        self,
        image: Any,
        mask: Any = None,
        *,
        channel_axis: int | None = None,
        tile_size: int | tuple[int, ...] | str | None = "auto",
        overlap: int = 64,
        batch_size: int | None = None,
        device: str = "auto",
        precision: str = "auto",
        out: Any = None,
        progress: Callable[[Progress], Any] | None = None,
        cancel: threading.Event | Callable[[], bool] | None = None,
        uncertainty: bool = False,
        samples: int = 8,
        pyramid: bool = False,
        tta: bool | int = False,
    ) -> Any:
        """Apply the model to an image of any size, dtype and layout.

        Parameters
        ----------
        image : array-like
            2D (Y, X), with channels (``channel_axis``), or a stack (T, Z, ... leading axes)
            processed plane by plane. A 3D model (``spatial_dims == 3``) restores volumes:
            the last three non-channel axes are (Z, Y, X), tiled on the network's grid, and
            leading axes (T) are processed volume by volume. A 2.5D model (``z_context``)
            reads each plane's neighbours along the axis before Y. numpy, memmap, zarr and
            dask arrays all work; they are read tile by tile.
        mask : array-like, optional
            Inpaint only: non-zero where pixels are to be filled; the image's shape without
            the channel axis, or (Y, X) for every plane. Default: the image's NaN pixels.
        channel_axis : int, optional
            Axis of channels. A single-channel model is applied to each channel in turn.
        tile_size : int, tuple of int, "auto" or None
            Largest tile side (rounded down to the network's size multiple), or one per spatial
            axis ((Z, Y, X) for a 3D model; an int is then a cube); ``None``
            processes each plane in one piece. Tiles start on the network's size grid so
            that tiled and untiled results agree; the overlap is therefore at least one
            size multiple (256 px for ``unet_256``), which costs extra compute: larger tiles
            cost less (see benchmarks/). "auto": the largest tile (up to 2048) whose
            activations fit in ~512 MB at the compute precision (``unet_256``: 1536 in bf16,
            1024 in fp32; the bundled models: 1408 in bf16, 992 in fp32).
        overlap : int
            Smallest overlap between neighbouring tiles, blended smoothly.
        batch_size : int, optional
            Tiles per forward pass; default: as many (up to 4) as keep activations under
            ~512 MB (larger batches fragmented memory: 5.3 GB peak on an 8192² image).
        device : {"auto", "cpu", "cuda", "mps"}
            "auto" picks CUDA, then Apple MPS, then the CPU.
        precision : {"auto", "fp32", "bf16", "fp16"}
            "auto" uses bf16 on CPUs with native bf16 and on GPUs, fp32 otherwise.
        out : array-like or path, optional
            Where to write the result (e.g. a zarr array or memmap for images larger than
            RAM); must have the output's shape. A path ending in ``.zarr`` creates that zarr
            store (OME-Zarr layout: the result at ``"0"``, chunked by plane and 256² tiles, 16
            planes deep for volumes), written beside it and moved into place when complete;
            the result (level 0) is returned, opened for reading.
        pyramid : bool
            With a ``.zarr`` path as `out`: also write downsampled levels (2x in Y and X each,
            down to 256 px) for a multiscale view (:func:`napari_pix2pix.engine.images.zarrstore.open_levels`).
        progress : callable, optional
            Called with a :class:`Progress` after every batch of tiles.
        cancel : threading.Event or callable, optional
            Checked between batches; when set, :class:`PredictionCancelled` is raised.
        uncertainty : bool
            Also return a per-pixel uncertainty map: the standard deviation over `samples`
            predictions under the 8 flips/rotations and, where the generator has dropout,
            dropout samples. Costs `samples` extra predictions.
        samples : int
            Number of samples for the uncertainty map.
        tta : bool or int
            Average the predictions of the flips/rotations: ``True`` all 8 (16 for a 3D model, also
            flipped in Z), or 2, 4, 8 (16) of them; that many times slower (benchmarks/results/tta.log).

        Returns
        -------
        numpy.ndarray (or `out`)
            Same dtype as the input (bool in: float32), on the input's intensity scale;
            models trained with ``translate`` between modalities output float32 on the
            training targets' intensity scale.
            Colorize returns RGB with the colour axis last when the input has no channel
            axis. With ``uncertainty=True``: ``(output, uncertainty)``, the map being float32
            of the output's shape without its channel axis.
        """
        kwargs: dict[str, Any] = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device,
                                      precision=precision)
        PredictOptions(**kwargs, tta=tta)  # checked here, before any work
        if uncertainty and (not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 2):
            raise ValueError(f"uncertainty needs at least 2 samples, got {samples!r}")
        kwargs["channel_axis"] = channel_axis
        result = run_to_end(self.predict_iter(image, mask, out=out, pyramid=pyramid, tta=tta, **kwargs), progress,
                            cancel, "prediction")
        if not uncertainty:
            return result
        from .predict.uncertainty import uncertainty_iter

        return result, run_to_end(uncertainty_iter(self, image, mask, samples=samples, **kwargs), progress, cancel,
                                  "prediction")


MAX_PARAMETERS = 250_000_000  # bound for a stored architecture: unet_256 has 54 M, the other presets fewer


def _architecture(meta: dict[str, Any]) -> UNetConfig:
    """The UNetConfig recorded in a file's metadata (checked by its own rules)."""
    try:
        arch = dict(meta["architecture"])
        arch.pop("type", None)
        return UNetConfig(**arch)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"model metadata is incomplete or invalid: {e}") from e


def _meta_network(config: UNetConfig) -> UNetGenerator:
    """The network of `config` on PyTorch's meta device: shapes only, nothing allocated."""
    with torch.device("meta"):
        return UNetGenerator(config)


def check_size(config: UNetConfig, name: str) -> None:
    """Refuse an architecture far beyond any napari-pix2pix network before it is built."""
    if max(config.in_channels, config.out_channels) > 4096 or config.ngf > 8192:
        raise ModelFileError(f"{name}: its architecture ({config.in_channels} -> {config.out_channels} channels, "
                             f"width {config.ngf}) is far beyond any napari-pix2pix network; refusing to build it")
    n = sum(p.numel() for p in _meta_network(config).parameters())
    if n > MAX_PARAMETERS:
        raise ModelFileError(f"{name}: its architecture has {n / 1e6:,.0f} M parameters, far beyond any napari-pix2pix "
                             f"network (at most {MAX_PARAMETERS // 1_000_000} M); refusing to build it")


def check_weights(config: UNetConfig, tensors: dict[str, torch.Tensor], name: str) -> None:
    """The stored weights must be exactly those of the stored architecture (names and shapes), which is bounded.

    Raises
    ------
    ModelFileError
        Naming the first tensors that are missing, unexpected or of another shape.
    """
    check_size(config, name)
    expected = {k: tuple(v.shape) for k, v in _meta_network(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or extra or wrong:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
            [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
            [f"{k} is {got[k]}, the architecture needs {expected[k]}" for k in wrong[:3]])
        raise ModelFileError(f"{name}: the weights do not fit the stored architecture ({'; '.join(parts)}); "
                             "the file is not a napari-pix2pix model as saved")


def _dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """Element `k` (0-7) of the square's symmetry group on the last two axes, or its inverse.

    8-15 (volumes, (B, C, Z, Y, X)): element ``k - 8`` and a flip of Z: the 16 symmetries of
    an anisotropic voxel grid.
    """
    flip, rot, zflip = (k % 8) >= 4, k % 4, k >= 8
    if not inverse:
        x = torch.flip(x, (-3,)) if zflip else x
        x = torch.flip(x, (-1,)) if flip else x
        return torch.rot90(x, rot, (-2, -1))
    x = torch.rot90(x, -rot, (-2, -1))
    x = torch.flip(x, (-1,)) if flip else x
    return torch.flip(x, (-3,)) if zflip else x


def import_reference_checkpoint(
    path: str | os.PathLike[str],
    task: str = "translate",
    *,
    preset: str = "unet_256",
    in_channels: int = 3,
    out_channels: int = 3,
    norm: str = "batch",
    dropout: bool = True,
    **overrides: Any,
) -> Pix2PixModel:
    """Import a ``*_net_G.pth`` of the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix).

    The file is read with ``torch.load(weights_only=True)``, which refuses pickled code.
    Give the flags it was trained with (``--netG unet_256 --input_nc 3 --output_nc 3``).

    Parameters
    ----------
    path : path
        The generator checkpoint.
    task : str
        Task of the new model.
    preset : {"unet_256", "unet_128"}
        The reference's ``--netG``.
    in_channels, out_channels : int
        The reference's ``--input_nc`` and ``--output_nc``.
    norm : {"batch"}
        The reference's ``--norm``; instance-norm checkpoints use per-image statistics,
        which make tiles disagree, and are refused.
    dropout : bool
        False for models trained with ``--no_dropout``.

    Returns
    -------
    Pix2PixModel
    """
    if norm != "batch":
        raise ValueError(
            "only batch-norm reference checkpoints can be imported: instance norm in the reference "
            "computes per-image statistics, which make neighbouring tiles disagree"
        )
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise ModelFileError(f"could not read {Path(path).name} as a weights-only checkpoint: {e}") from e
    if not isinstance(state, dict):
        raise ModelFileError(f"{Path(path).name} holds no state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = Pix2PixModel(
        task, preset, config=preset_config(preset, in_channels=in_channels, out_channels=out_channels,
                                           dropout=0.5 if dropout else 0.0, **overrides),
    )
    ours = map_reference_state(state, model.config, f"{Path(path).name}: is it a {preset} generator with "
                               f"input_nc={in_channels}, output_nc={out_channels}?")
    try:
        model.generator.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{Path(path).name} does not match {preset} ({e})") from e
    model.source = str(path)
    model.card["imported_from"] = Path(path).name
    return model


def map_reference_state(state: dict[str, Any], config: UNetConfig, hint: str = "") -> dict[str, Any]:
    """The reference implementation's state-dict entries under our names (values passed through).

    Raises
    ------
    ModelFileError
        For a key the reference's UnetGenerator of `config` does not have.
    """
    mapping = reference_key_map(config)
    ours: dict[str, Any] = {}
    for key, value in state.items():
        for ref, our in mapping.items():
            if key.startswith(ref) and "." not in key[len(ref):]:
                ours[our + key[len(ref):]] = value
                break
        else:
            raise ModelFileError(f"unexpected key {key!r}" + (f"; {hint}" if hint else ""))
    return ours


def _half_if_it_fits(v: torch.Tensor) -> torch.Tensor:
    """`v` as float16 if it is floating point and float16 holds every value (else unchanged)."""
    if not v.is_floating_point():
        return v
    h = v.half()
    return h if bool(torch.isfinite(h).all()) or not bool(torch.isfinite(v).all()) else v
