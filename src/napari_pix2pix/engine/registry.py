"""Bundled models (shipped inside the wheel) and loading by name or path."""

from __future__ import annotations

import os
from typing import Any

from .formats.modelfile import read_metadata
from .formats.networks import bundled_paths, load_network
from .model import Pix2PixModel

__all__ = ["bundled_paths", "default_model_name", "list_models", "load_model"]


def list_models() -> dict[str, dict[str, Any]]:
    """Bundled models: ``{name: {"task", "preset", "description", "path"}}``.

    Examples
    --------
    >>> sorted(list_models())  # doctest: +SKIP
    ['colorize', 'colorize-he', 'denoise', 'denoise3d', 'inpaint']
    """
    out = {}
    for name, path in bundled_paths().items():
        meta = read_metadata(path)  # the header only: listing does not verify whole files
        out[name] = {
            "task": meta.get("task"),
            "preset": meta.get("preset"),
            "description": meta.get("card", {}).get("summary", ""),
            "path": str(path),
        }
    return out


def default_model_name(task: str) -> str | None:
    """Name of the bundled model for `task`, or None when none is bundled.

    The model named after the task (``colorize``) comes before specialised ones of the same
    task (``colorize-he``).
    """
    names = [name for name, info in list_models().items() if info["task"] == task]
    return task if task in names else (names[0] if names else None)


def load_model(name_or_path: str | os.PathLike[str] | Pix2PixModel) -> Pix2PixModel:
    """Load a bundled model by name (see :func:`list_models`), a model file, or a bioimage.io package.

    A bioimage.io package (zip, unpacked folder or its rdf.yaml) of one of our generators,
    written by :meth:`Pix2PixModel.export_bioimageio` (possibly edited since), predicts
    exactly as the model file it came from. A model given is returned as it is. Errors: see
    :func:`~napari_pix2pix.engine.formats.networks.load_network` (FileNotFoundError, ModelFileError).
    """
    if isinstance(name_or_path, Pix2PixModel):
        return name_or_path
    return load_network(name_or_path, Pix2PixModel)
