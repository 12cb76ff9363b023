"""The holes found by trying to break napari-pix2pix: bad numbers, hostile files, interrupted writes, GPU decisions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_pix2pix as p2p
from napari_pix2pix.engine.formats.modelfile import ModelFileError, read_model_file, write_model_file
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.registry import bundled_paths
from tests._helpers import smooth_image, tiny_model

DATA = Path(__file__).parents[1] / "data"


# 1 ---------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(("options", "match"), [
    ({"tile_size": 64, "overlap": -100}, "overlap must be"),
    ({"tile_size": 0}, "tile_size must be a positive"),
    ({"tile_size": -64}, "tile_size must be a positive"),
    ({"tile_size": "big"}, "tile_size must be a positive"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"batch_size": 2.5}, "batch_size must be"),
    ({"overlap": 1.5}, "overlap must be"),
    ({"precision": "half"}, "precision must be one of"),
    ({"uncertainty": True, "samples": 1}, "at least 2 samples"),
])
def test_every_numeric_prediction_option_is_checked_where_it_enters(options, match):
    m = tiny_model("denoise")
    with pytest.raises(ValueError, match=match):
        m.predict(smooth_image((64, 64)), **options)


def test_a_negative_overlap_no_longer_returns_nan_and_whole_number_floats_are_fine():
    m = tiny_model("denoise")
    im = smooth_image((100, 120))
    out = m.predict(im, tile_size=64.0, overlap=16.0)
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="normalization percentiles"):
        p2p.Normalization(low=99, high=1)


# 2 ---------------------------------------------------------------------------------------------- hostile files
def test_a_crafted_architecture_is_refused_before_anything_is_allocated(tmp_path):
    tensors, meta = read_model_file(bundled_paths()["denoise"])
    meta["architecture"] = {**meta["architecture"], "ngf": 100_000}  # 360 GB of weights, were it built
    crafted = write_model_file(tmp_path / "crafted.safetensors", tensors, meta)  # checksum intact
    t = time.perf_counter()
    with pytest.raises(ModelFileError, match="far beyond any napari-pix2pix network"):
        p2p.load_model(crafted)
    assert time.perf_counter() - t < 10
    meta["architecture"]["ngf"] = 25  # plausible, but not what the weights are
    wrong = write_model_file(tmp_path / "wrong.safetensors", tensors, meta)
    with pytest.raises(ModelFileError, match="the weights do not fit the stored architecture.*needs"):
        p2p.load_model(wrong)
    del tensors[next(iter(tensors))]
    meta["architecture"]["ngf"] = 24
    missing = write_model_file(tmp_path / "missing.safetensors", tensors, meta)
    with pytest.raises(ModelFileError, match="missing"):
        p2p.load_model(missing)


def test_the_checksum_is_an_integrity_check_of_the_file(tmp_path):
    path = tiny_model("denoise").save(tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit in the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        p2p.load_model(path)



def _edited_package(src, dest, old: bytes, new: bytes):
    """A copy of the bioimage.io package `src` at `dest` with `old` replaced by `new` in its rdf.yaml."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dest, "w") as out:
        for info in z.infolist():
            data = z.read(info.filename)
            out.writestr(info.filename, data.replace(old, new) if info.filename == "rdf.yaml" else data)
    return dest

def test_a_package_with_a_zip_bomb_or_paths_outside_is_refused(tmp_path):
    src = tiny_model("denoise").export_bioimageio(tmp_path / "m.zip", check=False).path
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            data = z.read(info.filename)
            if info.filename == "cover.png":  # 64 MB of zeros: ~64 KB packed
                data = bytes(64 * 2**20)
            out.writestr(info.filename, data)
    with pytest.raises(ModelFileError, match="zip bomb"):
        p2p.load_model(bomb)
    outside = _edited_package(src, tmp_path / "outside.zip", b"source: cover.png", b"source: ../../etc/passwd")
    with pytest.raises(ModelFileError, match="not a file inside the package"):
        p2p.load_model(outside)


def test_a_package_whose_weights_do_not_fit_its_architecture_is_refused(tmp_path):
    src = tiny_model("denoise").export_bioimageio(tmp_path / "m.zip", check=False).path
    edited = _edited_package(src, tmp_path / "edited.zip", b"ngf: 4", b"ngf: 100000")
    with pytest.raises(ModelFileError, match="far beyond"):
        p2p.load_model(edited)


# 4 ---------------------------------------------------------------------------------------------- tests that can fail
@pytest.mark.parametrize("name", ["unet_256_3to3", "unet_128_3to3", "unet_256_1to1"])
def test_reference_checkpoint_keys_map_onto_our_network(name):
    from napari_pix2pix.engine.formats.networks import _meta_network
    from napari_pix2pix.engine.formats.reference import map_reference_state
    from napari_pix2pix.nn import preset_config

    ref = json.loads((DATA / "reference_unet_keys.json").read_text())[name]  # the reference's own state dict
    preset, chans = name.rsplit("_", 1)
    c = int(chans.split("to")[0])
    cfg = preset_config(preset, in_channels=c, out_channels=c)
    ours = {k: tuple(v.shape) for k, v in _meta_network(cfg).state_dict().items()}
    mapped = map_reference_state({k: tuple(v) for k, v in ref.items()}, cfg)
    assert mapped == ours  # every key, every shape: nothing left over on either side
    with pytest.raises(ModelFileError, match="unexpected key"):
        map_reference_state({"model.model.9.weight": (1,)}, cfg)


def test_reference_checkpoint_with_real_key_names_imports(tmp_path):
    from napari_pix2pix.nn import preset_config, reference_key_map

    ref_keys = json.loads((DATA / "reference_unet_keys.json").read_text())["unet_128_3to3"]
    cfg = preset_config("unet_128", in_channels=3, out_channels=3)
    inverse = {v: k for k, v in reference_key_map(cfg).items()}
    ours = p2p.Pix2PixModel("translate", config=cfg)
    names = {inverse[k.rsplit(".", 1)[0] + "."] + k.rsplit(".", 1)[1] for k in ours.generator.state_dict()}
    assert names == set(ref_keys)  # our inverse map gives exactly the reference's names
    state = {"module." + inverse[k.rsplit(".", 1)[0] + "."] + k.rsplit(".", 1)[1]: v
             for k, v in ours.generator.state_dict().items()}
    torch.save(state, tmp_path / "latest_net_G.pth")
    imported = p2p.import_reference_checkpoint(tmp_path / "latest_net_G.pth", preset="unet_128")
    for k, v in ours.generator.state_dict().items():
        torch.testing.assert_close(imported.generator.state_dict()[k], v)


# 5 ---------------------------------------------------------------------------------------------- claims
def test_ctrl_c_in_cli_training_saves_and_resume_continues(tmp_path):
    import tifffile

    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(2):
        tifffile.imwrite(clean / f"{i}.tif", phantoms.to_uint16(phantoms.nuclei((96, 96), i)))
    out = tmp_path / "m.safetensors"
    cmd = [sys.executable, "-m", "napari_pix2pix.cli", "train", "--clean-dir", str(clean), "--task", "denoise",
           "--preset", "unet_tiny", "--levels", "3", "--ngf", "8", "--patch-size", "32", "--steps", "100000",
           "--log-every", "5", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it trains
        if line.startswith("step 10/"):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted: checkpoint and model saved" in err
    saved = p2p.load_model(out).training_summary
    assert saved["status"] == "stopped" and saved["steps_done"] >= 10
    ckpt = tmp_path / "m.checkpoints" / "checkpoint.safetensors"
    from napari_pix2pix.cli import main

    assert main(["train", "--clean-dir", str(clean), "--resume", str(ckpt), "--steps", str(saved["steps_done"] + 3),
                 "-o", str(out)]) == 0
    assert p2p.load_model(out).training_summary["steps_done"] == saved["steps_done"] + 3


def _failing_replace(monkeypatch):
    """os.replace fails once, as if the machine went down during the write."""
    import napari_pix2pix.engine.formats.bioimageio.write as bio
    import napari_pix2pix.engine.formats.modelfile as mf

    def fail(*args, **kwargs):
        raise OSError("simulated crash during the write")

    monkeypatch.setattr(mf.os, "replace", fail)
    monkeypatch.setattr(bio.os, "replace", fail)


@pytest.mark.parametrize("kind", ["model", "checkpoint", "onnx", "torchscript", "bioimageio", "image"])
def test_an_interrupted_write_leaves_the_previous_file_intact(tmp_path, monkeypatch, kind):
    from napari_pix2pix.engine.images.io import write_image

    m = tiny_model("denoise")
    path = tmp_path / {"model": "m.safetensors", "checkpoint": "checkpoint.safetensors", "onnx": "m.onnx",
                       "torchscript": "m.pt", "bioimageio": "m.zip", "image": "out.tif"}[kind]

    def write() -> None:
        if kind == "model":
            m.save(path)
        elif kind == "checkpoint":
            p2p.train(clean=phantoms.nuclei((64, 64), 0), task="denoise", steps=2, patch_size=32, batch_size=2,
                      val_fraction=0, preset="unet_tiny", generator={"levels": 3, "ngf": 4},
                      checkpoint_dir=tmp_path, model_path=tmp_path / "x.safetensors")
        elif kind == "image":
            write_image(path, np.zeros((8, 8), np.uint16))
        else:
            m.export(path, kind, check=False)

    write()
    before = path.read_bytes()
    _failing_replace(monkeypatch)
    m.generator.down[0][0].weight.data += 1  # a different model: different bytes, were they written
    with pytest.raises(OSError, match="simulated crash"):
        write()
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "tmp" in p.name]  # no temp left


def test_auto_precision_is_fp32_where_bf16_is_not_native(monkeypatch):
    from napari_pix2pix.engine.core import device
    from napari_pix2pix.engine.predict.runner import cached

    m = tiny_model("denoise")
    im = smooth_image((64, 64))
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    m.predict(im)
    assert {next(net.parameters()).dtype for net in cached(m.generator)} == {torch.float32}
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    m.predict(im)
    assert torch.bfloat16 in {next(net.parameters()).dtype for net in cached(m.generator)}


# 6 ---------------------------------------------------------------------------------------------- GPU decisions
def test_fp16_training_scales_the_loss(tmp_path, monkeypatch):
    from napari_pix2pix.engine.training import setup

    monkeypatch.setattr(setup, "autocast_dtype", lambda precision, device, dims=2: torch.float16)  # as on a GPU
    model = p2p.train(clean=phantoms.nuclei((64, 64), 0), task="denoise", steps=3, patch_size=32, batch_size=2,
                      val_fraction=0, preset="unet_tiny", generator={"levels": 3, "ngf": 4}, recipe="paper", ndf=4,
                      model_path=tmp_path / "m.safetensors")
    assert all(torch.isfinite(p).all() for p in model.generator.parameters())
    _, meta = read_model_file(tmp_path / "m.checkpoints" / "checkpoint.safetensors")
    assert meta["grad_scaler"] and meta["grad_scaler"]["scale"] > 0  # a GradScaler ran, and resumes with it


@pytest.mark.parametrize("recipe", ["fidelity", "paper"])
def test_non_finite_bf16_gradients_skip_the_step_and_go_on_in_fp32(tmp_path, monkeypatch, recipe):
    from napari_pix2pix.engine.training import loop, setup

    monkeypatch.setattr(setup, "autocast_dtype", lambda precision, device, dims=2: torch.bfloat16)
    build, seen = setup.build, {"n": 0}

    def build_with_a_bad_gradient(*args, **kwargs):  # the 3rd backward through the generator gives NaN
        run = build(*args, **kwargs)

        def hook(grad):
            seen["n"] += 1
            return grad * float("nan") if seen["n"] == 3 else grad

        next(run.model.generator.parameters()).register_hook(hook)
        return run

    monkeypatch.setattr(loop, "build", build_with_a_bad_gradient)
    with pytest.warns(RuntimeWarning, match="bf16 gave non-finite gradients at step 3"):
        model = p2p.train(clean=phantoms.nuclei((64, 64), 0), task="denoise", steps=5, patch_size=32, batch_size=2,
                          val_fraction=0, preset="unet_tiny", generator={"levels": 3, "ngf": 4}, recipe=recipe,
                          ndf=4, model_path=tmp_path / "m.safetensors")
    assert model.training_summary["steps_done"] == 5 and model.training_summary["fp32_from_step"] == 3
    assert all(torch.isfinite(p).all() for p in model.generator.parameters())  # the NaN step was not taken
    assert p2p.Pix2PixModel.load(tmp_path / "m.safetensors").training_summary["fp32_from_step"] == 3


@pytest.mark.parametrize(("cuda", "backend"), [(True, "nccl"), (False, "gloo")])
def test_ddp_backend_is_nccl_on_gpus_and_gloo_on_cpus(monkeypatch, cuda, backend):
    import torch.distributed as dist

    from napari_pix2pix.engine.training import distributed

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(seen))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: seen.setdefault("backend", backend))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert distributed.dist_info() == (1, 2) and seen["backend"] == backend


def test_cuda_and_mps_devices_and_ddp_gpu_placement(monkeypatch):
    from napari_pix2pix.engine.training.distributed import device_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    picked = []
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    monkeypatch.setenv("LOCAL_RANK", "3")
    dev = device_for("auto", world=4)
    assert dev == torch.device("cuda:3") and picked == [dev]  # each rank its own GPU
    assert device_for("cuda", world=1) == torch.device("cuda")
