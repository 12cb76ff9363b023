"""Model choices for the widgets: the bundled models and the model files the user has used.

The list of recently used model files is a small JSON file in the user's config folder
(``platformdirs.user_config_dir("napari-pix2pix")``, or ``$NAPARI_PIX2PIX_CONFIG_DIR``).
:data:`RECENT` emits ``changed`` whenever a file is added, so a model saved by the Train
widget shows up in every restoration widget at once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

from ..engine.core.files import atomic_write_bytes
from ..engine.formats.bioimageio.read import is_package, package_metadata
from ..engine.formats.modelfile import ModelFileError, read_metadata
from ..engine.registry import bundled_paths
from ..nn.unet import UNetConfig

CONFIG_ENV = "NAPARI_PIX2PIX_CONFIG_DIR"
MAX_RECENT = 12


def config_dir() -> Path:
    """Folder for the plugin's settings (``$NAPARI_PIX2PIX_CONFIG_DIR`` overrides it)."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-pix2pix", appauthor=False))


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored in a napari-pix2pix file (or bioimage.io package), read from its header only.

    Cheap (no weights are read, no checksum is verified): for listing and checking
    choices before work starts. Loading the model verifies the file.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ModelFileError
        If it is not a napari-pix2pix file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    if is_package(path):  # a bioimage.io package: its rdf.yaml
        return package_metadata(path)
    return read_metadata(path)


def short_path(path: str | os.PathLike[str]) -> str:
    """`path` with the home folder written as ``~``."""
    p, home = str(path), str(Path.home())
    return "~" + p[len(home):] if home != "/" and p.startswith(home + os.sep) else p


@dataclass(frozen=True)
class ModelInfo:
    """A model the widgets can offer: a bundled name or a file path, and what it does."""

    ref: str  # what load_model takes: a bundled name or a file path
    task: str
    name: str
    preset: str
    multiple: int  # inputs are padded to a multiple of this; the smallest tile size
    bundled: bool = False
    description: str = ""
    spatial_dims: int = 2  # 3: restores volumes (Z, Y, X) as volumes
    z_context: int = 0  # 2.5D: sees each plane with this many neighbours on either side

    @property
    def whole_stack(self) -> bool:
        """Whether the model needs the whole stack (3D, or 2.5D: a plane's neighbours), not one plane."""
        return self.spatial_dims == 3 or self.z_context > 0

    @property
    def label(self) -> str:
        """Text for a combo box."""
        if self.bundled:
            return f"{self.name} (bundled)"
        return Path(self.ref).name

    @property
    def tooltip(self) -> str:
        """Longer description for a tooltip."""
        where = "bundled with napari-pix2pix" if self.bundled else short_path(self.ref)
        dims = ", 3D (volumes)" if self.spatial_dims == 3 else (
            f", 2.5D ({self.z_context} neighbouring planes each side)" if self.z_context else "")
        return f"{self.name}: {self.task} model, {self.preset}{dims}\n{where}" + (
            f"\n{self.description}" if self.description else "")


def model_info(path: str | os.PathLike[str], *, bundled_name: str | None = None) -> ModelInfo:
    """Describe a model file from its header (see :func:`read_header`).

    Raises
    ------
    ModelFileError
        If it is not a napari-pix2pix model file (a training checkpoint is refused with a hint).
    """
    meta = read_header(path)
    if meta.get("kind") == "training-checkpoint":
        raise ModelFileError(
            f"{Path(path).name} is a training checkpoint, not a model file: choose the .safetensors model "
            "file the Train widget wrote (or resume training from this checkpoint)"
        )
    try:
        arch = {k: v for k, v in dict(meta["architecture"]).items() if k != "type"}
        config = UNetConfig(**arch)
        multiple = max(config.size_multiple)
        task = str(meta["task"])
        z_context = int(meta.get("z_context", 0))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{Path(path).name} has incomplete model metadata ({e})") from e
    return ModelInfo(
        ref=bundled_name or str(Path(path).resolve()),
        task=task,
        name=str(meta.get("name") or Path(path).stem),
        preset=str(meta.get("preset", "custom")),
        multiple=multiple,
        bundled=bundled_name is not None,
        description=str(meta.get("card", {}).get("summary", "")),
        spatial_dims=config.spatial_dims,
        z_context=z_context,
    )


class RecentModels:
    """Model files used or trained recently, newest first, kept in ``recent_models.json``."""

    changed = Signal()

    @property
    def file(self) -> Path:
        """Where the list is stored."""
        return config_dir() / "recent_models.json"

    def paths(self) -> list[Path]:
        """Remembered model files that still exist, newest first."""
        try:
            items = json.loads(self.file.read_text())["models"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        return [Path(p) for p in items if isinstance(p, str) and Path(p).exists()]

    def add(self, path: str | os.PathLike[str]) -> None:
        """Put `path` first in the list and tell the widgets."""
        p = Path(path).resolve()
        items = [p] + [q for q in self.paths() if q != p]
        self._write(items[:MAX_RECENT])
        self.changed.emit()

    def remove(self, path: str | os.PathLike[str]) -> None:
        """Forget `path`."""
        p = Path(path).resolve()
        self._write([q for q in self.paths() if q != p])
        self.changed.emit()

    def _write(self, items: list[Path]) -> None:
        try:
            atomic_write_bytes(self.file, json.dumps({"models": [str(q) for q in items]}, indent=1).encode())
        except OSError:  # a read-only config folder must not break the widgets
            pass


RECENT = RecentModels()


class SessionModels:
    """Model files the Train widget saved in this napari session, newest last.

    A restoration widget docked after a training preselects the newest of its task.
    """

    def __init__(self) -> None:
        self.paths: list[str] = []

    def trained(self, path: str | os.PathLike[str]) -> None:
        """Remember a model file saved by a training of this session."""
        p = str(Path(path).resolve())
        self.paths = [q for q in self.paths if q != p] + [p]

    def newest(self, refs: list[str]) -> str | None:
        """The newest session-trained model among `refs` (the choices of a widget), if any."""
        for p in reversed(self.paths):
            if p in refs:
                return p
        return None


SESSION = SessionModels()


def model_choices(task: str | None = None) -> list[ModelInfo]:
    """Models to offer for `task` (None: every task): bundled ones first, then recent files.

    Among the bundled ones, each task's general model (named after the task, e.g. ``colorize``)
    comes before its specialised ones (``colorize-he``), so it is the widgets' default.
    """
    out: list[ModelInfo] = []
    for name, path in bundled_paths().items():
        try:
            info = model_info(path, bundled_name=name)
        except (OSError, ModelFileError):
            continue
        if task is None or info.task == task:
            out.append(info)
    out.sort(key=lambda i: i.ref != i.task)  # stable: otherwise by file name, as default_model_name
    for path in RECENT.paths():
        try:
            info = model_info(path)
        except (OSError, ModelFileError):
            continue
        if task is None or info.task == task:
            out.append(info)
    return out


@dataclass(frozen=True)
class ComputeSetting:
    """Where the restoration widgets compute results written to a zarr store (remembered across sessions).

    ``where`` is ``"here"`` (this napari process), ``"local"`` (a local dask cluster of
    ``workers`` single-threaded processes) or ``"scheduler"`` (the dask scheduler at ``address``).
    """

    where: str = "here"
    workers: int = 2
    address: str = ""

    def predict_kwargs(self) -> dict[str, Any]:
        """The ``client=`` / ``workers=`` of :meth:`Pix2PixModel.predict` for this choice."""
        if self.where == "local":
            return {"workers": int(self.workers)}
        if self.where == "scheduler":
            return {"client": self.address}
        return {}

    def problem(self) -> str | None:
        """Why this choice cannot run (a missing address, dask.distributed not installed), or None."""
        if self.where == "here":
            return None
        if self.where == "scheduler" and "://" not in self.address and ":" not in self.address:
            return ("Compute on: give the dask scheduler's address, e.g. tcp://host:8786 (printed by "
                    "'dask scheduler' or the cluster's dashboard).")
        try:
            import distributed  # noqa: F401
        except ImportError:
            return 'Compute on a cluster needs dask.distributed: pip install "napari-pix2pix[cluster]".'
        return None


def _compute_file() -> Path:
    return config_dir() / "compute.json"


def compute_setting() -> ComputeSetting:
    """The remembered "Compute on" choice (this process when none, or when the file is unreadable)."""
    try:
        d = json.loads(_compute_file().read_text())
        s = ComputeSetting(str(d.get("where", "here")), max(1, int(d.get("workers", 2))), str(d.get("address", "")))
    except (OSError, ValueError, TypeError, AttributeError):
        return ComputeSetting()
    return s if s.where in ("here", "local", "scheduler") else ComputeSetting()


def save_compute_setting(setting: ComputeSetting) -> None:
    """Remember the "Compute on" choice (a settings folder that cannot be written is not an error)."""
    try:
        _compute_file().parent.mkdir(parents=True, exist_ok=True)
        data = {"where": setting.where, "workers": setting.workers, "address": setting.address}
        atomic_write_bytes(_compute_file(), json.dumps(data, indent=1).encode())
    except OSError:
        pass
