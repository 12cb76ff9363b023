import numpy as np
import pytest
import tifffile

import napari_pix2pix as p2p
from napari_pix2pix.cli import main
from napari_pix2pix.engine.images import phantoms
from tests._helpers import tiny_model


def _pairs(folder, n=3, seed=0):
    rng = np.random.default_rng(seed)
    (folder / "low").mkdir(parents=True)
    (folder / "high").mkdir()
    for i in range(n):
        clean = phantoms.nuclei((96, 96), i)
        tifffile.imwrite(folder / "high" / f"img{i}.tif", phantoms.to_uint16(clean))
        noisy = clean + rng.normal(0, 0.1, clean.shape)
        tifffile.imwrite(folder / "low" / f"img{i}.tif", phantoms.to_uint16(np.clip(noisy, 0, None)))


def test_cli_trains_on_16bit_folders_and_predicts(tmp_path, capsys):
    _pairs(tmp_path)
    model_path = tmp_path / "model.safetensors"
    rc = main(["train", "--input-dir", str(tmp_path / "low"), "--target-dir", str(tmp_path / "high"),
               "--task", "denoise", "--preset", "unet_tiny", "--levels", "3", "--ngf", "8", "--ndf", "8",
               "--patch-size", "32", "--steps", "10", "--val-every", "5", "--log-every", "5", "-o", str(model_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "step 5/10" in out and "validation PSNR" in out and "model saved" in out
    m = p2p.load_model(model_path)
    tr = m.training_summary
    assert tr["steps_done"] == 10 and tr["n_train_planes"] + tr["n_val_planes"] == 3

    rc = main(["predict", str(model_path), str(tmp_path / "low"), "-o", str(tmp_path / "pred"), "--tile-size", "64"])
    assert rc == 0
    res = tifffile.imread(tmp_path / "pred" / "img0.tif")
    assert res.dtype == np.uint16 and res.shape == (96, 96)

    # resume continues to more steps
    rc = main(["train", "--input-dir", str(tmp_path / "low"), "--target-dir", str(tmp_path / "high"),
               "--resume", str(tmp_path / "model.checkpoints" / "checkpoint.safetensors"), "--steps", "12",
               "-o", str(model_path)])
    assert rc == 0
    assert p2p.load_model(model_path).training_summary["steps_done"] == 12
    # the same command with a setting that differs from the checkpoint's: one line naming it, nothing trained
    capsys.readouterr()
    rc = main(["train", "--input-dir", str(tmp_path / "low"), "--target-dir", str(tmp_path / "high"),
               "--resume", str(tmp_path / "model.checkpoints" / "checkpoint.safetensors"), "--steps", "14",
               "--patch-size", "64", "-o", str(model_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "patch_size (checkpoint 32, given 64)" in err and len(err.strip().splitlines()) == 1
    assert p2p.load_model(model_path).training_summary["steps_done"] == 12


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "a" / "x.tif", np.zeros((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "b" / "y.tif", np.zeros((64, 64), np.uint16))
    rc = main(["train", "--input-dir", str(tmp_path / "a"), "--target-dir", str(tmp_path / "b"), "--patch-size", "64",
               "-o", str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "not paired by file name" in err and "x.tif" in err and "Traceback" not in err
    rc = main(["predict", str(tmp_path / "nope.safetensors"), str(tmp_path / "a"), "-o", str(tmp_path / "o")])
    assert rc == 2 and "no model named" in capsys.readouterr().err
    model = tiny_model("denoise").save(tmp_path / "m.safetensors")
    rc = main(["export", str(model), str(tmp_path / "a" / "x.tif" / "m.pt")])  # the "folder" is a file
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "Traceback" not in err


def test_cli_models_and_info(tmp_path, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "device (auto)" in out
    path = tiny_model("colorize").save(tmp_path / "c.safetensors")
    assert main(["models", str(path)]) == 0
    assert '"task": "colorize"' in capsys.readouterr().out
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for name, info in p2p.list_models().items():  # every bundled model, with its task
        assert any(line.startswith(name + " ") and info["task"] in line for line in listed.splitlines())


def test_cli_predict_png_rgb(tmp_path):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((50, 60, 3)) * 255).astype(np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb).save(tmp_path / "in" / "a.png")
    path = tiny_model("denoise").save(tmp_path / "d.safetensors")
    assert main(["predict", str(path), str(tmp_path / "in" / "a.png"), "-o", str(tmp_path / "out")]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == (50, 60, 3) and out.dtype == np.uint8
    assert main(["predict", str(path), str(tmp_path / "in" / "a.png"), "-o", str(tmp_path / "tta"), "--tta"]) == 0
    averaged = np.asarray(Image.open(tmp_path / "tta" / "a.png"))
    assert np.array_equal(averaged, tiny_model("denoise").predict(rgb, channel_axis=-1, tta=True))


def test_cli_numbers_are_checked_where_they_enter(tmp_path, capsys):
    path = tiny_model("denoise").save(tmp_path / "d.safetensors")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((40, 40), np.uint16))
    for opt, value in (("--overlap", "-5"), ("--tile-size", "0"), ("--batch-size", "0"), ("--tile-size", "big"),
                       ("--tta", "3")):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(path), str(tmp_path / "in"), "-o", str(tmp_path / "o"), opt, value])
        assert exc.value.code == 2
        assert opt in capsys.readouterr().err
    for opt, value in (("--minutes", "0"), ("--steps", "-3"), ("--lr", "0"), ("--gan-weight", "-1")):
        with pytest.raises(SystemExit):
            main(["train", "--clean-dir", str(tmp_path / "in"), "-o", str(tmp_path / "m"), opt, value])
        assert opt in capsys.readouterr().err
    with pytest.raises(SystemExit):  # steps and minutes exclude each other
        main(["train", "--clean-dir", str(tmp_path / "in"), "-o", str(tmp_path / "m"), "--steps", "3",
              "--minutes", "1"])


def test_cli_trains_with_a_recipe_a_time_budget_and_a_warm_start(tmp_path, capsys):
    _pairs(tmp_path)
    first = tmp_path / "first.safetensors"
    assert main(["train", "--input-dir", str(tmp_path / "low"), "--target-dir", str(tmp_path / "high"),
                 "--task", "translate", "--recipe", "paper", "--gan-weight", "0.5", "--preset", "unet_tiny",
                 "--levels", "3", "--ngf", "8", "--ndf", "8", "--patch-size", "32", "--minutes", "0.05",
                 "-o", str(first)]) == 0
    out = capsys.readouterr().out
    assert "time budget 0.05 min" in out and "model saved to" in out
    cfg = p2p.load_model(first).training_settings
    assert cfg["recipe"] == "paper" and cfg["gan_weight"] == 0.5 and cfg["task"] == "translate"
    second = tmp_path / "second.safetensors"
    assert main(["train", "--input-dir", str(tmp_path / "low"), "--target-dir", str(tmp_path / "high"),
                 "--task", "translate", "--start-from", str(first), "--steps", "4", "-o", str(second)]) == 0
    m = p2p.load_model(second)
    assert m.training_summary["started_from"] == str(first) and m.config == p2p.load_model(first).config


def test_cli_usage_error_exits(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_cli_learns_from_noisy_images_alone_and_predicts_with_a_noise_model(tmp_path, capsys):
    _pairs(tmp_path)  # only the noisy folder is used
    model_path = tmp_path / "n2s.safetensors"
    rc = main(["train", "--input-dir", str(tmp_path / "low"), "--task", "denoise", "--start-from", "scratch",
               "--preset", "unet_tiny", "--levels", "3", "--ngf", "8", "--patch-size", "32", "--steps", "6",
               "--val-every", "3", "-o", str(model_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "recipe noise2self" in out and "estimated without clean data" in out
    assert p2p.load_model(model_path).training_summary["plan"]["recipe"] == "noise2self"
    rc = main(["predict", str(model_path), str(tmp_path / "low"), "-o", str(tmp_path / "pred"), "--noise", "auto"])
    assert rc == 0 and (tmp_path / "pred" / "img0.tif").is_file()
    for bad in ("pink", "1,2"):
        with pytest.raises(SystemExit):
            main(["predict", str(model_path), str(tmp_path / "low"), "-o", str(tmp_path / "p2"), "--noise", bad])
    inpaint = tiny_model("inpaint").save(tmp_path / "inpaint.safetensors")
    capsys.readouterr()
    rc = main(["predict", str(inpaint), str(tmp_path / "low"), "-o", str(tmp_path / "p3"), "--noise", "auto"])
    assert rc == 2 and "--noise is for denoisers" in capsys.readouterr().err


def _noisy_stack_zarr(path, shape=(4, 96, 96), seed=0):
    import zarr

    rng = np.random.default_rng(seed)
    data = np.stack([phantoms.to_uint16(phantoms.nuclei(shape[1:], i)) for i in range(shape[0])])
    data = (data + rng.normal(0, 800, data.shape)).clip(0, 65535).astype(np.uint16)
    z = zarr.open_array(store=str(path), mode="w", shape=data.shape, chunks=(1, 48, 48), dtype=data.dtype)
    z[:] = data
    return data


def test_cli_predicts_a_zarr_store_on_a_local_cluster_of_2_workers(tmp_path, capsys):
    from napari_pix2pix.engine.images.io import open_zarr
    from napari_pix2pix.engine.images.zarrstore import read_axes

    data = _noisy_stack_zarr(tmp_path / "in.zarr")
    path = tiny_model("denoise").save(tmp_path / "d.safetensors")
    expect = tiny_model("denoise").predict(data, device="cpu", precision="fp32")
    assert main(["predict", str(path), str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.zarr"),
                 "--workers", "2", "--device", "cpu", "--precision", "fp32"]) == 0
    assert "out.zarr" in capsys.readouterr().out
    assert np.array_equal(np.asarray(open_zarr(tmp_path / "out.zarr")[:]), expect)
    assert read_axes(tmp_path / "out.zarr").names == ["z", "y", "x"]
    assert main(["predict", str(path), str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--workers", "2"]) != 0


def test_cli_resume_continues_an_interrupted_prediction(tmp_path, capsys, monkeypatch):
    from napari_pix2pix.engine.images.io import open_zarr
    from napari_pix2pix.engine.images.zarrstore import ZarrTarget, partial_path

    data = _noisy_stack_zarr(tmp_path / "in.zarr", shape=(5, 64, 64))
    path = tiny_model("denoise").save(tmp_path / "d.safetensors")
    expect = tiny_model("denoise").predict(data, device="cpu", precision="fp32")
    args = ["predict", str(path), str(tmp_path / "in.zarr"), "-o", str(tmp_path / "out.zarr"), "--device", "cpu",
            "--precision", "fp32"]
    computed = []
    real = ZarrTarget.mark_done

    def interrupt_after_2(self, i):
        if len(computed) == 2:
            raise KeyboardInterrupt  # Ctrl-C
        computed.append(i)
        real(self, i)

    monkeypatch.setattr(ZarrTarget, "mark_done", interrupt_after_2)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and partial_path(tmp_path / "out.zarr").name in err
    monkeypatch.setattr(ZarrTarget, "mark_done", lambda self, i: (computed.append(i), real(self, i))[1])
    assert main(args) != 0 and "resume" in capsys.readouterr().err  # not overwritten unasked
    assert main([*args, "--resume"]) == 0
    assert len(computed) == 5 and len(set(computed)) == 5  # 2 before, the 3 missing after
    assert np.array_equal(np.asarray(open_zarr(tmp_path / "out.zarr")[:]), expect)
