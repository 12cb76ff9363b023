"""napari-pix2pix: restore and translate scientific images with Pix2Pix.

Importing this package does not import napari or Qt.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .engine.api import NoBundledModelError, colorize, denoise, inpaint, train, translate
from .engine.core.normalization import Normalization
from .engine.core.progress import Cancelled, PredictionCancelled, Progress
from .engine.formats.modelfile import ModelFileError
from .engine.images.noise import NoisyCleanImagesWarning
from .engine.model import Pix2PixModel, import_reference_checkpoint
from .engine.registry import list_models, load_model

__all__ = [
    "Cancelled",
    "ModelFileError",
    "NoBundledModelError",
    "NoisyCleanImagesWarning",
    "Normalization",
    "Pix2PixModel",
    "PredictionCancelled",
    "Progress",
    "__version__",
    "add_result",
    "colorize",
    "denoise",
    "import_reference_checkpoint",
    "inpaint",
    "list_models",
    "load_model",
    "train",
    "translate",
]


def __getattr__(name: str) -> Any:
    # add_result is for napari's console: loaded on first use (it imports napari)
    if name == "add_result":
        from ._napari.layers import add_result

        return add_result
    raise AttributeError(f"module 'napari_pix2pix' has no attribute {name!r}")
