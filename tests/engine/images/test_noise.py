"""The noise of an image, from the image alone: a Poisson–Gaussian model, and its variance stabilization."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_pix2pix.engine.images.noise import NoiseModel, estimate_noise, noise_model, stabilize, unstabilize


def _smooth(shape=(512, 512), seed=0) -> np.ndarray:
    base = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 10)
    return (base - base.min()) / np.ptp(base)


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_noise_is_found_with_its_sigma(seed):
    rng = np.random.default_rng(seed + 10)
    found = estimate_noise(_smooth(seed=seed) * 100 + rng.normal(0, 2.0, (512, 512)))
    assert found.gain == 0 and found.kind == "gaussian"
    assert found.read == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize(("gain", "offset", "peak"), [(2.0, 100.0, 200), (1.0, 0.0, 30), (4.0, 500.0, 1000)])
def test_photon_noise_gain_and_offset_are_recovered(gain, offset, peak):
    """Within 10 % (the offset: of itself, or 4 % of the signal's range where that is larger: it is where the
    variance line, measured over the signal's range, reaches zero)."""
    rng = np.random.default_rng(3)
    y = gain * rng.poisson(_smooth(seed=2) * peak + 2) + offset
    found = estimate_noise(y.astype(np.float32))
    assert found.gain == pytest.approx(gain, rel=0.1)
    assert found.offset == pytest.approx(offset, rel=0.1, abs=0.04 * gain * peak)
    assert found.kind in ("poisson", "poisson-gaussian") and found.read < 0.5 * gain * np.sqrt(peak)


def test_poisson_gaussian_noise_predicts_the_noise_at_every_level():
    """With read noise too, gain is recovered and the noise predicted at every level within 10 %.

    (Offset and read noise act together on the dark end: read² − gain · offset is what the
    variance shows; they are told apart by the third cumulant, less precisely.)
    """
    rng = np.random.default_rng(5)
    truth = NoiseModel(gain=1.0, offset=10.0, read=4.0)
    y = truth.gain * rng.poisson(_smooth(seed=4) * 60 + 1) + truth.offset + rng.normal(0, truth.read, (512, 512))
    found = estimate_noise(y)
    assert found.gain == pytest.approx(truth.gain, rel=0.1)
    for level in (12.0, 40.0, 70.0):
        assert np.sqrt(found.variance(level)) == pytest.approx(np.sqrt(truth.variance(level)), rel=0.1)


def test_the_estimate_works_on_stacks_channels_and_integers_and_names_bad_input():
    rng = np.random.default_rng(6)
    stack = np.stack([rng.poisson(_smooth(seed=s) * 40 + 1) for s in range(3)]).astype(np.uint16)
    assert estimate_noise(stack).gain == pytest.approx(1.0, rel=0.1)
    assert estimate_noise(np.moveaxis(stack, 0, -1), channel_axis=-1).gain == pytest.approx(1.0, rel=0.1)
    with pytest.raises(ValueError, match="at least 32 x 32"):
        estimate_noise(np.zeros((16, 16)))


def test_stabilization_makes_the_noise_unit_gaussian_and_inverts_without_bias():
    rng = np.random.default_rng(7)
    model = NoiseModel(2.0, 100.0, 3.0)
    for lam in (3.0, 30.0):
        y = 2.0 * rng.poisson(np.full(200_000, lam)) + 100 + rng.normal(0, 3, 200_000)
        z = stabilize(y, model)
        assert z.std() == pytest.approx(1.0, abs=0.05)
        assert unstabilize(np.array([z.mean()]), model)[0] == pytest.approx(2 * lam + 100, rel=0.01)
    with pytest.raises(ValueError, match="photon noise"):
        stabilize(y, NoiseModel(0.0, 0.0, 1.0))


def test_noise_specifications_are_checked():
    assert noise_model("auto") == "auto" and noise_model({"gain": 2, "offset": 1, "read": 0}).gain == 2
    for bad, match in (("pink", "noise must be"), ({"gain": -1}, ">= 0"), ({"gian": 1}, "unknown"),
                       ({"gain": float("nan")}, "finite"), (3, "noise must be")):
        with pytest.raises(ValueError, match=match):
            noise_model(bad)
