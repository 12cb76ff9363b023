"""Volumes: 3D networks, 2.5D context, tiling Z, files and exchange in 3D (issue #16)."""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import pytest
import torch
import zarr

import napari_pix2pix as p2p
from napari_pix2pix import Pix2PixModel
from napari_pix2pix.engine.core.device import cpu_has_amx
from napari_pix2pix.engine.formats.modelfile import read_metadata
from napari_pix2pix.engine.training.config import TrainConfig
from napari_pix2pix.nn import PatchGANConfig, PatchGANDiscriminator
from napari_pix2pix.nn.unet import PRESETS_3D, UNetConfig, UNetGenerator, init_weights, preset_config


def smooth_volume(shape=(16, 48, 48), seed=0) -> np.ndarray:
    zz, yy, xx = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    v = np.sin(yy / 7 + seed) * np.cos(xx / 9) + 0.5 * np.sin(zz / 3 + xx / 11)
    return ((v - v.min()) / np.ptp(v)).astype(np.float32)


def tiny_3d(task="denoise", channels=1, gain=0.05, seed=0, **kw) -> Pix2PixModel:
    torch.manual_seed(seed)
    m = Pix2PixModel(task, "unet3d_tiny", channels=channels, ngf=4, **kw)
    init_weights(m.generator, gain)
    return m


def _format_version(path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["format_version"]


def _psnr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = float(b.max() - b.min()) or 1.0
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(rng**2 / mse)


# ---------------------------------------------------------------------- networks
@pytest.mark.parametrize("name, multiple", [("unet3d_tiny", (4, 16, 16)), ("unet3d_small", (8, 32, 32))])
def test_3d_presets_halve_z_fewer_times(name, multiple):
    cfg = preset_config(name, in_channels=1, out_channels=1)
    assert cfg.spatial_dims == 3 and cfg.size_multiple == multiple
    assert sum(cfg.halves(0)) < cfg.levels  # anisotropic: Z is halved at the finest levels only
    net = UNetGenerator(cfg).eval()
    x = torch.randn(1, 1, *multiple)
    with torch.no_grad():
        assert net(x).shape == x.shape
    assert any(isinstance(m, torch.nn.Conv3d) for m in net.modules())


def test_patchgan_3d_judges_volume_patches():
    d = PatchGANDiscriminator(PatchGANConfig(in_channels=2, ndf=4, spatial_dims=3, scales=2, spectral_norm=True))
    x = torch.randn(2, 1, 8, 64, 64)
    logits = d(x, x)
    assert logits.ndim == 5 and logits.shape[0] == 2 and logits.shape[2] >= 1
    judged = d.judge(x, x)
    assert len(judged) == 2 and all(t.ndim == 5 for t, _ in judged)
    with pytest.raises(ValueError, match="spatial_dims"):
        PatchGANConfig(spatial_dims=4)


def test_dims_choices_are_checked():
    assert TrainConfig(spatial_dims=3).generator_config(1, 1).spatial_dims == 3  # no preset: unet3d_tiny
    assert TrainConfig(preset="unet3d_small").dims == 3
    with pytest.raises(ValueError, match="2D network"):
        TrainConfig(spatial_dims=3, preset="unet_tiny")
    with pytest.raises(ValueError, match="3D network"):
        TrainConfig(spatial_dims=2, preset="unet3d_tiny")
    with pytest.raises(ValueError, match="z_context"):
        TrainConfig(spatial_dims=3, z_context=1)
    with pytest.raises(ValueError, match="colorize"):
        TrainConfig(task="colorize", spatial_dims=3)
    with pytest.raises(ValueError, match="per axis"):
        TrainConfig(spatial_dims=3, patch_size=(8, 30, 32), start_from="scratch")  # (a warm start: in resolve)
    with pytest.raises(ValueError, match="z_levels"):
        UNetConfig(z_levels=2)  # a 2D network has no Z
    assert set(PRESETS_3D) == {"unet3d_tiny", "unet3d_small"}


# ---------------------------------------------------------------------- training, files
def test_3d_training_saves_loads_and_predicts_volumes(tmp_path):
    vols = [smooth_volume(seed=s) for s in range(2)]
    path = tmp_path / "v.safetensors"
    model = p2p.train(clean=vols, task="denoise", spatial_dims=3, steps=3, patch_size=(8, 32, 32), batch_size=2,
                      val_every=3, generator={"ngf": 4}, ndf=4, model_path=path, checkpoint_dir=tmp_path / "ck")
    assert model.spatial_dims == 3 and model.z_context == 0
    assert model.training_settings["spatial_dims"] == 3
    assert list(model.training_settings["patch_size"]) == [8, 32, 32]
    assert _format_version(path) == "2"  # a new version: napari-pix2pix 0.1 would misread it
    loaded = p2p.load_model(path)
    assert loaded.spatial_dims == 3
    vol = smooth_volume((12, 40, 36), seed=3)
    a = model.predict(vol, device="cpu", precision="fp32")
    b = loaded.predict(vol, device="cpu", precision="fp32")
    assert a.shape == vol.shape and np.array_equal(a, b)
    more = p2p.train(clean=vols, resume=tmp_path / "ck" / "checkpoint.safetensors", steps=4)  # as in 2D
    assert more.spatial_dims == 3 and more.training_summary["steps_done"] == 4


def test_2d_files_keep_format_version_1(tmp_path):
    path = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=2).save(tmp_path / "m.safetensors")
    assert _format_version(path) == "1"


def test_3d_inpaint_trains_on_3d_masks():
    vol = smooth_volume((16, 32, 32))
    model = p2p.train(clean=vol, task="inpaint", spatial_dims=3, steps=2, patch_size=(8, 32, 32), batch_size=1,
                      val_fraction=0, generator={"ngf": 4}, ndf=4)
    mask = np.zeros(vol.shape, bool)
    mask[4:9, 10:20, 8:16] = True
    out = model.predict(vol, mask, device="cpu")
    assert np.array_equal(out[~mask], vol[~mask])  # outside the 3D hole the volume is kept
    assert not np.array_equal(out[mask], vol[mask])


def test_3d_cpu_training_refuses_bf16_without_amx(monkeypatch):
    from napari_pix2pix.engine.core import device

    monkeypatch.setattr(device, "cpu_has_amx", lambda: False)
    with pytest.raises(ValueError, match="fp32"):
        p2p.train(clean=smooth_volume(), spatial_dims=3, steps=1, patch_size=(8, 32, 32), precision="bf16",
                  device="cpu", generator={"ngf": 4}, val_fraction=0)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device.autocast_dtype("auto", torch.device("cpu"), 3) is None  # "auto": fp32 there
    assert device.autocast_dtype("auto", torch.device("cpu"), 2) == torch.bfloat16


def test_3d_cpu_autocast_chooses_bf16_where_the_cpu_has_amx(monkeypatch):
    """The decision alone: a mock of the CPU property, no kernel computes anything."""
    from napari_pix2pix.engine.core import device

    monkeypatch.setattr(device, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert device.autocast_dtype("auto", torch.device("cpu"), 3) == torch.bfloat16
    assert device.autocast_dtype("bf16", torch.device("cpu"), 3) == torch.bfloat16


def test_3d_cpu_training_with_bf16_chosen_ends_finite_on_any_cpu(monkeypatch):
    """With bf16 chosen (AMX mocked), a 3D run ends with finite weights on every CPU.

    Where the real kernels give NaN gradients (AVX-512 BF16 without AMX, AVX2 emulation) the
    guard skips that step and goes on in fp32; where they do not, the step is taken in bf16.
    Either way the outcome asserted here does not depend on what the kernels compute.
    """
    from napari_pix2pix.engine.core import device

    monkeypatch.setattr(device, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the guard's warning, where the kernels give NaN
        model = p2p.train(clean=smooth_volume(), spatial_dims=3, steps=2, patch_size=(8, 32, 32), precision="bf16",
                          device="cpu", generator={"ngf": 4}, val_fraction=0)
    summary = model.training_summary
    assert summary["steps_done"] == 2
    assert summary.get("fp32_from_step", 2) in (1, 2)  # if bf16 failed, the run went on in fp32 from there
    assert all(torch.isfinite(p).all() for p in model.generator.parameters())


@pytest.mark.skipif(not cpu_has_amx(),
                    reason="needs a CPU with AMX tiles (Sapphire Rapids or later), the real property")
def test_3d_cpu_training_in_bf16_on_a_real_amx_cpu():
    """On real AMX hardware (no mock), 3D bf16 training gives finite gradients: no fp32 fallback."""
    from napari_pix2pix.engine.core import device

    assert device.autocast_dtype("auto", torch.device("cpu"), 3) == torch.bfloat16
    model = p2p.train(clean=smooth_volume(), spatial_dims=3, steps=1, patch_size=(8, 32, 32), precision="bf16",
                      device="cpu", generator={"ngf": 4}, val_fraction=0)
    assert model.training_summary["steps_done"] == 1 and "fp32_from_step" not in model.training_summary


# ---------------------------------------------------------------------- prediction
def test_3d_tiling_is_seamless_on_random_networks():
    model = tiny_3d(gain=0.05)  # as the 2D tests: a random net whose output depends visibly on its input
    shape = (24, 100, 100)
    vol = (smooth_volume(shape, seed=1) + 0.05 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    whole = model.predict(vol, tile_size=None, device="cpu", precision="fp32")
    tiled = model.predict(vol, tile_size=(12, 48, 48), overlap=16, device="cpu", precision="fp32")  # Z, Y, X
    cube = model.predict(vol, tile_size=32, overlap=16, device="cpu", precision="fp32")  # an int: a cube
    assert _psnr(tiled, whole) >= 40 and _psnr(cube, whole) >= 40  # measured 45.4 and 53.9 dB
    assert np.abs(whole - vol).mean() > 0.05  # the network does change the volume


def test_3d_stacks_channels_and_zarr_out(tmp_path):
    model = tiny_3d()
    tz = np.stack([smooth_volume((8, 32, 32), seed=s) for s in range(2)])  # (T, Z, Y, X)
    out = model.predict(tz, device="cpu", precision="fp32")
    assert out.shape == tz.shape
    assert np.allclose(out[1], model.predict(tz[1], device="cpu", precision="fp32"))
    chans = np.stack([tz[0], tz[1]], axis=-1)  # (Z, Y, X, C): a single-channel model on each channel
    oc = model.predict(chans, channel_axis=-1, device="cpu", precision="fp32")
    assert oc.shape == chans.shape and np.allclose(oc[..., 1], out[1])
    src = zarr.open_array(store=str(tmp_path / "in.zarr"), mode="w", shape=tz[0].shape, chunks=(4, 16, 16),
                          dtype="float32")
    src[:] = tz[0]
    dest = tmp_path / "out.zarr"
    z = model.predict(src, out=dest, device="cpu", precision="fp32")
    assert dest.is_dir() and np.allclose(np.asarray(z[:]), out[0])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    with pytest.raises(FileExistsError, match="exists"):
        model.predict(src, out=dest, device="cpu")
    with pytest.raises(ValueError, match=".zarr"):
        model.predict(src, out=tmp_path / "out.tif", device="cpu")


def test_cancelled_zarr_prediction_leaves_nothing(tmp_path):
    model = tiny_3d()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(p2p.PredictionCancelled):
        model.predict(smooth_volume(), out=tmp_path / "o.zarr", cancel=cancel, tile_size=(8, 32, 32), device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_dims_mismatches_give_clear_errors():
    model = tiny_3d()
    with pytest.raises(ValueError, match="3D model.*volumes"):
        model.predict(np.zeros((32, 32), np.float32))
    from napari_pix2pix.engine.core.progress import run_to_end
    from napari_pix2pix.engine.predict.tiled import predict_iter

    flat = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=2)
    with pytest.raises(ValueError, match="augment 9 flips Z"):
        run_to_end(predict_iter(flat, np.zeros((8, 8), np.float32), augment=9))
    with pytest.raises(ValueError, match="tile_size"):
        model.predict(smooth_volume(), tile_size=(32, 32))
    ctx = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=2, z_context=1)
    with pytest.raises(ValueError, match="Z axis"):
        ctx.predict(np.zeros((16, 16), np.float32))


def test_3d_uncertainty_uses_z_flips():
    model = tiny_3d(gain=0.08)
    vol = smooth_volume((8, 32, 32))
    out, unc = model.predict(vol, uncertainty=True, samples=4, device="cpu", precision="fp32")
    assert unc.shape == vol.shape and np.isfinite(unc).all() and unc.max() > 0


# ---------------------------------------------------------------------- 2.5D
def test_2p5d_sees_reflected_neighbours_at_the_first_and_last_planes():
    torch.manual_seed(0)
    m = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=4, z_context=1)
    init_weights(m.generator, 0.08)
    assert m.spatial_dims == 2 and m.z_context == 1 and m.config.in_channels == 3
    vol = np.stack([smooth_image_plane(s) for s in range(5)])  # (Z, Y, X)
    out = m.predict(vol, tile_size=None, device="cpu", precision="fp32")
    # by hand: plane z with its neighbours as channels (z, z-1, z+1), reflected at the ends
    from napari_pix2pix.engine.predict.tiled import plane_ranges

    def by_hand(z, order):
        planes = np.stack([vol[q] for q in order])  # (3, Y, X)
        (lo, hi), _ = plane_ranges(m.normalization, lambda y0, y1: planes[0, y0:y1],  # the plane's own range
                                   planes.shape[1], planes.dtype)
        x = torch.from_numpy(((planes - lo) / (hi - lo) * 1.6 - 0.8).astype(np.float32))[None]
        with torch.no_grad():
            y = m.generator.eval()(x)[0, 0].numpy()
        return (y + 0.8) / 1.6 * (hi - lo) + lo

    assert np.allclose(out[0], by_hand(0, [0, 1, 1]), atol=2e-3)
    assert np.allclose(out[4], by_hand(4, [4, 3, 3]), atol=2e-3)
    assert np.allclose(out[2], by_hand(2, [2, 1, 3]), atol=2e-3)


def smooth_image_plane(seed: int) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32] / 10.0
    return ((np.sin(yy + seed) * np.cos(xx * 1.3 + seed / 2) + 1) / 2).astype(np.float32)


def test_2p5d_trains_and_round_trips(tmp_path):
    vol = smooth_volume((12, 64, 64))
    model = p2p.train(input=vol + 0.05, target=vol, task="translate", z_context=2, steps=2, patch_size=32,
                      batch_size=2, preset="unet_tiny", generator={"levels": 3, "ngf": 4}, ndf=4, val_fraction=0)
    assert model.spatial_dims == 2 and model.z_context == 2 and model.config.in_channels == 5
    path = model.save(tmp_path / "ctx.safetensors")
    assert _format_version(path) == "2" and read_metadata(path)["z_context"] == 2
    loaded = p2p.load_model(path)
    assert loaded.z_context == 2
    assert np.array_equal(loaded.predict(vol, device="cpu"), model.predict(vol, device="cpu"))


# ---------------------------------------------------------------------- exchange
def test_3d_onnx_and_torchscript_exports_match(tmp_path):
    model = tiny_3d()
    for name in ("m.onnx", "m.pt"):
        report = model.export(tmp_path / name)
        assert max(report.max_abs_diff.values()) < 1e-4


def test_3d_bioimageio_package_passes_bioimageio_test(tmp_path):
    from bioimageio.core import test_model

    model = tiny_3d("inpaint")
    path = tmp_path / "v.zip"
    model.export(path)
    summary = test_model(path, devices=["cpu"])
    assert summary.status == "passed", [e.msg for d in summary.details for e in d.errors]
    import zipfile

    rdf = zipfile.ZipFile(path).read("rdf.yaml").decode()
    assert "3d" in rdf and "id: z" in rdf
    loaded = p2p.load_model(path)
    assert loaded.spatial_dims == 3


def test_zarr_out_with_a_pyramid_is_an_ome_zarr_multiscale(tmp_path):
    from napari_pix2pix.engine.images.io import open_zarr
    from napari_pix2pix.engine.images.zarrstore import open_levels

    model = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=2)
    img = (np.random.default_rng(0).random((2, 600, 530)) * 60000).astype(np.uint16)  # a stack of 2 planes
    dest = tmp_path / "big.zarr"
    level0 = model.predict(img, out=dest, pyramid=True, tile_size=256, device="cpu")
    levels = open_levels(dest)
    assert [tuple(a.shape) for a in levels] == [(2, 600, 530), (2, 300, 265)]  # halved down to 256 px
    assert levels[1].dtype == np.uint16
    ref = np.asarray(level0[:]).astype(np.float32)
    expect = ref[:, :600:2, :530:2] / 4 + ref[:, 1::2, :530:2] / 4 + ref[:, :600:2, 1::2] / 4 + ref[:, 1::2, 1::2] / 4
    assert np.abs(np.asarray(levels[1][:]).astype(np.float32) - expect).max() <= 1  # 2x2 means, rounded
    assert np.array_equal(np.asarray(open_zarr(dest)[:]), np.asarray(level0[:]))  # readers find level 0


def test_a_2d_model_starts_a_2p5d_run_as_itself():
    from napari_pix2pix.engine.core.tasks import get_task
    from napari_pix2pix.engine.training.warmstart import start_model

    torch.manual_seed(0)
    flat = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=4)
    init_weights(flat.generator, 0.08)
    ctx = Pix2PixModel.from_network(start_model(flat, get_task("denoise"), 5, 1, z_context=2))  # 1 channel, 2 planes
    assert ctx.z_context == 2 and ctx.config.in_channels == 5 and ctx.spatial_dims == 2
    vol = np.stack([smooth_image_plane(s) for s in range(4)])
    a = ctx.predict(vol, tile_size=None, device="cpu", precision="fp32")
    b = flat.predict(vol, tile_size=None, device="cpu", precision="fp32")
    assert np.allclose(a, b, atol=1e-5)  # the neighbours start at zero weight: the 2D model's output
    with pytest.raises(ValueError, match="3D model: it cannot start a 2D run"):
        start_model(start_model(flat, get_task("denoise"), 1, 1, spatial_dims=3), get_task("denoise"), 1, 1)
    with pytest.raises(ValueError, match="2D model: it cannot start a 3D run"):  # 2.5D: its planes are channels
        start_model(ctx, get_task("denoise"), 5, 1, spatial_dims=3)
    with pytest.raises(ValueError, match="neighbouring planes"):
        start_model(ctx, get_task("denoise"), 3, 1, z_context=1)


def test_2p5d_models_export(tmp_path):
    torch.manual_seed(0)
    m = Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=4, z_context=1)
    init_weights(m.generator, 0.05)
    for name in ("c.onnx", "c.pt"):
        assert max(m.export(tmp_path / name).max_abs_diff.values()) < 1e-4


def test_a_2d_model_starts_a_3d_run_as_itself_plane_by_plane():
    from napari_pix2pix.engine.core.tasks import get_task
    from napari_pix2pix.engine.training.warmstart import inflate, narrow_z, start_model

    torch.manual_seed(0)
    flat = Pix2PixModel("denoise", "unet_tiny", levels=3, ngf=4, block_convs=1, full_res_convs=1, residual=True)
    init_weights(flat.generator, 0.08)
    vol = inflate(flat)
    assert vol.spatial_dims == 3 and vol.config.z_levels == 0 and vol.config.size_multiple == (1, 8, 8)
    assert vol.card["inflated_from"].startswith(flat.name)
    x = torch.randn(1, 1, 5, 16, 24)
    with torch.no_grad():
        a = vol.generator.eval()(x)
        b = torch.stack([flat.generator.eval()(x[:, :, z]) for z in range(5)], dim=2)
    assert torch.allclose(a, b, atol=1e-5)  # the other planes start at zero: each plane is the 2D model's
    slim = inflate(flat, z_kernel_levels=1)  # only the finest level (and the stem and tail) read neighbours
    n_params = [sum(p.numel() for p in m.generator.parameters()) for m in (flat, slim, vol)]
    assert n_params[0] < n_params[1] < n_params[2]
    assert slim.config.receptive_field[0] < vol.config.receptive_field[0]
    assert slim.config.receptive_field[1:] == vol.config.receptive_field[1:]
    with torch.no_grad():
        assert torch.allclose(slim.generator.eval()(x), b, atol=1e-5)
    narrowed = narrow_z(vol, 1)  # the coarse levels' side planes dropped: zero here, so nothing changes
    assert narrowed.config == slim.config and narrowed.card == vol.card
    for key, w in narrowed.generator.state_dict().items():
        assert torch.equal(w, slim.generator.state_dict()[key]), key
    with pytest.raises(ValueError, match="3D model"):
        narrow_z(flat, 1)
    two = start_model(flat, get_task("translate"), 2, 2, spatial_dims=3)  # channels adapted after inflating
    assert two.spatial_dims == 3 and (two.config.in_channels, two.config.out_channels) == (2, 2)


def test_3d_runs_start_from_the_bundled_3d_denoiser_by_default():
    rng = np.random.default_rng(0)
    clean = np.stack([smooth_image_plane(s)[:32, :32] for s in range(4)]).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    m = p2p.train(input=noisy, target=clean, spatial_dims=3, steps=2, batch_size=1, val_fraction=0)
    assert m.spatial_dims == 3 and m.training_summary["started_from"].startswith("denoise3d")
    assert m.config.z_levels == 0 and m.config.ngf == p2p.load_model("denoise").config.ngf
    scratch = p2p.train(input=noisy, target=clean, spatial_dims=3, steps=2, batch_size=1, val_fraction=0,
                        start_from="scratch")
    assert scratch.preset == "unet3d_tiny" and "started_from" not in scratch.training_summary


def test_3d_tta_averages_16_transforms_with_z_flips():
    from napari_pix2pix.engine.core.progress import run_to_end
    from napari_pix2pix.engine.predict.tiled import predict_iter, tta_transforms

    assert tta_transforms(True, 3) == tuple(k // 2 + 8 * (k % 2) for k in range(16))
    assert tta_transforms(2, 3) == (0, 8) and tta_transforms(False, 3) == ()
    model = tiny_3d(gain=0.08)
    vol = smooth_volume((8, 32, 32))
    kw = dict(device="cpu", precision="fp32", tile_size=None)
    got = model.predict(vol, tta=True, **kw)
    want = np.mean([run_to_end(predict_iter(model, vol, augment=k, **kw)) for k in range(16)], axis=0)
    assert np.abs(got - want).max() < 1e-5
