import threading

import numpy as np
import pytest
import torch

from napari_pix2pix import PredictionCancelled, Progress
from napari_pix2pix.engine.predict.tiling import iter_bands, plan_axis
from tests._helpers import smooth_image, tiny_model


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("task", ["denoise", "inpaint", "colorize", "translate"])
def test_dtype_round_trip(task, dtype):
    m = tiny_model(task)
    im = smooth_image((37, 51), dtype)
    mask = np.zeros(im.shape, bool)
    mask[10:20, 5:30] = True
    out = m.predict(im, mask if task == "inpaint" else None)
    assert out.dtype == dtype
    assert out.shape == (im.shape + (3,) if task == "colorize" else im.shape)
    assert np.isfinite(out.astype(np.float64)).all()


@pytest.mark.parametrize(
    "shape,channel_axis,channels",
    [((3, 40, 50), None, 1), ((2, 3, 40, 50), None, 1), ((40, 50, 3), -1, 3), ((3, 40, 50), 0, 3),
     ((2, 40, 2, 50), 2, 2)],
)
def test_layouts(shape, channel_axis, channels):
    m = tiny_model("denoise", channels=channels)
    im = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = m.predict(im, channel_axis=channel_axis)
    assert out.shape == shape


def test_single_channel_model_runs_per_channel():
    m = tiny_model("denoise")
    rgb = np.stack([smooth_image((40, 60), seed=s) for s in range(3)], -1)
    out = m.predict(rgb, channel_axis=-1)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], m.predict(rgb[..., c]), atol=1e-5)


def test_stack_planes_are_independent():
    m = tiny_model("denoise")
    stack = np.stack([smooth_image((40, 60), seed=s) * (s + 1) for s in range(3)])
    out = m.predict(stack)
    np.testing.assert_allclose(out[2], m.predict(stack[2]), atol=1e-5)


def test_colorize_layouts():
    m = tiny_model("colorize")
    gray = smooth_image((40, 60), np.uint8)
    assert m.predict(gray).shape == (40, 60, 3)
    assert m.predict(np.stack([gray, gray])).shape == (2, 40, 60, 3)
    rgb = np.stack([gray] * 3, -1)
    assert m.predict(rgb, channel_axis=-1).shape == (40, 60, 3)  # RGB in: reduced to luminance


def test_inpaint_keeps_pixels_outside_mask_and_fills_nan():
    m = tiny_model("inpaint")
    im = smooth_image((64, 80), np.float32)
    mask = np.zeros(im.shape, bool)
    mask[20:40, 30:50] = True
    holed = im.copy()
    holed[mask] = np.nan
    out = m.predict(holed, mask)
    assert np.array_equal(out[~mask], im[~mask])
    assert np.isfinite(out).all()
    out2 = m.predict(holed)  # NaNs are the mask by default
    np.testing.assert_array_equal(out, out2)
    stack_mask = np.stack([mask, np.zeros_like(mask)])
    out3 = m.predict(np.stack([im, im]), stack_mask)
    assert np.array_equal(out3[1], im)


def test_tiling_is_an_exact_partition_of_unity():
    im = np.random.default_rng(1).random((1, 301, 403)).astype(np.float32)
    py, px = plan_axis(301, 16, 128, 32), plan_axis(403, 16, 128, 32)
    assert len(py.starts) > 1 and len(px.starts) > 1
    assert all(s % 16 == 0 for s in py.starts + px.starts)
    out = np.full_like(im, np.nan)

    def read(y0, y1, x0, x1):
        return np.pad(im, ((0, 0), (py.pad, py.padded - 301 - py.pad), (px.pad, px.padded - 403 - px.pad)),
                      mode="reflect")[:, y0:y1, x0:x1]

    tiles = 0
    for band in iter_bands((py, px), read, lambda b: b, 1, 3):
        tiles += band.tiles
        if band.rows is not None:
            out[:, band.y0 : band.y1] = band.rows
    assert tiles == len(py.starts) * len(px.starts)
    np.testing.assert_allclose(out, im, atol=1e-6)


@pytest.mark.parametrize("levels", [3, 5])
def test_no_seams_tiled_vs_untiled(levels):
    m = tiny_model("denoise", levels=levels, ngf=8)
    im = smooth_image((300, 400))
    whole = m.predict(im, tile_size=None)
    tiled = m.predict(im, tile_size=128, overlap=64)
    diff = np.abs(tiled - whole)
    assert diff.mean() < 0.005 * whole.std()
    assert diff.max() < 0.1 * whole.std()
    # a seam would show as a jump in the difference along tile borders: none bigger than elsewhere
    gy = np.abs(np.diff(tiled, axis=0)).max()
    assert gy < 1.5 * np.abs(np.diff(whole, axis=0)).max()


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 700), (129, 65)])
def test_odd_sizes(shape):
    m = tiny_model("denoise")
    out = m.predict(np.random.default_rng(0).random(shape, dtype=np.float32), tile_size=64, overlap=16)
    assert out.shape == shape and np.isfinite(out).all()


def test_constant_image_gives_finite_output():
    m = tiny_model("denoise")
    for im in (np.zeros((32, 32), np.uint16), np.full((32, 32), 7.5, np.float32)):
        out = m.predict(im)
        assert np.isfinite(out.astype(float)).all()


@pytest.mark.parametrize(
    "image,kwargs,error,match",
    [
        (np.zeros((0, 10), np.float32), {}, ValueError, "empty"),
        (np.zeros(10, np.float32), {}, ValueError, "spatial"),
        (np.array([["a"]]), {}, TypeError, "not numeric"),
        ([1, 2, 3], {}, TypeError, "array"),
        (np.full((8, 8), np.nan, np.float32), {}, ValueError, "NaN"),
        (np.zeros((8, 8, 5), np.float32), {"channel_axis": 3}, ValueError, "out of range"),
        (np.zeros((8, 8), np.float32), {"tile_size": 4}, ValueError, "multiple"),
    ],
)
def test_bad_inputs_are_named(image, kwargs, error, match):
    m = tiny_model("denoise")
    with pytest.raises(error, match=match):
        m.predict(image, **kwargs)


def test_channel_and_mask_mismatches_are_named():
    m3 = tiny_model("denoise", channels=3)
    with pytest.raises(ValueError, match="3-channel"):
        m3.predict(np.zeros((8, 8, 2), np.float32), channel_axis=-1)
    inp = tiny_model("inpaint")
    with pytest.raises(ValueError, match="needs a mask"):
        inp.predict(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="mask shape"):
        inp.predict(np.zeros((8, 8), np.float32), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="only used by inpaint"):
        m3.predict(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)), channel_axis=-1)


def test_out_memmap_zarr_and_dask_inputs(tmp_path):
    import dask.array as da
    import zarr
    m = tiny_model("denoise")
    im = smooth_image((150, 170), np.uint16)
    ref = m.predict(im, tile_size=64, overlap=16)
    mm = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.uint16, shape=im.shape)
    res = m.predict(im, tile_size=64, overlap=16, out=mm)
    assert res is mm
    np.testing.assert_array_equal(np.asarray(mm), ref)
    z = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=im.shape, chunks=(64, 64), dtype=np.uint16)
    z[:] = im
    np.testing.assert_array_equal(m.predict(z, tile_size=64, overlap=16), ref)
    np.testing.assert_array_equal(m.predict(da.from_array(im, chunks=50), tile_size=64, overlap=16), ref)
    with pytest.raises(ValueError, match="out has shape"):
        m.predict(im, out=np.zeros((3, 3), np.uint16))


def test_progress_and_cancel():
    m = tiny_model("denoise")
    im = smooth_image((200, 200))
    seen: list[Progress] = []
    m.predict(im, tile_size=64, overlap=16, batch_size=2, progress=seen.append)
    assert seen[-1].done == seen[-1].total > 4
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    ev = threading.Event()

    def stop_after_two(p: Progress) -> None:
        if p.done >= 2:
            ev.set()

    with pytest.raises(PredictionCancelled):
        m.predict(im, tile_size=64, overlap=16, batch_size=1, progress=stop_after_two, cancel=ev)
    gen = m.predict_iter(im, tile_size=64, overlap=16)
    next(gen)
    gen.close()  # stopping a generator between batches is clean


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_auto_matches_fp32_within_40db(monkeypatch, native_bf16):
    from napari_pix2pix.engine.core import device

    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: native_bf16)  # auto: bf16 where native, else fp32
    m = tiny_model("denoise", levels=4, ngf=8)
    im = smooth_image((128, 128))
    a = m.predict(im, precision="fp32")
    b = m.predict(im, precision="auto")
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    psnr = 10 * np.log10(np.ptp(a) ** 2 / mse) if mse else np.inf
    assert psnr > 40  # bf16 arithmetic of a tiny random net; real networks are measured in benchmarks/
    if not native_bf16:
        assert mse == 0  # the same computation: fp32


def test_auto_tile_size_fits_the_activation_budget():
    from napari_pix2pix.engine.predict.tiled import ACTIVATION_BUDGET, activation_bytes, auto_tile_size
    from napari_pix2pix.nn import preset_config

    for name in ("unet_256", "unet_tiny"):
        cfg = preset_config(name)
        for itemsize in (2, 4):
            t = auto_tile_size(cfg, itemsize)
            assert len(t) == 2 and t[0] == t[1] and t[0] % cfg.multiple == 0 and t[0] <= 2048
            assert activation_bytes(cfg, t, itemsize) <= ACTIVATION_BUDGET or t[0] == cfg.multiple
            if t[0] < 2048:  # the next size up would not fit
                bigger = (t[0] + cfg.multiple,) * 2
                assert activation_bytes(cfg, bigger, itemsize) > ACTIVATION_BUDGET
    cfg = preset_config("unet_256")
    assert auto_tile_size(cfg, 2) > auto_tile_size(cfg, 4)  # bf16 activations are half the size


def test_auto_tile_size_is_the_default_and_bad_values_are_named(monkeypatch):
    from napari_pix2pix.engine.predict import tiled as predict_mod

    m = tiny_model()
    im = smooth_image((200, 180))
    monkeypatch.setattr(predict_mod, "MAX_AUTO_TILE", 64)  # auto tiles smaller than the image

    def tiles(**kw):
        seen: list[Progress] = []
        m.predict(im, precision="fp32", progress=seen.append, **kw)
        return seen[-1].total

    assert tiles() == tiles(tile_size="auto") == tiles(tile_size=64) > 4 and tiles(tile_size=None) == 1
    np.testing.assert_array_equal(m.predict(im, precision="fp32"), m.predict(im, tile_size=64, precision="fp32"))
    with pytest.raises(ValueError, match="tile_size must be"):
        m.predict(im, tile_size="big")


def test_in_place_output_conversion_matches_the_copying_one():
    """A volume's bands are converted in place (no temporaries of band size): the same values as copying."""
    from napari_pix2pix.engine.core.normalization import cast_to, from_network

    rng = np.random.default_rng(0)
    y = rng.uniform(-1.2, 1.2, (3, 17, 19)).astype(np.float32)
    expect = cast_to(from_network(y, 100.0, 4000.0), np.dtype(np.uint16))
    work = y.copy()
    got = cast_to(from_network(work, 100.0, 4000.0, inplace=True), np.dtype(np.uint16), inplace=True)
    assert got.dtype == np.uint16 and np.array_equal(got, expect)
    ro = y.copy()
    ro.flags.writeable = False  # never written to: a read-only array is converted by copying
    assert np.array_equal(cast_to(from_network(ro, 100.0, 4000.0, inplace=True), np.dtype(np.uint16), inplace=True),
                          expect)


# ---------------------------------------------------------------------- test-time augmentation
def _augmented(model, image, ks, **kw):
    from napari_pix2pix.engine.core.progress import run_to_end
    from napari_pix2pix.engine.predict.tiled import predict_iter

    return np.mean([run_to_end(predict_iter(model, image, augment=k, output_dtype=np.float32, **kw)) for k in ks],
                   axis=0)


@pytest.mark.parametrize("tta,ks", [(True, range(8)), (4, range(4)), (2, (0, 1))])
def test_tta_averages_the_flips_and_rotations(tta, ks):
    m = tiny_model("denoise", gain=0.08)
    im = smooth_image((48, 80))
    got = m.predict(im, tta=tta, device="cpu", precision="fp32", tile_size=None)
    want = _augmented(m, im, ks, device="cpu", precision="fp32", tile_size=None)
    plain = m.predict(im, device="cpu", precision="fp32", tile_size=None)
    assert np.abs(got - want).max() < 1e-5
    assert np.abs(got - plain).max() > 1e-3  # a random network is not symmetric: the average differs
    tiled = m.predict(im, tta=tta, device="cpu", precision="fp32", tile_size=32, overlap=16)
    assert 10 * np.log10(1 / np.mean((tiled - got) ** 2)) > 40  # seamless with tiles too


def test_tta_keeps_inpainting_outside_the_mask_and_colorize_shapes():
    im = smooth_image((40, 56))
    mask = np.zeros(im.shape, bool)
    mask[10:20, 10:30] = True
    out = tiny_model("inpaint").predict(im, mask, tta=True, device="cpu")
    assert np.array_equal(out[~mask], im[~mask])
    assert tiny_model("colorize").predict(im, tta=2).shape == im.shape + (3,)


@pytest.mark.parametrize("bad", [3, 0.5, "all", -1, 32])
def test_tta_refuses_unknown_counts(bad):
    with pytest.raises(ValueError, match="tta"):
        tiny_model().predict(smooth_image((32, 32)), tta=bad)


def test_tta_16_is_for_3d_models():
    with pytest.raises(ValueError, match="16 is for 3D"):
        tiny_model().predict(smooth_image((32, 32)), tta=16)


def test_tta_accepts_numpy_bools_and_whole_numbers_and_refuses_it_with_augment():
    from napari_pix2pix.engine.predict.tiled import PredictOptions, tta_transforms

    assert tta_transforms(PredictOptions(tta=np.bool_(True)).tta, 2) == tuple(range(8))
    assert tta_transforms(PredictOptions(tta=4.0).tta, 2) == (0, 1, 2, 3)
    assert tta_transforms(PredictOptions(tta=0).tta, 2) == () == tta_transforms(PredictOptions(tta=1).tta, 3)
    for tta in (True, 8):
        with pytest.raises(ValueError, match="cannot be combined"):
            PredictOptions(tta=tta, augment=3)


def test_the_runner_cache_follows_the_weights():
    """Inference copies are reused, and dropped when weights load or an optimiser steps (no id(), no _version)."""
    from napari_pix2pix.engine.predict.runner import cached, forget_after_steps, runner

    m = tiny_model()
    x = np.random.default_rng(0).standard_normal((1, 1, 64, 64)).astype(np.float32)
    first = runner(m.generator, "cpu", "fp32")(x)
    assert len(cached(m.generator)) == 1
    runner(m.generator, "cpu", "fp32")(x)
    assert len(cached(m.generator)) == 1  # the same copy again
    state = {k: v * 0.5 if v.is_floating_point() else v for k, v in m.generator.state_dict().items()}
    m.generator.load_state_dict(state)
    assert cached(m.generator) == []  # new weights: no stale copy
    assert not np.allclose(runner(m.generator, "cpu", "fp32")(x), first)
    opt = torch.optim.SGD(m.generator.parameters(), lr=0.1)
    forget_after_steps(opt, m.generator)
    m.generator.train()
    m.generator(torch.from_numpy(x)).mean().backward()
    opt.step()
    assert cached(m.generator) == []


@pytest.mark.parametrize("volume", [False, True])
def test_cancel_stops_between_the_flips_of_one_batch(volume):
    """A batch under test-time augmentation is 8 (16 for volumes) forward passes: cancel stops after the current one."""
    from napari_pix2pix import Pix2PixModel
    from napari_pix2pix.engine.predict.runner import cached

    if volume:
        torch.manual_seed(0)
        m = Pix2PixModel("denoise", "unet3d_tiny", ngf=4)
        im = np.stack([smooth_image((64, 64), seed=z) for z in range(16)])
    else:
        m = tiny_model("denoise")
        im = smooth_image((128, 128))
    kw = dict(tile_size=64, overlap=16, batch_size=64, precision="fp32", device="cpu")
    m.predict(im[..., :32, :32], **kw)  # makes the cached inference copy the run below uses
    (net,) = cached(m.generator)
    ev = threading.Event()
    passes = []

    def stop_in_the_first_pass(_module, _inputs):
        passes.append(1)
        ev.set()

    handle = net.register_forward_pre_hook(stop_in_the_first_pass)
    try:
        with pytest.raises(PredictionCancelled):
            m.predict(im, tta=True, cancel=ev, **kw)
    finally:
        handle.remove()
    assert len(passes) == 1  # not 8 (16): the rest of the batch's flips never ran
