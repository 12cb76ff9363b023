"""Reading bioimage.io model packages of napari-pix2pix generators; needs none of the ``bioimageio`` extra.

A package (a ``.zip``, its unpacked folder or its ``rdf.yaml``) written by
:func:`napari_pix2pix.engine.formats.bioimageio.write.export_bioimageio` is read back with a safe YAML
loader; the SHA-256 of every packaged file is verified, the state dict is loaded with
``torch.load(weights_only=True)`` and the packaged source is never imported: predictions
equal those of the original model file.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..modelfile import ModelFileError

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
ARCHITECTURE_CALLABLE = "ExportGenerator"  # the class in nn/unet.py a package names as its architecture
CONFIG_KEY = "napari_pix2pix"  # rdf.yaml config entry holding our full metadata


class _Package:
    """Files of a package: a zip, a folder, or the folder of an rdf.yaml."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.root: Path | None = path
            names = [n for n in RDF_NAMES if (path / n).is_file()]
            if not names:
                raise ModelFileError(f"{path.name} holds no rdf.yaml: not a bioimage.io package")
            self.rdf_name = names[0]
        elif path.suffix.lower() in (".yaml", ".yml"):
            self.root, self.rdf_name = path.parent, path.name
        else:
            self.root = None
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as e:
                raise ModelFileError(f"{path.name} is not a readable zip (corrupted or truncated?): {e}") from e
            names = [n for n in self._zip.namelist() if n in RDF_NAMES or n.endswith(".bioimageio.yaml")]
            if not names:
                raise ModelFileError(f"{path.name} holds no rdf.yaml: not a bioimage.io package")
            self.rdf_name = names[0]

    def read(self, name: str) -> bytes:
        if name.startswith(("http://", "https://")) or ".." in Path(name).parts or Path(name).is_absolute():
            raise ModelFileError(f"{self.path.name}: {name!r} is not a file inside the package")
        try:
            if self._zip is not None:
                _check_member(self._zip.getinfo(name), self.path.name)
                return self._zip.read(name)
            return (Path(self.root or ".") / name).read_bytes()
        except KeyError as e:
            raise ModelFileError(f"{self.path.name}: {name!r} is listed in rdf.yaml but missing") from e
        except FileNotFoundError as e:
            raise ModelFileError(f"{self.path.name}: {name!r} is listed in rdf.yaml but missing") from e
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC errors, truncation
            raise ModelFileError(f"{self.path.name}: {name!r} is corrupted ({e})") from e

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


MAX_MEMBER = 2 * 2**30  # bytes a packaged file may unpack to
MAX_RATIO = 200  # and its unpacked / packed size (weights compress about 1.1x; a zip bomb 1000x and more)


def _check_member(info: zipfile.ZipInfo, package: str) -> None:
    """Refuse a zip member that would unpack to more than any model needs (a zip bomb)."""
    if info.file_size > MAX_MEMBER:
        raise ModelFileError(f"{package}: {info.filename} would unpack to {info.file_size / 2**30:.1f} GiB, more than "
                             f"any model file ({MAX_MEMBER / 2**30:.0f} GiB); refusing to read it")
    if info.file_size > 16 * 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        raise ModelFileError(f"{package}: {info.filename} unpacks {info.file_size // max(info.compress_size, 1)}-fold "
                             "(a zip bomb?); refusing to read it")


def is_package(path: str | os.PathLike[str]) -> bool:
    """True if `path` is to be read as a bioimage.io package.

    That is a folder with an rdf.yaml, a ``.yaml`` file, a ``.zip`` file (a damaged one is
    then refused with a message saying so) or any zip holding an rdf.yaml.
    """
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in RDF_NAMES)
    if p.suffix.lower() in (".yaml", ".yml", ".zip"):
        return p.is_file()
    if not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return any(n in RDF_NAMES or n.endswith(".bioimageio.yaml") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _file_entries(node: Any, where: str = "") -> Iterator[tuple[str, str, str | None]]:
    """(location, source, sha256) of every file reference in an rdf."""
    if isinstance(node, dict):
        src = node.get("source")
        if isinstance(src, str) and not src.startswith(("http://", "https://")):
            yield where or "rdf", src, node.get("sha256")
        for k, v in node.items():
            if k != CONFIG_KEY:
                yield from _file_entries(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _file_entries(v, f"{where}[{i}]")


def _read_rdf(pkg: _Package) -> dict[str, Any]:
    import yaml

    try:
        rdf = yaml.safe_load(pkg.read(pkg.rdf_name).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{pkg.path.name}: {pkg.rdf_name} is not valid YAML ({e})") from e
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ModelFileError(f"{pkg.path.name}: {pkg.rdf_name} does not describe a bioimage.io model")
    return rdf


def _metadata_from_rdf(rdf: dict[str, Any], name: str) -> dict[str, Any]:
    """Our metadata from an rdf: the stored napari-pix2pix metadata, updated by the rdf's own fields."""
    weights = rdf.get("weights") or {}
    psd = weights.get("pytorch_state_dict") if isinstance(weights, dict) else None
    if not isinstance(psd, dict):
        raise ModelFileError(f"{name} has no pytorch_state_dict weights: napari-pix2pix reads those")
    arch = psd.get("architecture") or {}
    if not isinstance(arch, dict) or arch.get("callable") != ARCHITECTURE_CALLABLE:
        raise ModelFileError(
            f"{name} is a bioimage.io model but not a napari-pix2pix generator (its architecture is "
            f"{arch.get('callable') if isinstance(arch, dict) else arch!r}, not {ARCHITECTURE_CALLABLE})")
    kwargs = dict(arch.get("kwargs") or {})
    inpaint = bool(kwargs.pop("inpaint", False))
    stored = (rdf.get("config") or {}).get(CONFIG_KEY)
    meta: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    task = meta.get("task") or ("inpaint" if inpaint else "translate")
    if (task == "inpaint") != inpaint:
        raise ModelFileError(f"{name}: its architecture (inpaint={inpaint}) does not fit its task {task!r}")
    meta["task"] = task
    meta["architecture"] = {"type": "unet", **kwargs}  # the architecture the weights are loaded into
    if isinstance(rdf.get("name"), str):
        meta["name"] = rdf["name"]
    # percentiles as the package states them (a user may have edited them)
    normalization = dict(meta.get("normalization") or {})
    inputs = rdf.get("inputs") or []
    for step in (inputs[0].get("preprocessing") or []) if inputs and isinstance(inputs[0], dict) else []:
        if isinstance(step, dict) and step.get("id") == "scale_range":
            kw = step.get("kwargs") or {}
            try:  # the spec's defaults are 0 and 100
                normalization["low"] = float(kw.get("min_percentile", 0.0))
                normalization["high"] = float(kw.get("max_percentile", 100.0))
            except (TypeError, ValueError) as e:
                raise ModelFileError(f"{name}: unreadable scale_range percentiles ({e})") from e
    meta["normalization"] = normalization
    card = dict(meta.get("card") or {})
    if isinstance(rdf.get("description"), str) and rdf["description"] and "summary" not in card:
        card["summary"] = rdf["description"]
    meta["card"] = card
    meta.setdefault("preset", "custom")
    return meta


def package_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our metadata of a package from its rdf.yaml only (cheap: no weights, no checksums)."""
    pkg = _Package(Path(path))
    try:
        return _metadata_from_rdf(_read_rdf(pkg), Path(path).name)
    finally:
        pkg.close()


def read_package(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and metadata of a bioimage.io package of a napari-pix2pix generator.

    Every packaged file with a ``sha256`` in rdf.yaml is checked; the weights must have
    one. The state dict is read with ``torch.load(weights_only=True)``; no packaged code is
    run.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ModelFileError
        If it is not a readable package of one of our generators, or a file does not
        match its checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model package {str(path)!r} does not exist")
    pkg = _Package(path)
    try:
        rdf = _read_rdf(pkg)
        meta = _metadata_from_rdf(rdf, path.name)
        weights_src = rdf["weights"]["pytorch_state_dict"].get("source")
        if not isinstance(weights_src, str):
            raise ModelFileError(f"{path.name}: pytorch_state_dict weights have no source")
        weights: bytes | None = None
        for where, src, sha in _file_entries(rdf):  # every file, not only the weights: other tools run them
            if sha is None:
                continue
            data = pkg.read(src)
            if hashlib.sha256(data).hexdigest() != str(sha).lower():
                raise ModelFileError(
                    f"{path.name}: {src} ({where}) does not match its sha256 in {pkg.rdf_name}: the package was "
                    "modified or corrupted after it was written; refusing to load it")
            if src == weights_src:
                weights = data
        if weights is None:
            raise ModelFileError(f"{path.name}: the pytorch_state_dict weights have no sha256 in {pkg.rdf_name}; "
                                 "re-save the package with bioimageio.spec so that they can be verified")
        try:
            state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling refusal or corruption
            raise ModelFileError(f"{path.name}: {weights_src} is not a weights-only state dict ({e})") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileError(f"{path.name}: {weights_src} holds no state dict of tensors")
        return dict(state), meta
    finally:
        pkg.close()


__all__ = ["ARCHITECTURE_CALLABLE", "CONFIG_KEY", "RDF_NAMES", "is_package", "package_metadata", "read_package"]
