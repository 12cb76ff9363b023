"""Layer glue, models list, jobs, manifest and samples, without Qt (napari's ViewerModel)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from napari.components import ViewerModel  # noqa: E402

from napari_pix2pix._napari import jobs  # noqa: E402
from napari_pix2pix._napari import layers as lyr  # noqa: E402
from napari_pix2pix._napari.choices import RECENT, model_choices, model_info, read_header  # noqa: E402
from napari_pix2pix._napari.sample_data import SAMPLES, sample_path  # noqa: E402
from napari_pix2pix.engine.formats.modelfile import ModelFileError  # noqa: E402


# ---------------------------------------------------------------------- add_result
def test_add_result_carries_spatial_metadata_and_updates_in_place():
    viewer = ViewerModel()
    src = viewer.add_image(np.arange(64 * 48, dtype=np.uint16).reshape(64, 48), name="x", scale=(0.5, 2.0),
                           translate=(10.0, -5.0), rotate=30, units=("um", "um"), axis_labels=("y", "x"),
                           contrast_limits=(100, 2000), colormap="magma")
    before = src.data.copy()
    out = lyr.add_result(viewer, src, src.data // 2, "denoised")
    assert out.name == "x denoised" and out.data.dtype == np.uint16
    np.testing.assert_allclose(out.scale, src.scale)
    np.testing.assert_allclose(out.translate, src.translate)
    np.testing.assert_allclose(out.rotate, src.rotate)
    np.testing.assert_allclose(out.affine.affine_matrix, src.affine.affine_matrix)
    assert tuple(out.axis_labels) == ("y", "x") and [str(u) for u in out.units] == [str(u) for u in src.units]
    assert tuple(out.contrast_limits) == (100, 2000) and out.colormap.name == "magma"
    again = lyr.add_result(viewer, src, src.data // 3, "denoised")
    assert again is out and len(viewer.layers) == 2
    np.testing.assert_array_equal(out.data, before // 3)
    np.testing.assert_array_equal(src.data, before)


def test_add_result_rgb_and_channels_and_foreign_layer_kept():
    viewer = ViewerModel()
    src = viewer.add_image(np.zeros((3, 20, 30), np.uint8), name="g", scale=(2, 1, 1))
    rgb = lyr.add_result(viewer, src, np.zeros((3, 20, 30, 3), np.uint8), "colorized")
    assert rgb.rgb and rgb.ndim == 3
    np.testing.assert_allclose(rgb.scale, (2, 1, 1))
    chans = lyr.add_result(viewer, src, np.zeros((3, 20, 30, 2), np.float32), "translated")
    assert not chans.rgb and chans.data.shape == (2, 3, 20, 30)
    np.testing.assert_allclose(chans.scale, (1, 2, 1, 1))
    # a user layer that happens to have the output's name is never overwritten
    mine = viewer.add_image(np.ones((20, 30)), name="g denoised")
    out = lyr.add_result(viewer, src, np.zeros((3, 20, 30), np.uint8), "denoised")
    assert out is not mine and mine.data.sum() == 20 * 30


def test_add_result_plane_fills_one_plane_at_a_time():
    viewer = ViewerModel()
    src = viewer.add_image(np.ones((4, 16, 16), np.float32), name="s")
    out = lyr.add_result(viewer, src, np.full((16, 16), 2, np.float32), "denoised", plane=(1,))
    assert out.data.shape == (4, 16, 16) and out.data[1].min() == 2 and out.data[[0, 2, 3]].max() == 0
    out2 = lyr.add_result(viewer, src, np.full((16, 16), 3, np.float32), "denoised", plane=(3,))
    assert out2 is out and out.data[1].min() == 2 and out.data[3].min() == 3 and len(viewer.layers) == 2


def test_current_plane_and_stack_shape():
    viewer = ViewerModel()
    src = viewer.add_image(np.zeros((5, 3, 8, 8)), name="s", scale=(2, 1, 1, 1))
    rgb = viewer.add_image(np.zeros((5, 8, 8, 3), np.uint8), name="c", rgb=True, scale=(2, 1, 1))
    assert lyr.stack_shape(src) == (5, 3) and lyr.stack_shape(rgb) == (5,)
    viewer.dims.set_point(0, 6.0)  # world z = 6 -> plane 3 (scale 2)
    viewer.dims.set_point(1, 2.0)
    assert lyr.current_plane(viewer, src) == (3, 2)
    assert lyr.current_plane(viewer, rgb) == (1,)  # rgb is 3D: its z is the viewer's second axis


def test_mask_from_labels_and_shapes_through_world_coordinates():
    viewer = ViewerModel()
    img = viewer.add_image(np.zeros((40, 60)), name="img", scale=(2, 2), translate=(10, 0))
    labels = viewer.add_labels(np.zeros((40, 60), np.uint8), name="m")
    labels.data[5:10, 5:10] = 3
    assert lyr.mask_array(labels, img).sum() == 25
    # a rectangle drawn in world coordinates over image pixels y 5..14, x 10..19
    shapes = viewer.add_shapes([np.array([[20, 20], [20, 38], [38, 38], [38, 20]])], shape_type="rectangle")
    mask = lyr.mask_array(shapes, img)
    assert mask.shape == (40, 60)
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (5, 14, 10, 19)
    with pytest.raises(ValueError, match="holds no shapes"):
        lyr.mask_array(viewer.add_shapes(name="empty"), img)
    with pytest.raises(TypeError, match="Labels or Shapes"):
        lyr.mask_array(img, img)


# ---------------------------------------------------------------------- remembered models
def test_recent_models_are_filtered_by_task_and_persisted(tiny_model_files, _pix2pix_config_dir):
    seen = []

    def count() -> None:
        seen.append(1)

    RECENT.changed.connect(count)
    try:
        RECENT.add(tiny_model_files["denoise"])
        RECENT.add(tiny_model_files["inpaint"])
    finally:
        RECENT.changed.disconnect(count)
    assert len(seen) == 2
    stored = json.loads((_pix2pix_config_dir / "recent_models.json").read_text())["models"]
    assert stored[0].endswith("tiny-inpaint.safetensors")
    assert [i.task for i in model_choices("denoise") if not i.bundled] == ["denoise"]
    assert {i.task for i in model_choices(None) if not i.bundled} == {"denoise", "inpaint"}
    assert [i.bundled for i in model_choices(None)] == sorted((i.bundled for i in model_choices(None)), reverse=True)
    info = model_info(tiny_model_files["denoise"])
    assert info.multiple == 8 and info.name == "tiny-denoise" and "denoise" in info.label
    RECENT.remove(tiny_model_files["denoise"])
    assert [i.task for i in model_choices("denoise") if not i.bundled] == []


def test_the_general_bundled_model_is_offered_first(monkeypatch, tmp_path):
    from napari_pix2pix._napari import choices as mdl
    from tests._helpers import tiny_model

    files = {n: tiny_model("colorize").save(tmp_path / f"{n}.safetensors") for n in ("colorize-he", "colorize")}
    monkeypatch.setattr(mdl, "bundled_paths", lambda: dict(sorted(files.items())))  # file order: colorize-he first
    assert [i.ref for i in model_choices("colorize") if i.bundled] == ["colorize", "colorize-he"]


def test_read_header_refuses_other_files(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x80\x04not a model")
    with pytest.raises(ModelFileError):
        read_header(bad)
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------- jobs
def test_predict_job_yields_progress_returns_result_and_cancels(tiny_model_files):
    image = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    settings = jobs.PredictSettings(tile_size=32, overlap=8, batch_size=1)
    gen = jobs.predict_job(tiny_model_files["denoise"], image, settings=settings)
    updates = []
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as done:
            result = done.value
            break
    assert result.shape == image.shape and result.dtype == np.float32
    assert updates[-1].done == updates[-1].total > 1
    cancel = threading.Event()
    gen = jobs.predict_job(tiny_model_files["denoise"], image, settings=settings, cancel=cancel)
    next(gen), next(gen)
    cancel.set()
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value is None
    assert jobs.load_model_cached(tiny_model_files["denoise"]) is jobs.load_model_cached(tiny_model_files["denoise"])


@pytest.mark.parametrize("tta", [False, 4])
def test_trust_job_counts_every_prediction_and_cancels(tiny_model_files, tta):
    image = np.random.default_rng(1).random((2, 48, 40)).astype(np.float32)
    settings = jobs.PredictSettings(tile_size=32, overlap=8, batch_size=1, tta=tta)
    gen = jobs.trust_job(tiny_model_files["denoise"], image, settings=settings, samples=3, residual=True)
    updates = []
    while True:
        try:
            updates.append(next(gen))
        except StopIteration as done:
            result = done.value
            break
    counted = [p for p in updates if p.total]
    assert len({p.total for p in counted}) == 1  # one count for prediction and samples, from the start
    assert [p.done for p in counted] == sorted(p.done for p in counted) and counted[-1].done == counted[-1].total
    first = next(p for p in counted if "uncertainty" in (p.message or ""))  # the result took (tta or 1) shares
    n = tta or 1
    assert first.done / first.total == n / (n + 3)
    assert isinstance(result, jobs.TrustResult) and result.output.shape == image.shape
    assert result.uncertainty.shape == image.shape and result.uncertainty.dtype == np.float32
    np.testing.assert_allclose(result.residual.residual, image - result.output)
    cancel = threading.Event()
    gen = jobs.trust_job(tiny_model_files["denoise"], image, settings=settings, samples=3, cancel=cancel)
    seen = []
    with pytest.raises(StopIteration) as stop:
        while True:
            seen.append(next(gen))
            if seen[-1].total and seen[-1].done > seen[-1].total // 4:  # in the uncertainty's predictions
                cancel.set()
    assert stop.value.value is None and seen[-1].done < seen[-1].total
    with pytest.raises(ValueError, match="at least 2 samples"):
        next(jobs.trust_job(tiny_model_files["denoise"], image, samples=1))


def test_overlay_and_labels_results_keep_spatial_metadata_and_update_in_place():
    viewer = ViewerModel()
    src = viewer.add_image(np.zeros((3, 20, 30), np.float32), name="x", scale=(1, 0.5, 2), translate=(0, 1, 2))
    res = lyr.add_overlay(viewer, src, np.linspace(-1, 1, 1800, dtype=np.float32).reshape(3, 20, 30), "residual",
                          colormap="PiYG", blending="translucent", centered=True, visible=False)
    assert res.colormap.name == "PiYG" and not res.visible and res.contrast_limits[0] == -res.contrast_limits[1]
    res.opacity = 0.3  # the user's choice survives a rerun
    assert lyr.add_overlay(viewer, src, np.zeros((3, 20, 30), np.float32), "residual") is res
    assert res.opacity == 0.3 and not res.data.any()
    flags = np.zeros((20, 30), bool)
    flags[2:5, 3:9] = True
    lab = lyr.add_labels_result(viewer, src, flags, "flagged", plane=(1,))
    assert lab.data.shape == (3, 20, 30) and lab.data[1].sum() == 18 and not lab.data[[0, 2]].any()
    np.testing.assert_allclose(lab.scale, (1, 0.5, 2))
    np.testing.assert_allclose(lab.translate, (0, 1, 2))
    assert lyr.add_labels_result(viewer, src, flags, "flagged", plane=(2,)) is lab and lab.data[2].sum() == 18
    assert lab.data[1].sum() == 18


def test_worker_threads_leave_a_core(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert jobs.worker_threads() == 1
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert jobs.worker_threads() == 14
    monkeypatch.setenv("NAPARI_PIX2PIX_THREADS", "3")
    assert jobs.worker_threads() == 3


# ---------------------------------------------------------------------- manifest and samples
def test_manifest_is_valid_and_every_command_imports():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-pix2pix")
    pm.validate_imports()
    widgets = {w.display_name for w in pm.contributions.widgets}
    assert widgets == {"Denoise", "Inpaint", "Colorize", "Translate", "Train"}
    assert {s.key for s in pm.contributions.sample_data} == set(SAMPLES)
    assert pm.display_name == "Pix2Pix" and "Image Processing" in pm.categories


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_are_small_local_files(name):
    layers = SAMPLES[name]()
    kinds = [t for _, _, t in layers]
    assert kinds.count("image") >= 2
    for data, kwargs, _kind in layers:
        assert isinstance(data, np.ndarray) and data.ndim in (2, 3) and "name" in kwargs
    if name == "inpaint":
        (mask,) = [d for d, _, t in layers if t == "labels"]
        damaged = [d for d, k, _ in layers if k["name"] == "damaged"][0]
        assert mask.shape == damaged.shape and 0.02 < mask.mean() < 0.3 and damaged[mask > 0].max() == 0
    if name == "colorize":
        assert [d.ndim for d, _, _ in layers] == [3, 2]
    if name == "volume":  # generated: a 3D stack with its Z spacing, for 3D models and napari's 3D view
        assert all(d.shape == (32, 128, 128) and d.dtype == np.uint16 for d, _, _ in layers)
        assert all(k["scale"] == (3.0, 1.0, 1.0) for _, k, _ in layers)
    folder = Path(str(sample_path("")))
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
