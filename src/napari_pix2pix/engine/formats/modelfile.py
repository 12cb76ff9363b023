"""Model files: safetensors weights + JSON metadata, checksummed, written atomically.

A model file never executes code when loaded: safetensors holds raw tensors and a JSON
header, nothing is unpickled. The header carries a SHA-256 of the metadata and all tensor
bytes; a file whose content no longer matches it is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import torch

from ..core.files import atomic_write_bytes

FORMAT = "napari-pix2pix"
FORMAT_VERSION = "2"  # the newest; files are written in the oldest version that describes them
READ_VERSIONS = ("1", "2")  # 1: 2D models (0.1.0 on); 2: adds volumes (spatial_dims 3) and 2.5D (z_context)
SUFFIX = ".safetensors"


class ModelFileError(ValueError):
    """A model file is missing, not ours, corrupted, or crafted (refused before anything is built)."""


def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_model_file(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Save `tensors` and JSON-serialisable `metadata` to `path` atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(metadata, sort_keys=True)
    header = {"format": FORMAT, "format_version": format_version(metadata), "metadata": meta_json,
              "sha256": _digest(tensors, meta_json)}
    return atomic_write_bytes(path, save(tensors, metadata=header))


def format_version(metadata: dict[str, Any]) -> str:
    """The oldest format version that describes a model (or checkpoint).

    "1" for 2D models, which napari-pix2pix 0.1 reads too; "2" for 3D and 2.5D ones, which it would misread.
    """
    model = metadata.get("model", metadata)  # a checkpoint holds its model's metadata
    arch = model.get("architecture") or {}
    return "2" if arch.get("spatial_dims", 2) != 2 or model.get("z_context") else "1"


def sniff(path: Path) -> str:
    """Guess what a file is from its first bytes: "safetensors", "pickle", "zip" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return "zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


MAX_HEADER = 100_000_000  # bytes of JSON header a safetensors file may declare


def _read_header(f: Any, name: str) -> dict[str, Any]:
    """The JSON header of a safetensors file opened for reading (binary)."""
    head = f.read(8)
    if len(head) < 8:
        raise ModelFileError(f"{name} is too short to be a model file (truncated?)")
    (n,) = struct.unpack("<Q", head)
    if not 2 <= n <= MAX_HEADER:
        raise ModelFileError(f"{name} is not a napari-pix2pix model file (no safetensors header)")
    raw = f.read(n)
    if len(raw) < n:
        raise ModelFileError(f"{name} is truncated (its header is cut short); re-download or re-save it")
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{name} has a corrupted header ({e}); re-download or re-save it") from e
    if not isinstance(header, dict):
        raise ModelFileError(f"{name} has a corrupted header (not a JSON object)")
    return header


def _our_metadata(header: dict[str, Any], name: str) -> dict[str, Any]:
    """Our format's fields of a safetensors header (format, version, metadata JSON, checksum); checked."""
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{name} is a safetensors file but not a napari-pix2pix model (no '{FORMAT}' metadata)")
    if meta.get("format_version") not in READ_VERSIONS:
        raise ModelFileError(
            f"{name} uses model format version {meta.get('format_version')!r}; this napari-pix2pix "
            f"reads versions {', '.join(READ_VERSIONS)}: upgrade napari-pix2pix"
        )
    return meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a model file, from its header alone.

    Cheap (no weights are read, no checksum is verified): for listing models and checking
    choices before work starts. :func:`read_model_file` verifies the whole file.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ModelFileError
        If it is not a napari-pix2pix model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        meta = _our_metadata(_read_header(f, path.name), path.name)
    try:
        out = json.loads(meta.get("metadata", ""))
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{path.name} has unreadable metadata ({e})") from e
    if not isinstance(out, dict):
        raise ModelFileError(f"{path.name} has unreadable metadata (not a JSON object)")
    return out


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and metadata, refusing anything that is not an intact model file of ours.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ModelFileError
        If the file is a pickle/torch checkpoint, corrupted, truncated, of another format,
        or its checksum does not match its content.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    kind = sniff(path)
    if kind in ("pickle", "zip"):
        raise ModelFileError(
            f"{path.name} is a pickled PyTorch checkpoint; napari-pix2pix never unpickles model "
            "files because loading a pickle can run arbitrary code. For a *_net_G.pth from the "
            "reference implementation use napari_pix2pix.import_reference_checkpoint(...); "
            "otherwise ask for a .safetensors model file."
        )
    if kind != "safetensors":
        raise ModelFileError(f"{path.name} is not a napari-pix2pix model file (no safetensors header)")
    data = path.read_bytes()
    header = _read_header(io.BytesIO(data), path.name)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path.name} is corrupted or truncated ({e}); re-download or re-save it") from e
    meta = _our_metadata(header, path.name)
    meta_json = meta.get("metadata", "")
    if _digest(tensors, meta_json) != meta.get("sha256"):
        raise ModelFileError(
            f"{path.name} was modified after it was saved (checksum mismatch); refusing to load it"
        )
    try:
        metadata = json.loads(meta_json)
    except ValueError as e:  # pragma: no cover - guarded by the checksum
        raise ModelFileError(f"{path.name} has unreadable metadata: {e}") from e
    return tensors, metadata
