"""`Pix2PixModel`, the front door: a :class:`~.core.network.Network` with files and one-line hand-offs.

Construction, :meth:`~Pix2PixModel.save` / :meth:`~Pix2PixModel.load`, and ``predict``,
``uncertainty`` and ``export``, each handing off to the room that does the work
(:mod:`.predict`, :mod:`.formats`). Nothing inside the rooms imports this module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from .core.network import Network
from .core.progress import Progress, run_to_end
from .formats import networks
from .formats.exchange import export as _export
from .formats.export import ExportReport
from .formats.reference import import_reference_checkpoint as _import_reference
from .predict.stores import predict_iter
from .predict.tiled import PredictOptions
from .predict.uncertainty import uncertainty_iter


class Pix2PixModel(Network):
    """A Pix2Pix generator that knows its task, its normalization and where it came from.

    Built as a :class:`~napari_pix2pix.engine.core.network.Network` (same parameters: `task`,
    `preset`, `channels`, `out_channels`, `config`, `normalization`, `name`, `z_context`, and
    UNetConfig overrides such as ``ngf=32``); this class adds files (:meth:`save`, :meth:`load`)
    and the hand-offs :meth:`predict`, :meth:`uncertainty` and :meth:`export`.

    Notes
    -----
    Prediction runs an inference copy of the generator, cached until its weights change
    (``load_state_dict`` and training drop it); after editing weights in place by other means,
    call :func:`napari_pix2pix.engine.predict.runner.forget` with the generator.

    Examples
    --------
    >>> model = Pix2PixModel(task="denoise", preset="unet_tiny")
    >>> model.generator.config.levels
    6
    """

    @classmethod
    def from_network(cls, net: Network) -> Pix2PixModel:
        """The front door onto `net` (the same generator and facts, not a copy)."""
        if isinstance(net, cls):
            return net
        model = cls.__new__(cls)
        model.__dict__.update(net.__dict__)
        return model

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
        return networks.write_network(self, path, half=half)

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
        return networks.read_network(path, cls)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Pix2PixModel:
        """An untrained model with the architecture and settings recorded in `meta` (bounded before it is built)."""
        return networks.network_from_metadata(meta, cls)

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
        return _export(self, path, format, check=check, **options)

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
        noise: Any = None,
        resume: bool = False,
        client: Any = None,
        workers: int | None = None,
        ome: dict[str, Any] | None = None,
    ) -> Any:
        """Apply the model to an image of any size, dtype and layout.

        Parameters
        ----------
        image : array-like or path
            2D (Y, X), with channels (``channel_axis``), or a stack (leading axes) processed plane
            by plane; a 3D model restores volumes (the last three non-channel axes are Z, Y, X); a
            2.5D model (``z_context``) reads each plane's neighbours along the axis before Y.
            numpy, memmap, zarr and dask arrays are read tile by tile; a path (zarr/OME-Zarr,
            TIFF) is opened lazily.
        mask : array-like, optional
            Inpaint only: non-zero where pixels are to be filled (the image's shape without the
            channel axis, or (Y, X) for every plane). Default: the image's NaN pixels.
        channel_axis : int, optional
            Axis of channels. A single-channel model is applied to each channel in turn.
        tile_size : int, tuple of int, "auto" or None
            Largest tile side (one per spatial axis, or an int), on the network's grid so that tiled
            and untiled results agree; ``None``: each plane whole; "auto": the largest tile (up to
            2048) whose activations fit in ~512 MB (the bundled models: 1408 px in bf16, 992 in fp32).
        overlap : int
            Smallest overlap between neighbouring tiles, blended smoothly.
        batch_size : int, optional
            Tiles per forward pass; default: as many (up to 4) as keep activations under ~512 MB.
        device : {"auto", "cpu", "cuda", "mps"}
            "auto" picks CUDA, then Apple MPS, then the CPU.
        precision : {"auto", "fp32", "bf16", "fp16"}
            "auto" uses bf16 on CPUs with native bf16 and on GPUs, fp32 otherwise.
        out : array-like or path, optional
            Where to write the result (a zarr array or memmap of the output's shape). A path
            ending in ``.zarr`` creates that OME-Zarr store (NGFF 0.4, axes and scales from an
            OME-Zarr input or `ome`), written block by block into ``.NAME.zarr.partial`` (each
            block recorded when done) and moved into place when complete; the result (level 0)
            is returned, opened for reading. Interrupted, the partial store stays for `resume`.
        resume : bool
            With a ``.zarr`` `out`: compute only the blocks an interrupted prediction has not
            recorded (the same model, input and options; else an error).
        client, workers : distributed.Client or str, int, optional
            With a ``.zarr`` `out`: compute the blocks on a dask cluster (a Client or a scheduler
            address such as ``"tcp://host:8786"``), or on a local cluster of `workers` processes
            of one thread each; the same result (``pip install "napari-pix2pix[cluster]"``).
        ome : dict, optional
            The output store's ``scale``, ``translation`` (per output axis), ``names``, ``units``.
        pyramid : bool
            With a ``.zarr`` `out`: also write levels halved in Y and X down to 256 px (a multiscale view).
        progress : callable, optional
            Called with a :class:`Progress` after every batch of tiles (of blocks on a cluster).
        cancel : threading.Event or callable, optional
            Checked between batches; when set, :class:`PredictionCancelled` is raised.
        uncertainty, samples : bool, int
            Also return a per-pixel uncertainty map: the standard deviation over `samples` (8)
            predictions under flips/rotations (and dropout, where the generator has it).
        tta : bool or int
            Average the predictions of the flips/rotations: ``True`` all 8 (16 for a 3D model), or 2,
            4, 8 (16) of them; that many times slower.
        noise : {None, "auto", "gaussian", "poisson"} or dict, optional
            Denoisers: predict in the variance-stabilized domain of a noise model estimated from the
            image ("auto") or given (``{"gain", "offset", "read"}``); None: the image as it is.

        Returns
        -------
        numpy.ndarray (or `out`)
            The input's dtype (bool: float32) and intensity scale (``translate`` between
            modalities: float32 on the targets' scale); colorize adds RGB last. With
            ``uncertainty=True``: ``(output, uncertainty)``, float32 without the channel axis.
        """
        kwargs: dict[str, Any] = dict(tile_size=tile_size, overlap=overlap, batch_size=batch_size, device=device,
                                      precision=precision)
        self._check_options(kwargs, tta, noise, samples if uncertainty else None)  # before any work
        kwargs["channel_axis"] = channel_axis
        result = run_to_end(self.predict_iter(image, mask, out=out, pyramid=pyramid, tta=tta, noise=noise,
                                              cancel=cancel, resume=resume, client=client, workers=workers, ome=ome,
                                              **kwargs), progress, cancel, "prediction")
        if not uncertainty:
            return result
        return result, self.uncertainty(image, mask, samples=samples, progress=progress, cancel=cancel, **kwargs)

    def _check_options(self, options: dict[str, Any], tta: bool | int, noise: Any, samples: int | None) -> None:
        PredictOptions(**options, tta=tta, noise=noise)
        if noise is not None and self.task.name != "denoise":
            raise ValueError(f"noise= is for denoisers; this model does {self.task.name}")
        if samples is not None and (not isinstance(samples, (int, np.integer)) or isinstance(samples, bool)
                                    or samples < 2):
            raise ValueError(f"uncertainty needs at least 2 samples, got {samples!r}")

    def uncertainty(self, image: Any, mask: Any = None, *, samples: int = 8,
                    progress: Callable[[Progress], Any] | None = None,
                    cancel: threading.Event | Callable[[], bool] | None = None, **kwargs: Any) -> np.ndarray:
        """The per-pixel spread of `samples` predictions under flips/rotations (and dropout); see :meth:`predict`.

        Returns a float32 map of the output's shape without its channel axis, on the output's scale.
        `kwargs` are :meth:`predict`'s tiling and device options (and ``channel_axis``).
        """
        if isinstance(image, (str, os.PathLike)):
            from .images.io import open_lazy

            image = open_lazy(image)
        return run_to_end(uncertainty_iter(self, image, mask, samples=samples, **kwargs), progress, cancel,
                          "prediction")


def import_reference_checkpoint(path: str | os.PathLike[str], task: str = "translate", **options: Any
                                ) -> Pix2PixModel:
    """Import a ``*_net_G.pth`` of the reference implementation as a :class:`Pix2PixModel`.

    Read with ``torch.load(weights_only=True)``, which refuses pickled code. `options` are
    the flags it was trained with: ``preset`` (``--netG``, default ``"unet_256"``),
    ``in_channels``/``out_channels`` (``--input_nc``/``--output_nc``, default 3), ``norm``
    (``"batch"``; instance-norm checkpoints are refused) and ``dropout`` (False for
    ``--no_dropout``); see :func:`napari_pix2pix.engine.formats.reference.import_reference_checkpoint`.
    """
    return _import_reference(path, task, cls=Pix2PixModel, **options)
