"""The bundled generators: shipped in the wheel, load offline, and beat trivial baselines.

The images here are phantoms drawn with seeds the training script never uses (it uses
1000-1047 for fluorescence, 6000-6023 for the volumes of denoise3d, 3000-3023 for landscapes
and 4000-4095 for the varied H&E sections of colorize and colorize-he; the first colorizer
used 2000-2023), so none
was seen in training; but they come from the same generators, so these are in-distribution
checks. Real, held-out images are measured by ``benchmarks/quality.py``.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage import color

import napari_pix2pix as p2p
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.images.synthesis import add_noise, random_mask
from napari_pix2pix.engine.registry import bundled_paths

TASK_OF = {"denoise": "denoise", "inpaint": "inpaint", "colorize": "colorize", "colorize-he": "colorize",
           "denoise3d": "denoise"}


def _psnr(ref, x, where=None):
    d = (ref.astype(np.float64) - x) ** 2
    return 10 * np.log10(1.0 / (d[where] if where is not None else d).mean())


def _need(task):
    assert task in bundled_paths(), f"the bundled {task} model ships in the package (src/napari_pix2pix/models)"


def test_no_bundled_model_goes_unchecked():
    assert set(bundled_paths()) <= set(TASK_OF)


@pytest.mark.parametrize("name", sorted(TASK_OF))
def test_every_bundled_model_has_a_card(name):
    _need(name)
    models = p2p.list_models()
    assert models[name]["task"] == TASK_OF[name]
    path = Path(models[name]["path"])
    assert path.stat().st_size <= 15e6
    model = p2p.load_model(name)
    for key in ("summary", "data", "provenance", "licence", "recipe", "quality", "limits"):
        assert model.card.get(key), f"{name} model card lacks {key!r}"
    assert model.training_summary["status"] == "finished"
    assert (Path(__file__).resolve().parents[2] / model.card["card"]).is_file()


def test_denoise_beats_the_noisy_input():
    _need("denoise")
    clean = phantoms.fluorescence((192, 192), seed=777)
    rng = np.random.default_rng(0)
    for params in ({"photons": 0.0, "sigma": 0.1}, {"photons": 20.0, "sigma": 0.02}):
        noisy = add_noise(clean, params, rng)
        out = p2p.denoise(noisy)
        assert out.dtype == noisy.dtype and out.shape == noisy.shape
        assert _psnr(clean, out) > _psnr(clean, noisy) + 6, params
    # 16-bit camera data, per channel of a 2-channel image
    two = np.stack([phantoms.to_uint16(add_noise(clean, {"photons": 0.0, "sigma": 0.08}, rng)) for _ in range(2)], -1)
    out = p2p.denoise(two, channel_axis=-1)
    assert out.dtype == np.uint16 and out.shape == two.shape
    assert np.std(np.diff(out[..., 0].astype(float), axis=1)) < 0.7 * np.std(np.diff(two[..., 0].astype(float), axis=1))


def test_denoise3d_reads_neighbouring_planes_and_beats_the_2d_denoiser_on_a_volume():
    _need("denoise3d")
    model = p2p.load_model("denoise3d")
    assert model.spatial_dims == 3 and model.config.z_levels == 0 and model.config.z_kernel_levels == 3
    clean = phantoms.fluorescence_volume((16, 96, 96), seed=777)  # training used seeds 6000-6023
    noisy = add_noise(clean, {"photons": 0.0, "sigma": 0.1}, np.random.default_rng(0))
    three = _psnr(clean, model.predict(noisy))
    two = _psnr(clean, p2p.denoise(noisy))  # the 2D denoiser, plane by plane
    assert three > two + 0.3 > _psnr(clean, noisy) + 5, (three, two)


def test_inpaint_beats_zero_fill_and_keeps_the_rest():
    _need("inpaint")
    clean = phantoms.fluorescence((192, 192), seed=778)
    mask = random_mask(clean.shape, np.random.default_rng(3), coverage=(0.15, 0.16))
    damaged = np.where(mask, 0, clean).astype(np.float32)
    out = p2p.inpaint(damaged, mask)
    np.testing.assert_array_equal(out[~mask], damaged[~mask])
    assert _psnr(clean, out, mask) > _psnr(clean, damaged, mask) + 8
    # RGB: applied per channel
    rgb = phantoms.histology((160, 160), seed=9001)
    m2 = random_mask(rgb.shape[:2], np.random.default_rng(4), coverage=(0.15, 0.16))
    dam = rgb.copy()
    dam[m2] = 0
    out = p2p.inpaint(dam, m2, channel_axis=-1)
    m3 = np.broadcast_to(m2[..., None], rgb.shape)
    assert _psnr(rgb, out, m3) > _psnr(rgb, dam, m3) + 8


def test_colorize_beats_the_gray_image_on_histology():
    _need("colorize")
    rgb = phantoms.histology((192, 192), seed=9002)
    gray = color.rgb2gray(rgb).astype(np.float32)
    out = np.clip(p2p.colorize(gray), 0, 1)
    assert out.shape == (*gray.shape, 3)
    lab = color.rgb2lab(rgb)
    de_ours = color.deltaE_ciede2000(lab, color.rgb2lab(out)).mean()
    de_gray = color.deltaE_ciede2000(lab, color.rgb2lab(np.repeat(gray[..., None], 3, -1))).mean()
    assert de_ours < 0.5 * de_gray


def test_colorize_he_paints_h_and_e_and_is_not_the_default():
    _need("colorize-he")
    assert p2p.load_model("colorize-he").task.name == "colorize"
    if "colorize" in bundled_paths():  # colorize() without a model: the general colorizer
        from napari_pix2pix.engine.registry import default_model_name

        assert default_model_name("colorize") == "colorize"
    for seed in (9003, 9004):  # varied sections, seeds the training never used
        rgb = phantoms.histology((192, 192), seed=seed, varied=True)
        gray = color.rgb2gray(rgb).astype(np.float32)
        out = np.clip(p2p.colorize(gray, model="colorize-he"), 0, 1)
        lab = color.rgb2lab(rgb)
        de_ours = color.deltaE_ciede2000(lab, color.rgb2lab(out)).mean()
        de_gray = color.deltaE_ciede2000(lab, color.rgb2lab(np.repeat(gray[..., None], 3, -1))).mean()
        assert de_ours < 0.5 * de_gray, seed


@pytest.mark.slow
def test_wheel_ships_the_models_and_stays_small(tmp_path):
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("napari_pix2pix-*.whl")
    assert wheel.stat().st_size < 50e6
    names = zipfile.ZipFile(wheel).namelist()
    for name in bundled_paths():
        assert f"napari_pix2pix/models/{name}.safetensors" in names
    assert "napari_pix2pix/napari.yaml" in names
