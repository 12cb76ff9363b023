import subprocess
import sys
import threading
import warnings
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

import napari_pix2pix as p2p
from napari_pix2pix.engine.api import train_iter
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.images.synthesis import NoiseConfig, add_noise, random_mask
from napari_pix2pix.engine.training.data import make_data, pair_folders
from napari_pix2pix.engine.training.loop import (
    CheckpointSaved,
    StepUpdate,
    TrainConfig,
    TrainingDiverged,
    ValidationUpdate,
)

TINY = dict(preset="unet_tiny", generator={"levels": 3, "ngf": 8}, ndf=8, patch_size=32, batch_size=2)


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


def test_denoiser_improves_psnr_over_noisy_input(tmp_path):
    clean = [phantoms.fluorescence((128, 128), s) for s in range(4)]
    events = []
    model = p2p.train(clean=clean, task="denoise", steps=300, lr=1e-3, preset="unet_tiny",
                      generator={"levels": 4, "ngf": 16}, ndf=16, patch_size=64, batch_size=4, val_every=100,
                      noise={"gaussian_sigma": (0.1, 0.1), "photons": (0, 0), "poisson_fraction": 0},
                      val_fraction=0.25, progress=events.append)
    vals = [e for e in events if isinstance(e, ValidationUpdate)]
    assert [v.step for v in vals] == [100, 200, 300]
    assert vals[-1].psnr > vals[-1].psnr_input + 1.0
    # on an image never seen in training, through the normal prediction path
    truth = phantoms.fluorescence((192, 160), seed=99)
    noisy = add_noise(truth, {"photons": 0.0, "sigma": 0.1}, np.random.default_rng(5))
    restored = model.predict(noisy)
    assert _psnr(restored, truth) > _psnr(noisy, truth) + 1.0
    assert model.training_summary["steps_done"] == 300 and model.training_summary["status"] == "finished"


def _weights(m):
    return {k: v.clone() for k, v in m.generator.state_dict().items()}


def test_stop_then_resume_equals_uninterrupted_run(tmp_path):
    clean = [phantoms.nuclei((96, 96), s) for s in range(3)]
    cfg = TrainConfig(task="denoise", steps=12, val_every=4, checkpoint_every=100, seed=3, **TINY)
    full = p2p.train(clean=clean, config=cfg, model_path=tmp_path / "full.safetensors")

    stop = threading.Event()
    gen = train_iter(clean=clean, config=cfg, model_path=tmp_path / "part.safetensors", stop=stop)
    for ev in gen:
        if isinstance(ev, StepUpdate) and ev.step == 5:
            stop.set()
    ckpt = tmp_path / "part.checkpoints" / "checkpoint.safetensors"
    assert ckpt.exists()
    partial = p2p.load_model(tmp_path / "part.safetensors")
    assert partial.training_summary["steps_done"] == 5 and partial.training_summary["status"] == "stopped"

    steps = []
    resumed = p2p.train(clean=clean, resume=ckpt, model_path=tmp_path / "part.safetensors",
                        progress=lambda e: steps.append(e.step) if isinstance(e, StepUpdate) else None)
    assert steps[0] == 6 and steps[-1] == 12
    assert resumed.training_summary["steps_done"] == full.training_summary["steps_done"] == 12
    wf, wr = _weights(full), _weights(resumed)
    for k in wf:  # same seed, same machine: the resumed run is the uninterrupted one
        torch.testing.assert_close(wf[k], wr[k], rtol=1e-5, atol=1e-6)


def test_a_resumed_run_validates_on_the_same_patches(tmp_path):
    """One image, an automatic patch size: the held-out rows are cut as the first run cut them."""
    clean = [phantoms.nuclei((200, 200), 0)]
    cfg = TrainConfig(task="denoise", steps=8, val_every=4, checkpoint_every=100, seed=1, start_from="scratch",
                      **{**TINY, "patch_size": None})
    first = []
    stop = threading.Event()
    for ev in train_iter(clean=clean, config=cfg, model_path=tmp_path / "m.safetensors", stop=stop):
        first.append(ev)
        if isinstance(ev, StepUpdate) and ev.step == 5:
            stop.set()
    plan = p2p.load_model(tmp_path / "m.safetensors").training_summary["plan"]
    assert plan["patch_size"] > 32  # decided after the split, which was cut for 32 px: the case that moved
    later = []
    p2p.train(clean=clean, resume=tmp_path / "m.checkpoints" / "checkpoint.safetensors",
              model_path=tmp_path / "m.safetensors", progress=later.append)
    before = [e for e in first if isinstance(e, ValidationUpdate)]
    after = [e for e in later if isinstance(e, ValidationUpdate)]
    assert before and after
    assert after[-1].psnr_input == before[0].psnr_input  # the raw input on the same patches scores the same


def test_resume_rule_keeps_the_checkpoints_settings(tmp_path):
    from napari_pix2pix.engine.training.config import RESUMABLE, resume_config

    clean = [phantoms.nuclei((96, 96), s) for s in range(2)]
    cfg = TrainConfig(task="denoise", steps=4, val_fraction=0, checkpoint_every=100, **TINY)
    p2p.train(clean=clean, config=cfg, model_path=tmp_path / "m.safetensors")
    ckpt = tmp_path / "m.checkpoints" / "checkpoint.safetensors"
    # a setting that defines the run differs: refused, naming it and what may change
    with pytest.raises(ValueError, match=r"patch_size \(checkpoint 32, given 64\).*only steps, minutes, .*device"):
        p2p.train(clean=clean, resume=ckpt, steps=6, patch_size=64)
    # the same value (a command rerun with --resume added) and the resumable fields are accepted
    resumed = p2p.train(clean=clean, resume=ckpt, steps=6, patch_size=32, val_every=2, precision="fp32",
                        model_path=tmp_path / "m.safetensors")
    assert resumed.training_summary["steps_done"] == 6
    saved = resumed.training_settings
    assert saved["val_every"] == 2 and saved["precision"] == "fp32"
    assert set(RESUMABLE) == {"steps", "minutes", "device", "precision", "val_every", "checkpoint_every"}
    # a full config given with resume: only its resumable fields apply
    got = resume_config(cfg, {k: getattr(replace(cfg, steps=9, lr=1.0), k) for k in RESUMABLE})
    assert got.steps == 9 and got.lr == cfg.lr


def test_train_iter_reports_its_status(tmp_path):
    from napari_pix2pix.engine.core.progress import StatusUpdate, TrainingStatus

    clean = [phantoms.nuclei((64, 64), 0)]
    events = list(train_iter(clean=clean, config=TrainConfig(task="denoise", steps=3, val_fraction=0, **TINY)))
    status = [e.status for e in events if isinstance(e, StatusUpdate)]
    assert status == [TrainingStatus.RUNNING, TrainingStatus.FINISHED]
    assert isinstance(events[0], StatusUpdate) and isinstance(events[-1], StatusUpdate)
    assert str(TrainingStatus.FINISHED) == "finished"  # stored as its plain value in files


def test_a_cancelled_training_raises_the_neutral_cancelled(tmp_path):
    from napari_pix2pix.engine.core.progress import run_to_end

    clean = [phantoms.nuclei((64, 64), 0)]
    gen = train_iter(clean=clean, task="denoise", steps=50, val_fraction=0, model_path=tmp_path / "m.safetensors",
                     **TINY)
    seen = []
    with pytest.raises(p2p.Cancelled, match="training was cancelled"):
        run_to_end(gen, seen.append, cancel=lambda: sum(isinstance(e, StepUpdate) for e in seen) >= 2,
                   what="training")
    assert p2p.PredictionCancelled is p2p.Cancelled  # the 0.1.0 name still catches it
    assert p2p.load_model(tmp_path / "m.safetensors").training_summary["status"] == "stopped"  # closed: saved


def test_closing_the_generator_saves(tmp_path):
    clean = [phantoms.nuclei((96, 96), 0)]
    gen = train_iter(clean=clean, config=TrainConfig(task="inpaint", steps=50, val_fraction=0, **TINY),
                     model_path=tmp_path / "m.safetensors")
    for ev in gen:
        if isinstance(ev, StepUpdate) and ev.step == 3:
            gen.close()
            break
    m = p2p.load_model(tmp_path / "m.safetensors")
    assert m.training_summary["steps_done"] == 3 and m.task.name == "inpaint"


def test_nan_in_data_is_caught_before_training():
    bad = phantoms.nuclei((64, 64), 0)
    bad[10, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        make_data("denoise", input=bad, target=phantoms.nuclei((64, 64), 0), patch_size=32)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from napari_pix2pix.engine.training import data as data_mod

    clean = [phantoms.nuclei((96, 96), 0)]
    orig = data_mod.PairedData.sample
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        calls["n"] += 1
        x, y, m = orig(self, *a, **k)
        if calls["n"] > 8:  # from step 5 on (batch 2), NaN appears in the batch
            x = x.copy()
            x[0, 0, 0] = np.nan
        return x, y, m

    monkeypatch.setattr(data_mod.PairedData, "sample", poisoned)
    with pytest.raises(TrainingDiverged, match="NaN or infinite"):
        p2p.train(clean=clean, config=TrainConfig(task="denoise", steps=20, val_fraction=0, **TINY),
                  model_path=tmp_path / "m.safetensors")
    m = p2p.load_model(tmp_path / "m.safetensors")
    assert m.training_summary["status"] == "failed" and m.training_summary["steps_done"] == 4
    assert all(torch.isfinite(v).all() for v in m.generator.state_dict().values() if v.is_floating_point())


def test_mismatched_folders_fail_before_training(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for name in ("x1", "x2", "only_a"):
        tifffile.imwrite(a / f"{name}.tif", np.zeros((64, 64), np.uint16))
    for name in ("x1", "x2", "only_b"):
        tifffile.imwrite(b / f"{name}.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match="only_a.tif") as e:
        pair_folders(a, b)
    assert "only_b.tif" in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no"):
        pair_folders(empty, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input=np.zeros((64, 64)), target=np.zeros((64, 60))), "differ in shape"),
        (dict(input=np.ones((40, 40)), target=np.ones((40, 40)), patch_size=64), "is larger than the image pair"),
        (dict(clean=np.ones((64, 64)), task="translate"), "cannot be synthesized"),
        (dict(input=[np.ones((64, 64))], target=[]), "as many input as target"),
        (dict(), "exactly one data source"),
    ],
)
def test_bad_training_data_is_named(kwargs, match):
    kwargs = {"task": "denoise", "patch_size": 32, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_data(**kwargs)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="multiple of 64"):
        TrainConfig(preset="unet_tiny", patch_size=100)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(TypeError, match="unknown training option"):
        p2p.train(clean=np.zeros((64, 64)), stepz=3)


def test_lr_schedule_is_constant_then_linear():
    from napari_pix2pix.engine.training.plan import make_plan

    cfg = TrainConfig(steps=100, lr=1.0)
    plan = make_plan(cfg, min_size=(64, 64), arch=cfg.generator_config(1, 1))
    assert plan.lr_at(0) == plan.lr_at(49) == 1.0
    assert 0 < plan.lr_at(75) < 1.0 and plan.lr_at(99) < 0.03
    ramped = make_plan(cfg, min_size=(64, 64), arch=cfg.generator_config(1, 1), warm=True)  # a warm start ramps
    assert ramped.lr_at(0) == pytest.approx(1.0 / ramped.lr_warmup) and ramped.lr_at(ramped.lr_warmup) == 1.0


def test_synthesis_and_aligned_folders(tmp_path):
    rng = np.random.default_rng(0)
    m = random_mask((128, 128), rng, coverage=(0.1, 0.2))
    assert 0.05 < m.mean() < 0.4
    noisy = add_noise(np.full((64, 64), 0.5, np.float32), NoiseConfig.gaussian(0.1).draw(rng), rng)
    assert abs(noisy.std() - 0.1) < 0.02
    matched = NoiseConfig.matched(phantoms.nuclei((128, 128), 0) + rng.normal(0, 0.05, (128, 128)))
    assert 0.02 < matched.gaussian_sigma[0] < matched.gaussian_sigma[1] < 0.2
    d = tmp_path / "ab"
    d.mkdir()
    for i in range(2):
        tifffile.imwrite(d / f"{i}.tif", rng.integers(0, 60000, (64, 128), dtype=np.uint16))
    data = make_data("translate", aligned_dir=d, patch_size=32, val_fraction=0)
    assert len(data.planes) == 2 and data.planes[0].input.shape == (1, 64, 64)
    data = make_data("colorize", clean=[rng.random((64, 64, 3))], patch_size=32, val_fraction=0)
    a, b, _ = data.sample(rng, 32)
    assert a.shape == (1, 32, 32) and b.shape == (3, 32, 32)


def test_region_validation_split():
    data = make_data("denoise", clean=[phantoms.nuclei((128, 96), 0)], patch_size=32, val_fraction=0.2,
                     val_split="region")
    assert data.planes[0].input.shape[1] + data.val[0].input.shape[1] == 128


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DDP_SCRIPT = """
import json, os, sys
import numpy as np
from napari_pix2pix.engine.images import phantoms
from napari_pix2pix.engine.api import train_iter
out = sys.argv[1]
clean = [phantoms.nuclei((96, 96), i) for i in range(4)]
gen = train_iter(clean=clean, task="denoise", preset="unet_tiny", generator={"levels": 3, "ngf": 8}, ndf=8,
                 patch_size=32, batch_size=2, steps=6, val_every=3, device="cpu", model_path=out + "/m.safetensors")
events = []
while True:
    try:
        ev = next(gen)
    except StopIteration as done:
        model = done.value
        break
    events.append(type(ev).__name__)
rank = os.environ["RANK"]
np.savez(out + f"/rank{rank}.npz", **{k: v.numpy() for k, v in model.generator.state_dict().items()})
json.dump(events, open(out + f"/events{rank}.json", "w"))
"""


def test_ddp_ranks_end_identical_and_only_rank_0_writes(tmp_path):
    import json

    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert set(r0.files) == set(r1.files)
    for k in r0.files:  # DDP averages the gradients: both ranks hold the same network at the end
        np.testing.assert_allclose(r0[k], r1[k], rtol=1e-5, atol=1e-6, err_msg=k)
    e0, e1 = (json.loads((tmp_path / f"events{r}.json").read_text()) for r in (0, 1))
    assert "CheckpointSaved" in e0 and "CheckpointSaved" not in e1  # only rank 0 writes files
    m = p2p.load_model(tmp_path / "m.safetensors")
    assert m.training_summary["world_size"] == 2 and m.training_summary["steps_done"] == 6


def test_ddp_command_line_only_rank_0_talks(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(4):
        tifffile.imwrite(clean / f"{i}.tif", phantoms.to_uint16(phantoms.nuclei((96, 96), i)))
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "napari_pix2pix.cli", "train", "--clean-dir", str(clean), "--task", "denoise",
           "--preset", "unet_tiny", "--levels", "3", "--ngf", "8", "--ndf", "8", "--patch-size", "32",
           "--steps", "40", "--val-every", "20", "--log-every", "20", "--device", "cpu", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("model saved to") == 1 and "-inf dB" not in res.stdout
    lines = res.stdout.splitlines()
    assert res.stdout.count("step 20/40") == 1, res.stdout
    assert sum(line.startswith("step") and "validation PSNR" in line for line in lines) == 2, res.stdout
    assert res.stderr.count("| 0/40 [") == 1  # one progress bar
    m = p2p.load_model(out)
    assert m.training_summary["world_size"] == 2 and m.training_summary["steps_done"] == 40


def test_checkpoint_events_and_best(tmp_path):
    clean = [np.stack([phantoms.nuclei((96, 96), s + c) for c in range(3)], -1) for s in range(2)]
    with pytest.raises(ValueError, match="colorize needs RGB"):
        make_data("colorize", clean=[phantoms.nuclei((96, 96), 0)], patch_size=32)
    events = list(_drain(train_iter(clean=clean, config=TrainConfig(task="colorize", steps=4, val_every=2,
                                    checkpoint_every=2, **TINY),
                                    model_path=tmp_path / "c.safetensors")))
    kinds = {e.kind for e in events if isinstance(e, CheckpointSaved)}
    assert kinds == {"best", "checkpoint", "model"}
    best = p2p.load_model(tmp_path / "c.checkpoints" / "best.safetensors")
    assert best.task.name == "colorize"


def _drain(gen):
    while True:
        try:
            yield next(gen)
        except StopIteration:
            return


def test_l1_only_training_skips_the_discriminator():
    clean = [phantoms.nuclei((96, 96), s) for s in range(2)]
    events = []
    model = p2p.train(clean=clean, task="denoise", steps=4, gan_weight=0.0, val_fraction=0, progress=events.append,
                      **TINY)
    steps = [e for e in events if isinstance(e, StepUpdate)]
    assert len(steps) == 4 and all(e.losses["D"] == 0 and e.losses["G_GAN"] == 0 for e in steps)
    assert all(e.losses["G_L1"] > 0 for e in steps)
    assert model.training_settings["gan_weight"] == 0.0
    with pytest.raises(ValueError, match="gan_weight"):
        TrainConfig(gan_weight=-1)
    with pytest.raises(ValueError, match="nothing to train"):
        TrainConfig(gan_weight=0, lambda_l1=0)


def test_short_images_validate_on_the_held_out_fraction():
    from napari_pix2pix.engine.training.data import Plane, _split_validation

    def plane(h):
        a = np.zeros((1, h, 70), np.float32)
        return Plane(a, a, (0.0, 1.0), (0.0, 1.0), "p")

    train, val = _split_validation([plane(200)], 0.1, "region", (32, 32), 0)
    assert train[0].input.shape[-2] == 168 and val[0].input.shape[-2] == 32  # a patch-high validation region
    train, val = _split_validation([plane(58)], 0.1, "region", (32, 32), 0)  # too short for that: the 10 %
    assert train[0].input.shape[-2] == 52 and val[0].input.shape[-2] == 6
    with pytest.raises(ValueError, match="too small to hold out"):
        _split_validation([plane(32)], 0.1, "region", (32, 32), 0)


def test_a_short_volume_validates_on_its_last_planes_with_context():
    # dipy's 12 x 58 x 58 MR half: a 6-row strip at the edge is background, and selecting by it kept the
    # starting model (issue #16: 24.90 dB where the fine-tuned weights, now selected, give 28.77); the last
    # planes show the whole field, validated with the planes before them as the network's context
    from napari_pix2pix.engine.training.data import VAL_Z_CONTEXT, Plane, _split_validation

    def vol(z, h=58):
        a = np.arange(z * h * 70, dtype=np.float32).reshape(1, z, h, 70)
        return Plane(a, a, (0.0, 1.0), (0.0, 1.0), "v")

    train, val = _split_validation([vol(12)], 0.1, "region", (1, 32, 32), 0)
    assert train[0].input.shape[1:] == (11, 58, 70) and val[0].input.shape[1:] == (1 + VAL_Z_CONTEXT, 58, 70)
    assert val[0].context == VAL_Z_CONTEXT and np.array_equal(val[0].input[:, -1], vol(12).input[:, 11])
    train, val = _split_validation([vol(6)], 0.1, "region", (1, 32, 32), 0)  # too few planes to spare: rows
    assert train[0].input.shape[1:] == (6, 52, 70) and val[0].context == 0
    train, val = _split_validation([vol(12, 200)], 0.1, "region", (1, 32, 32), 0)  # tall enough: rows, as before
    assert train[0].input.shape[1:] == (12, 168, 70) and val[0].context == 0


def test_a_deep_held_out_slab_is_validated_a_patch_deep():
    from napari_pix2pix.engine.training.data import VAL_Z_CONTEXT, make_data
    from napari_pix2pix.engine.training.validation import make_valset

    clean = np.random.default_rng(0).random((60, 40, 64)).astype(np.float32)
    data = make_data("denoise", input=clean, target=clean, dims=3, patch_size=(1, 32, 32), val_split="region")
    assert data.planes[0].input.shape[1:] == (54, 40, 64) and data.val[0].input.shape[1] == 6 + VAL_Z_CONTEXT
    vs = make_valset(data, (2, 32, 32), 4, 0)  # 2 of the 6 held-out planes at a time, with their context
    assert vs is not None and all(t.shape[1:] == (2 + VAL_Z_CONTEXT, 32, 32) for t in vs.targets)


def test_validation_scores_the_held_out_planes_and_picks_patches_with_signal():
    from napari_pix2pix.engine.training.data import VAL_Z_CONTEXT, make_data
    from napari_pix2pix.engine.training.validation import make_valset, validate

    rng = np.random.default_rng(0)
    clean = np.zeros((12, 58, 58), np.float32)
    clean[:, :16, :16] = rng.random((12, 16, 16))  # signal in a corner only: most 32-px crops miss it
    data = make_data("denoise", input=clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32),
                     target=clean, dims=3, patch_size=(1, 32, 32), val_split="region")
    vs = make_valset(data, (8, 32, 32), 4, 0)
    assert vs is not None and vs.skips == [VAL_Z_CONTEXT] * 4
    assert all(t.shape[1:] == (1 + VAL_Z_CONTEXT, 32, 32) and np.std(t[:, -1]) > 0.05 for t in vs.targets)
    model = p2p.train(input=clean, target=clean, spatial_dims=3, steps=1, val_fraction=0, start_from="scratch",
                      preset="unet3d_tiny", generator={"ngf": 4})
    v = validate(model, vs, torch.device("cpu"), 0, "denoise")
    raw = [r[:, VAL_Z_CONTEXT:] for r in vs.raw_inputs]  # the input baseline on the scored plane only
    expect = np.mean([10 * np.log10(1.6**2 / np.mean((r.astype(np.float64) - t[:, VAL_Z_CONTEXT:]) ** 2))
                      for r, t in zip(raw, vs.targets, strict=True)])
    assert v.psnr_input == pytest.approx(expect, rel=1e-6)


def test_a_small_volume_trains_in_3d_at_the_defaults():
    vol = np.random.default_rng(0).random((12, 58, 58)).astype(np.float32)  # a 58-pixel volume (dipy's MR)
    model = p2p.train(input=vol, target=vol, spatial_dims=3, steps=2)
    assert model.spatial_dims == 3 and model.predict(vol).shape == vol.shape


def test_noisy_clean_images_are_called_out_before_training(tmp_path):
    from napari_pix2pix import NoisyCleanImagesWarning
    from napari_pix2pix.engine.training.setup import NOISY_CLEAN, clean_images_noise

    clean = phantoms.fluorescence((128, 128), 0)
    noisy = add_noise(clean, {"photons": 30.0, "sigma": 0.02}, np.random.default_rng(0))
    cfg = TrainConfig(task="denoise", steps=1, val_fraction=0, start_from="scratch", **TINY)
    assert clean_images_noise(make_data("denoise", clean=[clean], patch_size=32)) < 0.1
    assert clean_images_noise(make_data("denoise", clean=[noisy], patch_size=32)) > NOISY_CLEAN
    assert clean_images_noise(make_data("denoise", input=[noisy], target=[clean], patch_size=32)) is None  # real pairs
    with pytest.warns(NoisyCleanImagesWarning, match="look noisy.*learn from the noisy images alone"):
        p2p.train(clean=[noisy], config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyCleanImagesWarning)
        p2p.train(clean=[clean], config=cfg)
