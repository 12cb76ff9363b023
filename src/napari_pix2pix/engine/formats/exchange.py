"""The export dispatcher: a network to a bioimage.io package, ONNX or TorchScript, checked against our prediction."""

from __future__ import annotations

import os
from typing import Any

from ..core.network import Network
from .export import (
    FORMATS,
    ExportReport,
    check_network,
    guess_format,
    onnx_runner,
    torchscript_runner,
    write_onnx,
    write_torchscript,
)


def export(net: Network, path: str | os.PathLike[str], format: str | None = None, *, check: bool = True,
           **options: Any) -> ExportReport:
    """Export `net` in the format its suffix (or `format`) names; see :meth:`Pix2PixModel.export`.

    Raises
    ------
    ValueError
        For an unknown format.
    TypeError
        For options a format does not take (only bioimage.io packages take any).
    """
    fmt = format or guess_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    if fmt == "bioimageio":
        from .bioimageio.write import export_bioimageio

        return export_bioimageio(net, path, check=check, **options)
    if options:
        raise TypeError(f"{fmt} export takes no options {sorted(options)}")
    if fmt == "onnx":
        written = write_onnx(net, path)
        diffs = {"onnxruntime": check_network(net, onnx_runner(written))} if check else {}
    else:
        written = write_torchscript(net, path)
        diffs = {"torchscript": check_network(net, torchscript_runner(written))} if check else {}
    return ExportReport(written, fmt, diffs)
