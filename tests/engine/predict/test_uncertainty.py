import numpy as np
import pytest
from scipy import ndimage

import napari_pix2pix as p2p
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.images.synthesis import add_noise
from napari_pix2pix.engine.predict.uncertainty import residual_report
from napari_pix2pix.engine.training.loop import ValidationUpdate
from tests._helpers import tiny_model


@pytest.fixture(scope="module")
def denoiser():
    clean = [phantoms.fluorescence((128, 128), s) for s in range(4)]
    vals = []
    model = p2p.train(clean=clean, task="denoise", steps=200, lr=1e-3, preset="unet_tiny",
                      generator={"levels": 4, "ngf": 16}, ndf=16, patch_size=64, batch_size=4, val_every=100,
                      noise={"gaussian_sigma": (0.1, 0.1), "photons": (0, 0), "poisson_fraction": 0},
                      val_fraction=0.25, progress=lambda e: vals.append(e) if isinstance(e, ValidationUpdate) else None)
    return model, vals


def test_uncertainty_points_at_the_errors(denoiser):
    model, _ = denoiser
    truth = phantoms.fluorescence((192, 160), seed=99)
    noisy = add_noise(truth, {"photons": 0.0, "sigma": 0.1}, np.random.default_rng(5))
    out, unc = model.predict(noisy, uncertainty=True, samples=8)
    np.testing.assert_array_equal(out, model.predict(noisy))  # the result itself is unchanged
    assert unc.shape == noisy.shape and unc.dtype == np.float32 and (unc >= 0).all()
    err = np.abs(out - truth).ravel()
    order = np.argsort(unc.ravel())
    n = order.size // 10
    ratio = err[order[-n:]].mean() / err[order[:n]].mean()
    assert ratio >= 2.0, ratio


def test_validation_reports_uncertainty(denoiser):
    _, vals = denoiser
    assert vals and all(v.uncertainty > 0 for v in vals)
    assert vals[-1].preview_uncertainty.shape == vals[-1].preview[1].shape[1:]


def test_residual_structure_score(denoiser):
    model, _ = denoiser
    truth = phantoms.fluorescence((160, 160), seed=98)
    noisy = add_noise(truth, {"photons": 0.0, "sigma": 0.1}, np.random.default_rng(6))
    ideal = residual_report(noisy, truth)  # pure noise: no structure
    over = residual_report(noisy, ndimage.gaussian_filter(noisy, 3))  # removes signal with the noise
    ours = residual_report(noisy, model.predict(noisy))
    assert abs(ideal.score) < 0.05 and abs(ideal.autocorrelation) < 0.05
    assert over.score > 0.15 and ours.score < over.score
    # flags: no false alarms on the pure-noise residual; the blur that removes signal flags more
    assert ideal.flagged.mean() == 0 and over.flagged.mean() > ideal.flagged.mean()
    strict = residual_report(noisy, ndimage.gaussian_filter(noisy, 3), threshold=0.3)
    assert strict.flagged.mean() > 0.01  # the threshold is what sets the false-alarm / detection balance
    np.testing.assert_allclose(ours.residual, noisy - model.predict(noisy), atol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        residual_report(noisy, noisy[:10])


def test_large_hole_is_uncertain_inside_only():
    m = tiny_model("inpaint", levels=4, ngf=8, dropout_blocks=1)
    im = phantoms.nuclei((128, 128), 0)
    mask = np.zeros(im.shape, bool)
    mask[32:96, 40:100] = True
    _, unc = m.predict(im, mask, uncertainty=True, samples=6)
    assert unc[mask].mean() > 10 * (unc[~mask].mean() + 1e-9)
    assert unc[~mask].max() == 0  # outside the hole the input is returned unchanged


def test_uncertainty_layouts_and_errors():
    m = tiny_model("colorize")
    out, unc = m.predict(np.random.default_rng(0).random((40, 50), dtype=np.float32), uncertainty=True, samples=2)
    assert out.shape == (40, 50, 3) and unc.shape == (40, 50)
    with pytest.raises(ValueError, match="at least 2 samples"):
        m.predict(np.zeros((8, 8), np.float32), uncertainty=True, samples=1)


def test_the_residual_is_checked_against_the_estimated_noise():
    """Calibrated on real and synthetic images (benchmarks/results/residual_noise.log): a good result passes,
    a blurred one is flagged as removed signal, a half-denoised one as noise left."""
    from scipy import ndimage

    from napari_pix2pix.engine.images.noise import estimate_noise
    from napari_pix2pix.engine.images.phantoms import fluorescence

    rng = np.random.default_rng(0)
    clean = fluorescence((256, 256), seed=3).astype(np.float32)
    noisy = clean + rng.normal(0, 0.08, clean.shape).astype(np.float32)
    noise = estimate_noise(noisy)
    assert noise.read == pytest.approx(0.08, rel=0.1)
    good = residual_report(noisy, clean, noise=noise)  # what an ideal denoiser returns
    assert 0.8 < good.noise_ratio < 1.2 and good.removed_signal.mean() < 0.02 and good.remaining_noise.mean() < 0.02
    blurred = residual_report(noisy, ndimage.gaussian_filter(clean, 2), noise=noise)
    assert blurred.noise_ratio > 1.3 and blurred.removed_signal.mean() > 0.1 and blurred.flagged.mean() > 0.1
    half = residual_report(noisy, 0.5 * (clean + noisy), noise=noise)
    assert half.noise_ratio < 0.35 and half.remaining_noise.mean() > 0.9
    assert residual_report(noisy, clean).noise_ratio is None  # without a noise model: the structure check alone
