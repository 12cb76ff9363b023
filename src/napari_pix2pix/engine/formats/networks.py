"""Networks to and from files: model files, bioimage.io packages and bundled models, checked before anything is built.

:func:`read_network` reads a model file (safetensors + metadata, never unpickled, SHA-256
verified) or a bioimage.io package of one of our generators; before any network is built the
stored architecture is checked against a bound far above every preset and against the stored
weights (names and shapes, on PyTorch's ``meta`` device: nothing is allocated). Every reader
takes the class to build (``cls``): the rooms build :class:`~..core.network.Network`, the front
door its :class:`~napari_pix2pix.engine.model.Pix2PixModel`.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import torch

from ...nn import UNetConfig, UNetGenerator
from ..core.network import Network
from ..core.normalization import Normalization
from ..core.tasks import TASKS
from .modelfile import SUFFIX, ModelFileError, read_model_file, write_model_file

N = TypeVar("N", bound=Network)
MAX_PARAMETERS = 250_000_000  # bound for a stored architecture: unet_256 has 54 M, the other presets fewer


# ---------------------------------------------------------------------- checks
def architecture(meta: dict[str, Any]) -> UNetConfig:
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


# ---------------------------------------------------------------------- reading
def network_from_metadata(meta: dict[str, Any], cls: type[N] = Network) -> N:  # type: ignore[assignment]
    """An untrained network with the architecture and settings recorded in `meta` (bounded: see check_weights)."""
    config = architecture(meta)
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
    net = cls(task, meta.get("preset", "custom"), config=config, normalization=norm, name=meta.get("name"),
              z_context=z_context)
    net.training_summary = dict(meta.get("training", {}))
    net.card = dict(meta.get("card", {}))
    return net


def read_network(path: str | os.PathLike[str], cls: type[N] = Network) -> N:  # type: ignore[assignment]
    """A model file written by :func:`write_network`, or a bioimage.io package of one of our generators.

    Model files are never unpickled, and a corrupted file (its SHA-256 integrity check fails) is
    refused. bioimage.io packages (a ``.zip``, its folder or its ``rdf.yaml``) have every file
    checked against its SHA-256 and their weights read with ``torch.load(weights_only=True)``; the
    package's code is never run.
    """
    from .bioimageio.read import is_package, read_package

    if Path(path).exists() and is_package(path):
        tensors, meta = read_package(path)
    elif Path(path).is_dir():
        raise ModelFileError(f"{Path(path).name} is a folder without an rdf.yaml: neither a model file nor an "
                             "unpacked bioimage.io package")
    else:
        tensors, meta = read_model_file(path)
    check_weights(architecture(meta), tensors, Path(path).name)
    net = network_from_metadata(meta, cls)
    try:  # float16-stored weights are copied into the float32 generator
        net.generator.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{Path(path).name}: weights do not fit the stored architecture ({e})") from e
    net.generator.eval()
    net.source = str(path)
    return net


def bundled_paths() -> dict[str, Path]:
    """Bundled model files by name (file stem), shipped inside the wheel."""
    d = Path(str(files("napari_pix2pix") / "models"))
    if not d.is_dir():
        return {}
    return {p.name[: -len(SUFFIX)]: p for p in sorted(d.glob(f"*{SUFFIX}"))}


def load_network(ref: str | os.PathLike[str] | Network, cls: type[N] = Network) -> N:  # type: ignore[assignment]
    """A bundled model by name, a model file or a bioimage.io package; a network given is returned as it is.

    Raises
    ------
    FileNotFoundError
        If it is neither a bundled name nor an existing file.
    ModelFileError
        If the file is not an intact napari-pix2pix model (pickles are refused).
    """
    if isinstance(ref, Network):
        return ref  # type: ignore[return-value]
    bundled = bundled_paths()
    key = str(ref)
    if key in bundled:
        return read_network(bundled[key], cls)
    path = Path(ref).expanduser()
    if path.is_file() or path.is_dir():  # a model file, or a bioimage.io package (zip, folder, rdf.yaml)
        return read_network(path, cls)
    names = ", ".join(sorted(bundled)) or "none bundled yet"
    raise FileNotFoundError(f"no model named {key!r}: not a bundled model ({names}) and no such file")


# ---------------------------------------------------------------------- writing
def write_network(net: Network, path: str | os.PathLike[str], *, half: bool = False) -> Path:
    """Save weights (safetensors) and metadata to one file, atomically (see :meth:`Pix2PixModel.save`)."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".safetensors")
    state = dict(net.generator.state_dict().items())
    if half:  # float16, except tensors float16 cannot hold (|x| > 65504, e.g. a BatchNorm variance)
        state = {k: _half_if_it_fits(v) for k, v in state.items()}
    return write_model_file(path, state, net.metadata)


def _half_if_it_fits(v: torch.Tensor) -> torch.Tensor:
    """`v` as float16 if it is floating point and float16 holds every value (else unchanged)."""
    if not v.is_floating_point():
        return v
    h = v.half()
    return h if bool(torch.isfinite(h).all()) or not bool(torch.isfinite(v).all()) else v
