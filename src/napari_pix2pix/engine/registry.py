"""Bundled models (shipped inside the wheel) and loading by name or path."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from .formats.modelfile import SUFFIX, read_metadata
from .model import Pix2PixModel


def _models_dir() -> Path:
    return Path(str(files("napari_pix2pix") / "models"))


def bundled_paths() -> dict[str, Path]:
    """Bundled model files by name (file stem)."""
    d = _models_dir()
    if not d.is_dir():
        return {}
    return {p.name[: -len(SUFFIX)]: p for p in sorted(d.glob(f"*{SUFFIX}"))}


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
    exactly as the model file it came from.

    Raises
    ------
    FileNotFoundError
        If it is neither a bundled name nor an existing file.
    ModelFileError
        If the file is not an intact napari-pix2pix model (pickles are refused).
    """
    if isinstance(name_or_path, Pix2PixModel):
        return name_or_path
    bundled = bundled_paths()
    key = str(name_or_path)
    if key in bundled:
        return Pix2PixModel.load(bundled[key])
    path = Path(name_or_path).expanduser()
    if path.is_file() or path.is_dir():  # a model file, or a bioimage.io package (zip, folder, rdf.yaml)
        return Pix2PixModel.load(path)
    names = ", ".join(sorted(bundled)) or "none bundled yet"
    raise FileNotFoundError(f"no model named {key!r}: not a bundled model ({names}) and no such file")
