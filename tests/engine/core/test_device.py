"""Devices and precision: one rule for prediction and training, checked with simulated GPUs."""

from __future__ import annotations

import pytest
import torch

from napari_pix2pix.engine.core import device as dev
from napari_pix2pix.engine.core.device import autocast_dtype, resolve_device, resolve_precision

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def gpu(monkeypatch):
    """Simulate a machine: ``gpu(cuda=True, bf16=False, mps=False, cpu_bf16=False)``."""

    def make(cuda=False, bf16=True, mps=False, cpu_bf16=False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(dev, "cuda_has_native_bf16", lambda: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(dev, "cpu_has_fast_bf16", lambda: cpu_bf16)

    return make


@pytest.mark.parametrize(
    ("machine", "device", "precision", "expected"),
    [
        ({}, CPU, "auto", torch.float32),  # no native bf16: emulated bf16 is ~100x slower
        ({"cpu_bf16": True}, CPU, "auto", torch.bfloat16),
        ({}, CPU, "bf16", torch.bfloat16),  # asked for explicitly: honoured
        ({}, CPU, "fp32", torch.float32),
        ({"cuda": True}, CUDA, "auto", torch.bfloat16),
        ({"cuda": True, "bf16": False}, CUDA, "auto", torch.float16),
        ({"cuda": True, "bf16": False}, CUDA, "bf16", torch.bfloat16),  # explicit: never silently fp16
        ({"cuda": True}, CUDA, "fp16", torch.float16),
        ({"mps": True}, MPS, "auto", torch.float16),
        ({"mps": True}, MPS, "fp32", torch.float32),
    ],
)
def test_one_precision_rule_for_prediction_and_training(gpu, machine, device, precision, expected):
    gpu(**machine)
    assert resolve_precision(precision, device) == expected
    amp = autocast_dtype(precision, device)  # what training autocasts to: the same dtype (None = plain fp32)
    assert (amp or torch.float32) == expected


def test_fp16_on_the_cpu_is_refused_for_prediction_and_training(gpu):
    gpu()
    for resolve in (resolve_precision, autocast_dtype):
        with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
            resolve("fp16", CPU)
    from napari_pix2pix.engine.training.config import TrainConfig
    from napari_pix2pix.engine.training.distributed import device_for

    cfg = TrainConfig(precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="fp16 is not supported on the CPU"):
        autocast_dtype(cfg.precision, device_for(cfg.device, 1))


def test_training_without_autocast_support_falls_back_for_auto_only(gpu, monkeypatch):
    gpu(mps=True)
    monkeypatch.setattr(dev, "_autocast_available", lambda kind: kind != "mps")
    assert autocast_dtype("auto", MPS) is None
    with pytest.raises(ValueError, match="cannot train in fp16 on mps"):
        autocast_dtype("fp16", MPS)
    assert resolve_precision("auto", MPS) == torch.float16  # prediction casts weights: no autocast needed


def test_unknown_precision_and_devices_are_named(gpu):
    gpu()
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", CPU)
    with pytest.raises(ValueError, match="PyTorch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="Apple MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_auto_device_prefers_cuda_then_mps(gpu):
    gpu(cuda=True, mps=True)
    assert resolve_device("auto").type == "cuda"
    gpu(cuda=False, mps=True)
    assert resolve_device("auto").type == "mps"
    gpu()
    assert resolve_device("auto").type == "cpu"
