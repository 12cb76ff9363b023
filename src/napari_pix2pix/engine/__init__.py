"""The engine: numpy + torch, no napari, no Qt. Its surface, for the napari side, the command line and scripts.

Rooms, each importing only the ones before it::

    core/      progress updates, devices and precision, tasks, normalization, Network
    images/    image files, zarr stores, degradations synthesized for training, phantoms
    predict/   tile plans and blending, the inference runner, the tiled predictor, uncertainty
    formats/   model files, bioimage.io packages, ONNX, TorchScript, reference checkpoints
    training/  settings and recipes, paired data, the loop, time budgets, validation, warm starts

On top: :mod:`.model` (``Pix2PixModel``, the front door), :mod:`.registry` (bundled models)
and :mod:`.api` (the task functions, ``train`` and ``train_iter``). The training room's
names load on first use (they pull in more modules).
"""

from __future__ import annotations

from typing import Any

from .api import NoBundledModelError, colorize, denoise, inpaint, resolve_model, train, train_iter, translate
from .core.device import DEVICES, PRECISIONS, cpu_has_fast_bf16, resolve_device, resolve_precision
from .core.network import Network
from .core.normalization import Normalization
from .core.progress import (
    Cancelled,
    CheckpointSaved,
    PredictionCancelled,
    Progress,
    StatusUpdate,
    StepUpdate,
    TrainEvent,
    TrainingStatus,
    ValidationUpdate,
    run_to_end,
)
from .core.tasks import TASKS, get_task
from .formats.export import ExportReport, guess_format
from .formats.modelfile import ModelFileError, read_metadata, read_model_file
from .images.noise import NoisyCleanImagesWarning
from .model import Pix2PixModel, import_reference_checkpoint
from .predict.stores import predict_iter
from .predict.tiled import TTA_COUNTS, PredictOptions, tta_transforms
from .predict.uncertainty import ResidualReport, residual_report, uncertainty_iter
from .registry import bundled_paths, default_model_name, list_models, load_model

_LAZY = {  # name: module (relative to this package) — training pulls in more modules
    "TrainConfig": ".training.config", "RECIPES": ".training.config", "DEFAULT_RECIPES": ".training.config",
    "RESUMABLE": ".training.config", "resume_config": ".training.config", "describe": ".training.loop",
    "training_data": ".training.loop", "CHECKPOINT": ".training.checkpoints",
    "load_checkpoint": ".training.checkpoints", "compatible_tasks": ".training.warmstart",
    "PairedData": ".training.data", "patch_shape": ".training.data", "pair_folders": ".training.data",
}

__all__ = [
    "DEVICES", "PRECISIONS", "TASKS", "TTA_COUNTS", "Cancelled", "CheckpointSaved", "ExportReport", "ModelFileError",
    "Network", "NoBundledModelError", "NoisyCleanImagesWarning", "Normalization", "Pix2PixModel", "PredictOptions",
    "PredictionCancelled",
    "Progress", "ResidualReport", "StatusUpdate", "StepUpdate", "TrainEvent", "TrainingStatus", "ValidationUpdate",
    "bundled_paths", "colorize", "cpu_has_fast_bf16", "default_model_name", "denoise", "get_task", "guess_format",
    "import_reference_checkpoint", "inpaint", "list_models", "load_model", "predict_iter", "read_metadata",
    "read_model_file", "residual_report", "resolve_device", "resolve_model", "resolve_precision", "run_to_end",
    "train", "train_iter", "translate", "tta_transforms", "uncertainty_iter", *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'napari_pix2pix.engine' has no attribute {name!r}")
