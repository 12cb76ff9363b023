"""Zarr predictions block by block: on a dask cluster, resumable, OME-Zarr out (issue: beyond one machine)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import distributed  # the testing extra has it (the cluster extra): a missing package must fail CI
import numpy as np
import pytest
import torch
import zarr

from napari_pix2pix import Pix2PixModel, PredictionCancelled
from napari_pix2pix.engine.images.zarrstore import (
    ZarrTarget,
    open_levels,
    partial_path,
    read_axes,
    store_record,
)
from napari_pix2pix.engine.predict.stores import predict_iter
from napari_pix2pix.nn.unet import init_weights


def _model2d() -> Pix2PixModel:
    torch.manual_seed(0)
    m = Pix2PixModel("denoise", "unet_tiny", levels=3, ngf=4)
    init_weights(m.generator, 0.05)
    return m


def _model3d() -> Pix2PixModel:
    torch.manual_seed(0)
    m = Pix2PixModel("denoise", "unet3d_tiny", ngf=4)
    init_weights(m.generator, 0.05)
    return m


def _zarr_input(path, data, chunks):
    z = zarr.open_array(store=str(path), mode="w", shape=data.shape, chunks=chunks, dtype=data.dtype)
    z[:] = data
    return z


def _stack(shape=(4, 200, 176), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]]
    clean = (np.sin(yy / 9) * np.cos(xx / 13) + 1) * 2000 + 500
    return (clean + rng.normal(0, 300, shape)).clip(0, 65535).astype(np.uint16)


def _psnr(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10((np.ptp(b) or 1) ** 2 / mse)


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 worker processes, one thread each (what the issue's tests ask for)."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


OPTS = dict(device="cpu", precision="fp32", tile_size=64, overlap=16)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_cluster_prediction_equals_the_single_process_result(tmp_path, client, dims):
    model = _model2d() if dims == 2 else _model3d()
    data = _stack() if dims == 2 else _stack((80, 64, 56))
    src = _zarr_input(tmp_path / "in.zarr", data, (1, 64, 64) if dims == 2 else (8, 32, 32))
    opts = OPTS if dims == 2 else {**OPTS, "tile_size": (8, 64, 64), "overlap": 2}
    expect = model.predict(data, **opts)
    out = model.predict(src, out=tmp_path / "out.zarr", client=client, **opts)
    got = np.asarray(out[:])
    assert got.shape == data.shape and got.dtype == expect.dtype
    assert _psnr(got, expect) >= 60, _psnr(got, expect)  # measured: bit-identical
    record = store_record(tmp_path / "out.zarr")
    assert record["complete"] and record["blocks"] > 1  # cut into blocks, all of them done
    assert not partial_path(tmp_path / "out.zarr").exists()


def test_a_path_input_a_mask_and_flips_on_the_cluster(tmp_path, client):
    from tests._helpers import tiny_model

    model = tiny_model("inpaint")
    data = _stack((2, 128, 120))
    mask = np.zeros(data.shape, bool)
    mask[:, 40:70, 30:90] = True
    _zarr_input(tmp_path / "in.zarr", data, (1, 64, 64))
    expect = model.predict(data, mask, tta=True, **OPTS)
    out = model.predict(str(tmp_path / "in.zarr"), mask, out=tmp_path / "out.zarr", client=client, tta=True, **OPTS)
    assert _psnr(np.asarray(out[:]), expect) >= 60
    assert np.array_equal(np.asarray(out[:])[~mask], data[~mask])  # inpainting keeps every unmasked pixel


def test_a_worker_killed_mid_run_changes_nothing(tmp_path, client):
    model = _model2d()
    data = _stack((8, 256, 256), seed=1)
    src = _zarr_input(tmp_path / "in.zarr", data, (1, 64, 64))
    opts = {**OPTS, "tile_size": 48, "overlap": 8}  # many small tiles: blocks that take a while
    expect = model.predict(data, **opts)
    pids = list(client.run(os.getpid).values())
    gen = predict_iter(model, src, out=tmp_path / "out.zarr", client=client, **opts)
    killed_at = None
    try:
        while True:
            p = next(gen)
            if killed_at is None and p.unit == "blocks" and p.done >= 1:
                killed_at = (p.done, p.total)
                os.kill(pids[0], signal.SIGKILL)  # its running block is computed again by dask's retries
    except StopIteration as stop:
        out = stop.value
    assert killed_at is not None and killed_at[0] < killed_at[1], killed_at  # killed while blocks were left
    assert np.array_equal(np.asarray(out[:]), expect)


def test_resume_computes_only_the_missing_blocks_and_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    model = _model2d()
    data = _stack((5, 96, 96), seed=2)
    dest = tmp_path / "out.zarr"
    expect = model.predict(data, **OPTS)
    cancel = threading.Event()

    def progress(p):
        if p.done and p.done >= p.total // 2:
            cancel.set()  # the client stops about half way

    with pytest.raises(PredictionCancelled):
        model.predict(data, out=dest, cancel=cancel, progress=progress, **OPTS)
    assert not dest.exists()  # not complete: only the partial store, with its finished blocks recorded
    record = store_record(partial_path(dest))
    done = int(np.asarray(zarr.open_array(store=str(partial_path(dest) / "blocks_done"), mode="r")[:]).sum())
    assert record["blocks"] == 5 and 0 < done < 5
    with pytest.raises(FileExistsError, match="resume=True"):
        model.predict(data, out=dest, **OPTS)  # never overwritten without being asked
    with pytest.raises(ValueError, match="made differently"):
        model.predict(data, out=dest, resume=True, **{**OPTS, "overlap": 8})
    computed = []
    real = ZarrTarget.mark_done
    monkeypatch.setattr(ZarrTarget, "mark_done", lambda self, i: (computed.append(i), real(self, i))[1])
    out = model.predict(data, out=dest, resume=True, **OPTS)
    assert len(computed) == 5 - done and len(set(computed)) == len(computed)  # only the missing ones
    assert np.array_equal(np.asarray(out[:]), expect)
    assert store_record(dest)["complete"] and not partial_path(dest).exists()
    computed.clear()
    again = model.predict(data, out=dest, resume=True, **OPTS)  # a complete store: nothing to do
    assert computed == [] and np.array_equal(np.asarray(again[:]), expect)


def test_a_cluster_run_cut_short_resumes_with_only_the_missing_blocks(tmp_path, client):
    model = _model2d()
    data = _stack((12, 256, 256), seed=3)
    src = _zarr_input(tmp_path / "in.zarr", data, (1, 64, 64))
    dest = tmp_path / "out.zarr"
    opts = {**OPTS, "tile_size": 48, "overlap": 8}  # many small tiles: blocks that take a while
    expect = model.predict(data, **opts)
    gen = predict_iter(model, src, out=dest, client=client, **opts)
    for p in gen:
        if p.unit == "blocks" and p.total and p.done >= p.total // 2:
            break
    gen.close()  # the client goes away at ~50 %
    for _ in range(100):  # blocks already running when it left still finish (and are recorded): wait for them
        if not any(client.processing().values()):
            break
        time.sleep(0.1)
    total = store_record(partial_path(dest))["blocks"]
    done = int(np.asarray(zarr.open_array(store=str(partial_path(dest) / "blocks_done"), mode="r")[:]).sum())
    assert total // 2 <= done < total
    totals = []
    out = model.predict(src, out=dest, client=client, resume=True, progress=lambda p: totals.append(p.total), **opts)
    assert max(totals) <= total - done  # only the missing blocks were scheduled (fewer: one finished late)
    assert np.array_equal(np.asarray(out[:]), expect)


def test_the_output_is_ome_zarr_with_the_inputs_axes_and_scales(tmp_path):
    model = _model3d()
    vol = _stack((16, 64, 64), seed=4)
    root = zarr.open_group(store=str(tmp_path / "in.ome.zarr"), mode="w", zarr_format=2)
    arr = root.create_array("0", shape=vol.shape, chunks=(8, 32, 32), dtype=vol.dtype)
    arr[:] = vol
    axes = [{"name": "z", "type": "space", "unit": "micrometer"}, {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"}]
    transforms = [{"type": "scale", "scale": [2.0, 0.325, 0.325]},
                  {"type": "translation", "translation": [10.0, 0.0, 5.0]}]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes,
                                  "datasets": [{"path": "0", "coordinateTransformations": transforms}]}]
    dest = tmp_path / "out.zarr"
    model.predict(str(tmp_path / "in.ome.zarr"), out=dest, pyramid=True, **{**OPTS, "tile_size": (16, 48, 48)})
    got = read_axes(dest)
    assert got is not None and got.names == ["z", "y", "x"]
    assert got.scale == pytest.approx([2.0, 0.325, 0.325]) and got.translation == pytest.approx([10.0, 0.0, 5.0])
    attrs = json.loads((dest / ".zattrs").read_text())
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4" and [a["unit"] for a in ms["axes"]] == ["micrometer"] * 3
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales[0] == pytest.approx([2.0, 0.325, 0.325]) and len(scales) == len(open_levels(dest))
    if len(scales) > 1:  # each level halves Y and X
        assert scales[1][1:] == pytest.approx([0.65, 0.65])


def test_channel_last_results_are_stored_in_ngff_order_and_read_back_as_given(tmp_path):
    from napari_pix2pix.engine.images.io import open_zarr
    from tests._helpers import tiny_model

    model = tiny_model("colorize")
    gray = _stack((2, 64, 72), seed=5)
    dest = tmp_path / "rgb.zarr"
    out = model.predict(gray, out=dest, **OPTS)
    expect = model.predict(gray, **OPTS)
    assert out.shape == (2, 64, 72, 3) and np.array_equal(np.asarray(out[:]), expect)
    ms = json.loads((dest / ".zattrs").read_text())["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]  # NGFF: channel before space
    assert zarr.open_array(store=str(dest / "0"), mode="r").shape == (3, 2, 64, 72)
    assert np.array_equal(np.asarray(open_zarr(dest)[:]), expect)  # read back in the result's order


def test_bad_cluster_arguments_are_named():
    model = _model2d()
    with pytest.raises(ValueError, match="either client"):
        model.predict(np.zeros((2, 64, 64), np.float32), out="x.zarr", client="tcp://h:1", workers=2)
    with pytest.raises(ValueError, match="workers must be"):
        model.predict(np.zeros((2, 64, 64), np.float32), out="x.zarr", workers=0)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_percentiles_summed_from_slabs_are_the_single_process_ones(dtype):
    from napari_pix2pix.engine.predict.tiled import prepare
    from tests._helpers import tiny_model

    rng = np.random.default_rng(6)
    image = (rng.gamma(2.0, 900.0, (2, 203, 190))).astype(dtype)
    mask = np.zeros(image.shape, bool)
    mask[:, 50:90, 40:100] = True
    for model, m in ((_model2d(), None), (tiny_model("inpaint"), mask)):
        setup = prepare(model, image, m)
        for stack in ((0,), (1,)):
            slabs = setup.range_slabs(stack, slab_bytes=4 * 190 * 37)  # 37 rows each: 6 slabs
            assert len(slabs) == 6
            parts = [(k, setup.range_part(stack, k, y0, y1)) for k, y0, y1 in slabs[::-1]]  # any order
            assert setup.ranges_from(parts) == setup.ranges(stack)
