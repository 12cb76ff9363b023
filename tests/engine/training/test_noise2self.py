"""Learning from noisy images alone (the noise2self recipe), validated without clean data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_pix2pix as p2p
from napari_pix2pix import Pix2PixModel
from napari_pix2pix.engine import TrainConfig, ValidationUpdate
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.nn.unet import init_weights

TINY = dict(preset="unet_tiny", generator={"levels": 3, "ngf": 8}, start_from="scratch")


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def _noisy(shape, seed=0, sigma=0.15):
    clean = phantoms.fluorescence(shape, seed=seed) if len(shape) == 2 else np.stack(
        [phantoms.fluorescence(shape[-2:], seed=seed + k) for k in range(shape[0])])
    clean = ((clean - clean.min()) / np.ptp(clean)).astype(np.float32)
    noisy = clean + np.random.default_rng(seed + 100).normal(0, sigma, clean.shape).astype(np.float32)
    return noisy, clean


@pytest.mark.parametrize("layout", ["2d", "stack"])
def test_noisy_images_alone_train_a_denoiser_that_beats_its_input(layout):
    noisy, clean = _noisy((128, 128) if layout == "2d" else (3, 96, 96), seed=1)
    events = []
    model = p2p.train(input=noisy, task="denoise", steps=120, patch_size=32, batch_size=8, lr=2e-3, val_every=40,
                      progress=events.append, **TINY)
    tr = model.training_summary
    assert tr["plan"]["recipe"] == "noise2self" and tr["plan"]["self_supervised"] == "blind-spot"
    assert tr["config"]["recipe"] is None  # the default for noisy images alone, decided by the run
    assert tr["plan"]["noise_model"] and tr["plan"]["noise_model"]["kind"] == "gaussian"
    assert tr["plan"]["noise_model"]["read"] == pytest.approx(0.15, rel=0.2)  # the noise of the images, estimated
    vals = [e for e in events if isinstance(e, ValidationUpdate)]
    assert vals and all(v.target == "estimated" and np.isnan(v.ssim) for v in vals)
    out = model.predict(noisy, device="cpu", precision="fp32")
    assert _psnr(out, clean) > _psnr(noisy, clean) + 2  # learnt the signal, without ever seeing it


def test_noisy_volumes_alone_train_a_3d_denoiser():
    noisy, clean = _noisy((16, 48, 48), seed=2)
    model = p2p.train(input=noisy, task="denoise", spatial_dims=3, steps=60, batch_size=2, lr=2e-3, val_fraction=0,
                      preset="unet3d_tiny", generator={"ngf": 4}, start_from="scratch")
    assert model.spatial_dims == 3 and model.training_summary["plan"]["recipe"] == "noise2self"
    out = model.predict(noisy, device="cpu", precision="fp32")
    assert _psnr(out, clean) > _psnr(noisy, clean) + 1


def test_a_self_supervised_warm_start_keeps_its_weights_unless_others_validate_better(tmp_path):
    noisy, _ = _noisy((128, 128), seed=3)
    torch.manual_seed(0)
    start = Pix2PixModel("denoise", "unet_tiny", levels=3, ngf=8)
    init_weights(start.generator, 0.02)
    start.save(tmp_path / "start.safetensors")
    events = []
    model = p2p.train(input=noisy, task="denoise", start_from=tmp_path / "start.safetensors", steps=20, lr=0.5,
                      patch_size=32, batch_size=4, val_every=5, progress=events.append)  # a rate that wrecks it
    vals = [e for e in events if isinstance(e, ValidationUpdate)]
    assert vals[0].step == 0  # the start is scored first, the same way as every later weight
    tr = model.training_summary
    assert tr["best_val_psnr"] == pytest.approx(max(v.psnr for v in vals))
    kept = tr["weights_of_step"]
    assert kept == max(vals, key=lambda v: v.psnr).step  # the model is the best by the estimate, never a worse one
    if kept == 0:
        for k, v in model.generator.state_dict().items():
            assert torch.equal(v, start.generator.state_dict()[k]), k


def test_noise2self_and_no_target_are_explained_when_misused():
    noisy, clean = _noisy((96, 96), seed=4)
    with pytest.raises(ValueError, match="noise2self learns from noisy images alone"):
        p2p.train(input=noisy, target=clean, recipe="noise2self", steps=1, **TINY)
    with pytest.raises(ValueError, match="train with the noise2self recipe, not 'paper'"):
        p2p.train(input=noisy, recipe="paper", steps=1, **TINY)
    with pytest.raises(ValueError, match="only a denoiser learns from noisy images alone"):
        p2p.train(input=noisy, task="translate", steps=1, **TINY)
    with pytest.raises(ValueError, match="trains denoisers"):
        TrainConfig(task="colorize", recipe="noise2self")


def test_predict_stabilizes_the_noise_only_for_denoisers_and_checks_it():
    rng = np.random.default_rng(5)
    counts = rng.poisson(phantoms.fluorescence((128, 128), seed=5) * 30 + 1).astype(np.float32)
    model = Pix2PixModel("denoise", "unet_tiny", levels=3, ngf=4)
    plain = model.predict(counts, device="cpu", precision="fp32")
    stabilized = model.predict(counts, noise="auto", device="cpu", precision="fp32")
    assert stabilized.shape == counts.shape and not np.allclose(stabilized, plain)
    assert np.array_equal(model.predict(counts, noise="gaussian", device="cpu", precision="fp32"), plain)
    with pytest.raises(ValueError, match="noise must be"):
        model.predict(counts, noise="pink")
    with pytest.raises(ValueError, match="noise= is for denoisers"):
        Pix2PixModel("translate", "unet_tiny", levels=3, ngf=4).predict(counts, noise="auto")
