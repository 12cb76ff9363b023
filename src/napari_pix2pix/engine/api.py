"""Task functions (the bundled model for each task, or a model of the user's) and training, through the front door.

:func:`train` and :func:`train_iter` run the loop of :mod:`.training` (which works on a
:class:`~.core.network.Network`) and give the trained network the front door, :class:`Pix2PixModel`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from .core.progress import TrainEvent, run_to_end
from .model import Pix2PixModel
from .registry import default_model_name, load_model

ModelLike = str | os.PathLike[str] | Pix2PixModel | None


class NoBundledModelError(LookupError):
    """No pretrained model is bundled for a task."""


def resolve_model(model: ModelLike, task: str) -> Pix2PixModel:
    """The model to use for `task`: the given one (name, path, object) or the bundled one."""
    if model is None:
        name = default_model_name(task)
        if name is None:
            raise NoBundledModelError(
                f"no pretrained {task} model is bundled with this version of napari-pix2pix; "
                f"pass model='path/to/model.safetensors' (train one with napari_pix2pix.train)"
            )
        model = name
    m = load_model(model)
    if m.task.name != task:
        raise ValueError(f"the model “{m.name}” does {m.task.name}, not {task}: choose a {task} model "
                         f"(p2p.list_models()), or apply any model with p2p.translate")
    return m


def denoise(image: Any, model: ModelLike = None, *, channel_axis: int | None = None, **kwargs: Any) -> np.ndarray:
    """Denoise an image with the bundled denoiser or `model`.

    Parameters
    ----------
    image : array-like
        2D image, stack (leading axes) or multi-channel image (`channel_axis`), any dtype.
    model : str, path or Pix2PixModel, optional
        A bundled model name, a model file, or a model; default the bundled denoiser.
    channel_axis : int, optional
        Channel axis; a single-channel model is applied to each channel.
    **kwargs
        Passed to :meth:`Pix2PixModel.predict` (tile_size, device, progress, ...).

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as `image`.

    Examples
    --------
    >>> from napari_pix2pix import denoise  # doctest: +SKIP
    >>> clean = denoise(viewer.layers["noisy"].data)  # doctest: +SKIP
    """
    return resolve_model(model, "denoise").predict(image, channel_axis=channel_axis, **kwargs)


def inpaint(image: Any, mask: Any = None, model: ModelLike = None, *, channel_axis: int | None = None,
            **kwargs: Any) -> np.ndarray:
    """Fill the pixels where `mask` is non-zero; every other pixel is returned unchanged.

    Parameters
    ----------
    image : array-like
        2D image, stack or multi-channel image, any dtype.
    mask : array-like, optional
        Non-zero where pixels are to be filled: the image's shape without channels, or
        (Y, X) for every plane. Default: the image's NaN pixels.
    model : str, path or Pix2PixModel, optional
        Default the bundled inpainter.
    channel_axis : int, optional
        Channel axis; the mask applies to every channel.
    **kwargs
        Passed to :meth:`Pix2PixModel.predict` (``uncertainty=True`` returns the spread,
        zero outside the mask, too).

    Returns
    -------
    numpy.ndarray
        Same shape and dtype as `image`.
    """
    return resolve_model(model, "inpaint").predict(image, mask, channel_axis=channel_axis, **kwargs)


def colorize(image: Any, model: ModelLike = None, *, channel_axis: int | None = None, **kwargs: Any) -> np.ndarray:
    """Colorize a grayscale image (an RGB input is first reduced to its luminance).

    Parameters
    ----------
    image : array-like
        Grayscale 2D image or stack, any dtype.
    model : str, path or Pix2PixModel, optional
        Default the bundled colorizer.
    channel_axis : int, optional
        Channel axis of an RGB input.
    **kwargs
        Passed to :meth:`Pix2PixModel.predict`.

    Returns
    -------
    numpy.ndarray
        RGB, the input's dtype and intensity scale, colour as the last axis (or at
        `channel_axis`).
    """
    return resolve_model(model, "colorize").predict(image, channel_axis=channel_axis, **kwargs)


def translate(image: Any, model: ModelLike, *, channel_axis: int | None = None, **kwargs: Any) -> np.ndarray:
    """Apply any trained image-to-image model (e.g. low-SNR → high-SNR, label-free → stained).

    Parameters
    ----------
    image : array-like
        Input image, stack or multi-channel image.
    model : str, path or Pix2PixModel
        The trained model (any task): a model file, a bioimage.io package, a bundled name.
    channel_axis : int, optional
        Channel axis of multi-channel images; a single-channel model is applied to each.
    **kwargs
        Passed to :meth:`Pix2PixModel.predict` (tile_size, device, out, progress, ...).

    Returns
    -------
    numpy.ndarray
        The input's dtype and scale, or float32 on the training targets' scale for models
        trained between modalities.
    """
    if model is None:
        raise ValueError("translate needs a model: a model file trained with napari_pix2pix.train")
    return load_model(model).predict(image, channel_axis=channel_axis, **kwargs)


def train_iter(**options: Any) -> Generator[TrainEvent, None, Pix2PixModel]:
    """Train a Pix2Pix model, yielding typed updates; returns the trained :class:`Pix2PixModel`.

    The parameters are those of :func:`train` (without `progress`); None means not given. Stop
    iterating (``close()``) to stop between two steps: the model and a checkpoint are saved.
    """
    from .training import loop  # training pulls in more modules: loaded on first use

    given = {k: v for k, v in options.items() if v is not None or k not in _NAMED}
    net = yield from loop.train_iter(**given)
    return Pix2PixModel.from_network(net)


_NAMED = ("input", "target", "clean", "task", "recipe", "minutes", "steps", "start_from", "model_path", "config")


def train(
    *,
    input: Any = None,
    target: Any = None,
    clean: Any = None,
    task: str | None = None,
    recipe: str | None = None,
    minutes: float | None = None,
    steps: int | None = None,
    start_from: str | os.PathLike[str] | Pix2PixModel | None = None,
    model_path: str | os.PathLike[str] | None = None,
    config: Any = None,
    progress: Callable[[TrainEvent], Any] | None = None,
    **options: Any,
) -> Pix2PixModel:
    """Train a Pix2Pix model on pairs (or pairs synthesized from clean images) and return it.

    Parameters
    ----------
    input, target : array-like, optional
        Paired images (a 2D image, a stack, a list of images; channels with ``channel_axis=``):
        what the model is given and what it should make of it, pixel for pixel.
    clean : array-like, optional
        Clean images instead of pairs: the task's inputs are synthesized (noise, holes, gray).
        Folders: ``input_dir=``/``target_dir=``, ``clean_dir=`` or ``aligned_dir=``.
    task : {"denoise", "inpaint", "colorize", "translate"}, optional
        What the model learns (default: denoise, or the config's).
    recipe : {"fidelity", "paper", "realism", "noise2noise"}, optional
        How it learns (default: the task's: fidelity; colorize: paper).
    minutes : float, optional
        A time budget for the whole call: the steps follow from the measured speed.
    steps : int, optional
        Training steps instead (default 2000).
    start_from : str, path or Pix2PixModel, optional
        Warm start from a bundled model (``"denoise"``), a model file or a model (never
        modified); ``"scratch"`` for a new network. Default: the task's bundled model where it fits.
    model_path : path, optional
        Where the model file is written (also when stopped or failed); checkpoints beside it.
    config : TrainConfig, optional
        Settings in parts (:class:`~napari_pix2pix.engine.training.config.TrainConfig`);
        the options given here override its own.
    progress : callable, optional
        Called with every update (:class:`StepUpdate`, :class:`ValidationUpdate`, ...).
    **options
        Any other training option by name (``patch_size=``, ``batch_size=``, ``lr=``,
        ``spatial_dims=``, ``val_fraction=``, ``device=``, ``checkpoint_dir=``, ``resume=``,
        ``stop=``, ...; the table: :data:`napari_pix2pix.engine.training.config.OPTIONS`).
        Unknown names are refused with the closest known one.

    Returns
    -------
    Pix2PixModel
        The trained model (the best weights by validation); its ``training_summary`` says how
        the run went, its ``training_settings`` what it was trained with.

    Examples
    --------
    >>> from skimage import data
    >>> import napari_pix2pix as p2p
    >>> model = p2p.train(clean=data.camera(), task="denoise", steps=2, patch_size=64,
    ...                   preset="unet_tiny", val_fraction=0)  # doctest: +SKIP
    """
    return run_to_end(train_iter(input=input, target=target, clean=clean, task=task, recipe=recipe, minutes=minutes,
                                 steps=steps, start_from=start_from, model_path=model_path, config=config, **options),
                      progress, what="training")
