"""The work the widgets run in worker threads: generators that yield progress and return results.

They take plain arrays and settings, never layers, and import neither napari nor Qt; the
widgets wrap them with ``napari.qt.threading.create_worker``. Each one can be stopped
between two batches (prediction) or two steps (training) through a ``threading.Event``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import RESUMABLE, TrainConfig, train_iter
from ..engine.core.progress import Progress, TrainEvent, relay
from ..engine.formats.export import ExportReport
from ..engine.images.noise import estimate_noise
from ..engine.images.zarrstore import open_levels
from ..engine.model import Pix2PixModel
from ..engine.predict.tiled import PredictOptions, tta_transforms
from ..engine.predict.uncertainty import ResidualReport, residual_report, uncertainty_iter
from ..engine.registry import load_model
from ..engine.training.data import PairedData

_CACHE: OrderedDict[tuple[Any, ...], Pix2PixModel] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def worker_threads() -> int:
    """Torch threads for work started from the GUI: leave a core to napari on small machines.

    ``$NAPARI_PIX2PIX_THREADS`` overrides it.
    """
    env = os.environ.get("NAPARI_PIX2PIX_THREADS")
    if env:
        return max(1, int(env))
    n = os.cpu_count() or 1
    return max(1, n - 1) if n <= 8 else n - 2


def _use_threads() -> None:
    import torch

    n = worker_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


_WARM = threading.Event()
_WARM_LOCK = threading.Lock()
_warm_thread: threading.Thread | None = None


def _warm_up() -> None:
    """Take one tiny training step, so that torch's one-time imports happen before the user presses Start.

    Torch imports its compiler stack (torch._dynamo, ~2 s) the first time an optimizer is
    made; in a worker that stalls the GUI thread now and then (the import holds the GIL).
    """
    try:
        import torch

        from ..nn import PatchGANConfig, PatchGANDiscriminator, UNetConfig, UNetGenerator

        _use_threads()
        g = UNetGenerator(UNetConfig(in_channels=1, out_channels=1, levels=2, ngf=2))
        d = PatchGANDiscriminator(PatchGANConfig(in_channels=2, ndf=2))
        opt = torch.optim.Adam([*g.parameters(), *d.parameters()], lr=1e-4)
        x = torch.zeros(1, 1, 32, 32)
        (g(x).mean() + d(x, x).mean()).backward()
        opt.step()
    except Exception:  # noqa: BLE001 - only an optimisation; the real run reports problems
        pass
    finally:
        _WARM.set()


def warm_up_in_background() -> threading.Event:
    """Start :func:`_warm_up` once per process in a background thread; the returned event is set when done."""
    global _warm_thread
    with _WARM_LOCK:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm_up, name="napari-pix2pix warm-up", daemon=True)
            _warm_thread.start()
    return _WARM


def _wait_for_warm_up() -> None:
    """Concurrent first imports of torch's submodules can fail: let a running warm-up finish first."""
    if _warm_thread is not None:
        _WARM.wait(timeout=120)


def load_model_cached(ref: str | os.PathLike[str] | Pix2PixModel) -> Pix2PixModel:
    """:func:`napari_pix2pix.load_model`, remembering the last few models (reloaded when a file changes)."""
    if isinstance(ref, Pix2PixModel):
        return ref
    p = Path(ref)
    key: tuple[Any, ...] = (str(ref),)
    if p.is_file():
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    model = load_model(ref)
    with _CACHE_LOCK:
        _CACHE[key] = model
        while len(_CACHE) > 3:
            _CACHE.popitem(last=False)
    return model


@dataclass(frozen=True)
class PredictSettings:
    """How to run a prediction (see :meth:`Pix2PixModel.predict`)."""

    tile_size: int | str | None = "auto"  # pixels, "auto" (largest within ~512 MB of activations) or None
    device: str = "auto"
    channel_axis: int | None = None
    overlap: int = 64
    batch_size: int | None = None  # None: the engine picks it from the activation memory
    out: str | None = None  # a zarr store to write (a result too large for memory), with a multiscale pyramid
    tta: bool | int = False  # average over flips/rotations (the result only; the uncertainty samples them anyway)
    # a result written to a zarr store (`out`) can be computed on a dask cluster:
    client: str | None = None  # a scheduler's address (tcp://host:8786)
    workers: int | None = None  # or a local cluster of this many single-threaded worker processes (kept for reuse)
    resume: bool = False  # continue the interrupted prediction into `out` (its finished blocks are kept)


def predict_job(
    model: str | os.PathLike[str] | Pix2PixModel,
    image: Any,
    mask: Any = None,
    *,
    settings: PredictSettings = PredictSettings(),  # noqa: B008 - frozen dataclass
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, Any]:
    """Load `model` and predict `image`, yielding :class:`Progress`; return the result (None if cancelled).

    Parameters
    ----------
    model : str, path or Pix2PixModel
        A bundled model name, a model file or a model.
    image : array
        numpy or dask array (never a layer).
    mask : array, optional
        Inpainting mask, non-zero = fill.
    settings : PredictSettings
        Tile size, device, channel axis, ...
    cancel : threading.Event, optional
        Checked after every batch of tiles; when set the job returns None.
    """
    _use_threads()
    yield Progress(0, 0, "loading the model")
    _wait_for_warm_up()
    net = load_model_cached(model)
    big: dict[str, Any] = {"out": settings.out, "pyramid": True, "resume": settings.resume} if settings.out else {}
    if settings.out and (settings.client or settings.workers):
        yield Progress(0, 0, "connecting to the cluster")
        big["client"] = cluster_client(settings.client, settings.workers)
    gen = net.predict_iter(image, mask, **_predict_kwargs(settings), tta=settings.tta, cancel=cancel, **big)
    result = yield from relay(gen, cancel)
    if result is not None and settings.out:  # every level, lazily: napari shows them as a multiscale layer
        return open_levels(settings.out)
    return result


_CLUSTERS: dict[Any, tuple[Any, Any]] = {}
_CLUSTERS_LOCK = threading.Lock()


def cluster_client(address: str | None, workers: int | None) -> Any:
    """A dask Client for a scheduler `address` or a local cluster of `workers` processes, kept for the session.

    Starting a local cluster takes seconds: it is started once and reused by later runs (and
    closed when Python exits, or by :func:`close_clusters`).
    """
    from ..engine.predict.distributed import connect

    key = address or int(workers or 1)
    with _CLUSTERS_LOCK:
        found = _CLUSTERS.get(key)
        if found is not None and getattr(found[0], "status", "") == "running":
            return found[0]
        client, close = connect(address, None if address else workers)
        _CLUSTERS[key] = (client, close)
        if len(_CLUSTERS) == 1:
            atexit.register(close_clusters)
        return client


def close_clusters() -> None:
    """Close the clusters (and clients) :func:`cluster_client` started."""
    with _CLUSTERS_LOCK:
        for _client, close in _CLUSTERS.values():
            with contextlib.suppress(Exception):
                close()
        _CLUSTERS.clear()


def _predict_kwargs(settings: PredictSettings) -> dict[str, Any]:
    return dict(channel_axis=settings.channel_axis, tile_size=settings.tile_size, overlap=settings.overlap,
                batch_size=settings.batch_size, device=settings.device)


@dataclass(frozen=True)
class TrustResult:
    """A prediction with its uncertainty map and, for denoising, the residual's report.

    Attributes
    ----------
    output : array
        The prediction, as :func:`predict_job` returns it.
    uncertainty : ndarray
        float32 per-pixel spread, the output's shape without its channel axis (see
        :func:`napari_pix2pix.engine.predict.uncertainty.uncertainty_iter`).
    residual : ResidualReport or None
        input − output and its structure score (denoising only). For RGB images it is the
        report of the channel means (input and output averaged over colour first), so its
        maps have the uncertainty's shape.
    """

    output: Any
    uncertainty: np.ndarray
    residual: ResidualReport | None = None


def trust_job(
    model: str | os.PathLike[str] | Pix2PixModel,
    image: Any,
    mask: Any = None,
    *,
    settings: PredictSettings = PredictSettings(),  # noqa: B008 - frozen dataclass
    samples: int = 8,
    residual: bool = False,
    cancel: threading.Event | None = None,
) -> Generator[Progress, None, TrustResult | None]:
    """:func:`predict_job`, then the uncertainty map (and the residual): one job, one progress count.

    Progress counts the prediction's tiles and then those of the `samples` uncertainty
    predictions (``total`` is the sum from the start), so the job costs ``n + samples``
    predictions, n being the number of flips averaged for the result (``settings.tta``; 1
    without). Returns None if cancelled.

    Parameters
    ----------
    model, image, mask, settings, cancel
        As for :func:`predict_job`.
    samples : int
        Predictions (flips/rotations and dropout samples) the uncertainty is the spread of (at least 2).
    residual : bool
        Also analyse input − output with
        :func:`napari_pix2pix.engine.predict.uncertainty.residual_report` (for denoising).
    """
    if samples < 2:
        raise ValueError(f"the uncertainty needs at least 2 samples, got {samples}")
    _use_threads()
    yield Progress(0, 0, "loading the model")
    _wait_for_warm_up()
    net = load_model_cached(model)  # once: predict_job is given the model
    n = max(1, len(tta_transforms(PredictOptions(tta=settings.tta).tta, net.config.spatial_dims)))
    # the result's tiles count n each (it averages n predictions), then `samples` predictions follow
    output = yield from relay(predict_job(net, image, mask, settings=settings, cancel=cancel),
                              recount=lambda p: Progress(p.done * n, p.total * (n + samples), p.message)
                              if p.total else p)
    if output is None:
        return None
    spread_iter = uncertainty_iter(net, image, mask, samples=samples, cancel=cancel, **_predict_kwargs(settings))
    # its total counts `samples` predictions: after the result's n, out of n + samples
    spread = yield from relay(spread_iter, cancel, recount=lambda p: Progress(
        p.total // samples * n + p.done, p.total // samples * (n + samples), p.message) if p.total else p)
    if spread is None:
        return None
    report = None
    if residual:
        yield Progress(0, 0, "residual")
        report = _residual(image, output, settings.channel_axis)
    return TrustResult(output, spread, report)


def _residual(image: Any, output: Any, channel_axis: int | None) -> ResidualReport:
    """The residual report of a denoising; of the channel means for images with a channel axis."""
    a = np.asarray(image, np.float32)
    b = np.asarray(output, np.float32)
    if channel_axis is not None:
        a, b = a.mean(axis=channel_axis), b.mean(axis=channel_axis)
    try:  # the image's own noise: the residual is compared with it (noise removed, signal kept?)
        noise = estimate_noise(a)
    except ValueError:  # too small or too little smooth area to tell: the structure check alone
        noise = None
    return residual_report(a, b, noise=noise)


EXPORT_STEPS = {"bioimageio": "writing the bioimage.io package (three weight formats) and running it with "
                               "bioimageio.core",
                "onnx": "writing ONNX and running it with onnxruntime",
                "torchscript": "writing TorchScript and running it"}


def export_job(
    model: str | os.PathLike[str] | Pix2PixModel,
    path: str | os.PathLike[str],
    format: str,
    *,
    check: bool = True,
) -> Generator[Progress, None, ExportReport]:
    """Load `model` and export it (see :meth:`Pix2PixModel.export`), yielding what it is doing.

    Parameters
    ----------
    model : str, path or Pix2PixModel
        A bundled model name, a model file, a bioimage.io package or a model.
    path : path
        Destination file.
    format : {"bioimageio", "onnx", "torchscript"}
        Export format.
    check : bool
        Compare the written file's output with our own prediction on a test image.
    """
    _use_threads()
    yield Progress(0, 0, "loading the model")
    _wait_for_warm_up()
    net = load_model_cached(model)
    yield Progress(0, 0, EXPORT_STEPS.get(format, "exporting"))
    return net.export(path, format, check=check)


def train_job(
    config: TrainConfig,
    *,
    model_path: str | os.PathLike[str],
    data: PairedData | None = None,
    source: dict[str, Any] | None = None,
    resume: str | os.PathLike[str] | None = None,
    stop: threading.Event | None = None,
) -> Generator[TrainEvent, None, Pix2PixModel]:
    """Prepare the pairs and train, yielding the engine's typed updates; return the model (saved to `model_path`).

    Everything runs here, in the worker: reading layer data (a dask layer is computed here, not
    on the GUI thread), synthesizing pairs, the warm start, the training.

    Parameters
    ----------
    config : TrainConfig
        The run's settings. When resuming, the checkpoint's settings are used, with this
        config's resumable options (:data:`~napari_pix2pix.engine.training.config.RESUMABLE`).
    model_path : path
        Where the model file is written when training finishes or is stopped.
    data : PairedData, optional
        Prepared pairs (see :func:`training_data`); otherwise they are made from `source`.
    source : dict, optional
        The engine's data keywords (``input``/``target`` arrays, ``clean``, folders, ``channel_axis``).
    resume : path, optional
        A ``checkpoint.safetensors`` to continue from.
    stop : threading.Event, optional
        Set it to stop after the current step; the model and a checkpoint are saved.
    """
    _use_threads()
    _wait_for_warm_up()
    given: dict[str, Any] = {"data": data} if data is not None else dict(source or {})
    if resume is not None:  # the checkpoint's settings, with what the widget sets for a resumed run
        more = {k: getattr(config, k) for k in RESUMABLE}
        return (yield from train_iter(model_path=model_path, resume=resume, stop=stop, **given, **more))
    return (yield from train_iter(config=config, model_path=model_path, stop=stop, **given))
