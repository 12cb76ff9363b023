"""Model exchange: bioimage.io packages (export, `bioimageio test`, import), ONNX and TorchScript."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import bioimageio.core  # noqa: E402, F401 - the testing extra has it: a missing package must fail CI
import numpy as np
import onnxruntime  # noqa: E402, F401
import pytest
import torch
import yaml

import napari_pix2pix as p2p
from napari_pix2pix.cli import main
from napari_pix2pix.engine.formats.export import MissingExtraError
from napari_pix2pix.nn import unet as unet_module
from napari_pix2pix.nn.unet import UNetConfig, UNetGenerator
from tests._helpers import smooth_image, tiny_model

TOL = 1e-4  # network units; measured ~1e-7


def _bioimageio_test(path) -> None:
    """`bioimageio test` (the library call behind the CLI): every weight format, offline, CPU."""
    from bioimageio.core import test_model

    summary = test_model(Path(path), devices=["cpu"])
    errors = [f"{d.name}: {e.msg[:300]}" for d in summary.details for e in d.errors]
    assert summary.status == "passed", "\n".join(errors)


def _predict_both(a, b, task, channels=1, shape=(70, 90)):
    img = smooth_image(shape, np.uint16) if len(shape) == 2 else np.stack(  # a volume: drifting planes
        [np.roll(smooth_image(shape[1:], np.uint16), 3 * z, axis=1) for z in range(shape[0])])
    if channels > 1:
        img = np.stack([np.roll(img, 5 * i, axis=0) for i in range(channels)], axis=-1)
    mask = None
    if task == "inpaint":
        mask = np.zeros(shape, bool)
        mask[20:40, 30:55] = True
    m = a.config.multiple  # tiled, with several tiles per axis
    kw = dict(channel_axis=-1 if channels > 1 else None, tile_size=max(32, 2 * m), overlap=8, device="cpu")
    return a.predict(img, mask, **kw), b.predict(img, mask, **kw)


# ---------------------------------------------------------------------- bioimage.io
def test_trained_model_bioimageio_cli_round_trip(tmp_path, capsys):
    """Train, `napari-pix2pix export --bioimageio`, `bioimageio test` (the CLI), load it, predict the same."""
    clean = [smooth_image((64, 64), seed=s) for s in range(2)]
    model = p2p.train(clean=clean, task="denoise", preset="unet_tiny", steps=3, patch_size=32, batch_size=2,
                      val_fraction=0, generator={"levels": 3, "ngf": 4}, ndf=4, device="cpu",
                      model_path=tmp_path / "m.safetensors")
    out = tmp_path / "denoiser.zip"
    assert main(["export", str(tmp_path / "m.safetensors"), str(out), "--bioimageio", "--author", "Jane Doe"]) == 0
    printed = capsys.readouterr().out
    assert "pytorch_state_dict: max |Δ|" in printed and "onnx" in printed and "torchscript" in printed

    exe = Path(sys.executable).with_name("bioimageio")
    env = {**os.environ, "NO_COLOR": "1"}
    run = subprocess.run([str(exe), "test", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    back = p2p.load_model(out)
    assert back.task.name == "denoise" and back.config == model.config and back.training_summary["steps_done"] == 3
    a, b = _predict_both(model, back, "denoise")
    np.testing.assert_array_equal(a, b)  # our importer predicts exactly as the model file

    rdf = yaml.safe_load(zipfile.ZipFile(out).read("rdf.yaml"))
    assert rdf["authors"] == [{"name": "Jane Doe"}] and rdf["cite"][0]["doi"] == "10.1109/CVPR.2017.632"
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["config"]["napari_pix2pix"]["task"] == "denoise"
    y = rdf["inputs"][0]["axes"][2]
    assert y["size"] == {"min": 16, "step": 8}
    assert rdf["outputs"][0]["axes"][2]["halo"] == 4
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"] == [
        "scale_range", "scale_linear"]
    readme = zipfile.ZipFile(out).read("README.md").decode()
    assert "## Validation" in readme and "normalized units of the input" in readme


@pytest.mark.parametrize("case", ["inpaint", "colorize", "translate_fixed_rgb_residual", "denoise_fixed_input"])
def test_bioimageio_export_passes_and_imports_exactly(tmp_path, case):
    if case == "translate_fixed_rgb_residual":
        model = tiny_model("translate", channels=3, out_channels=3, residual=True, block_convs=1,
                           normalization=p2p.Normalization(output="fixed", out_lo=100.0, out_hi=900.0))
        task, channels = "translate", 3
    elif case == "denoise_fixed_input":  # "dataset" normalization: the training data's range for every image
        model = tiny_model("denoise", normalization=p2p.Normalization(input="fixed", in_lo=0.05, in_hi=0.9))
        task, channels = "denoise", 1
    else:
        model, task, channels = tiny_model(case), case, 1
    report = model.export_bioimageio(tmp_path / "m.zip")
    assert report.format == "bioimageio" and set(report.max_abs_diff) == {"pytorch_state_dict", "torchscript", "onnx"}
    # package vs our prediction, in the package's output units (inpaint: its percentiles include the holes)
    limit = 1e-2 if task == "inpaint" else (1e-3 if task == "translate" else 1e-4)
    assert max(report.max_abs_diff.values()) < limit, report
    _bioimageio_test(report.path)
    back = p2p.load_model(report.path)
    assert back.task.name == task and back.normalization == model.normalization
    a, b = _predict_both(model, back, task, channels)
    np.testing.assert_array_equal(a, b)


def test_edited_package_is_read_with_its_edits(tmp_path, capsys):
    model = tiny_model("denoise")
    src = model.export_bioimageio(tmp_path / "m.zip", check=False).path
    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    rdf = yaml.safe_load(files["rdf.yaml"])
    rdf["name"] = "My edited denoiser"
    scale_range = next(p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range")
    scale_range["kwargs"].update(min_percentile=2.0, max_percentile=98.0)
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(edited, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    back = p2p.load_model(edited)
    assert back.name == "My edited denoiser" and (back.normalization.low, back.normalization.high) == (2.0, 98.0)
    assert main(["models", str(edited)]) == 0
    assert '"name": "My edited denoiser"' in capsys.readouterr().out
    # an unpacked package (folder, or its rdf.yaml) loads too
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(edited).extractall(folder)
    for ref in (folder, folder / "rdf.yaml"):
        again = p2p.load_model(ref)
        a, b = _predict_both(back, again, "denoise")
        np.testing.assert_array_equal(a, b)


def _rewrite(src: Path, dest: Path, **changes) -> Path:
    """Copy a zip package with some members changed (`name=bytes`, `name=None` drops it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for n in zin.namelist():
            data = changes.get(n, zin.read(n)) if n in changes else zin.read(n)
            if data is not None:
                zout.writestr(n, data)
    return dest


def test_corrupted_or_tampered_packages_are_refused(tmp_path):
    src = tiny_model("denoise").export_bioimageio(tmp_path / "m.zip", check=False).path
    z = zipfile.ZipFile(src)
    weights = z.read("pytorch_state_dict.pt")
    rdf = yaml.safe_load(z.read("rdf.yaml"))

    tampered = bytearray(weights)
    tampered[-100] ^= 0xFF
    bad = _rewrite(src, tmp_path / "tampered.zip", **{"pytorch_state_dict.pt": bytes(tampered)})
    with pytest.raises(p2p.ModelFileError, match="does not match its sha256"):
        p2p.load_model(bad)

    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(p2p.ModelFileError, match="not a readable zip"):
        p2p.load_model(truncated)

    missing = _rewrite(src, tmp_path / "missing.zip", **{"torchscript.pt": None})
    with pytest.raises(p2p.ModelFileError, match="missing"):
        p2p.load_model(missing)

    no_sha = json.loads(json.dumps(rdf))
    del no_sha["weights"]["pytorch_state_dict"]["sha256"]
    with pytest.raises(p2p.ModelFileError, match="no sha256"):
        p2p.load_model(_rewrite(src, tmp_path / "nosha.zip", **{"rdf.yaml": yaml.safe_dump(no_sha).encode()}))

    # weights replaced by a pickle that runs code, with a matching checksum: refused, never run
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf)
    evil = json.loads(json.dumps(rdf))
    evil["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    path = _rewrite(src, tmp_path / "evil.zip",
                    **{"pytorch_state_dict.pt": buf.getvalue(), "rdf.yaml": yaml.safe_dump(evil).encode()})
    with pytest.raises(p2p.ModelFileError, match="weights-only"):
        p2p.load_model(path)
    assert not (tmp_path / "pwned").exists()

    other = json.loads(json.dumps(rdf))
    other["weights"]["pytorch_state_dict"]["architecture"]["callable"] = "SomeoneElsesUNet"
    with pytest.raises(p2p.ModelFileError, match="not a napari-pix2pix generator"):
        p2p.load_model(_rewrite(src, tmp_path / "other.zip", **{"rdf.yaml": yaml.safe_dump(other).encode()}))

    plain_zip = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain_zip, "w") as zz:
        zz.writestr("data.pkl", b"x")
    with pytest.raises(p2p.ModelFileError, match="not a bioimage.io package"):
        p2p.load_model(plain_zip)
    checkpoint = tmp_path / "latest_net_G.pth"  # a torch checkpoint (also a zip) keeps its own message
    checkpoint.write_bytes(plain_zip.read_bytes())
    with pytest.raises(p2p.ModelFileError, match="pickled"):
        p2p.load_model(checkpoint)


def test_missing_extra_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    model = tiny_model("denoise")
    with pytest.raises(MissingExtraError, match=r"napari-pix2pix\[bioimageio\]"):
        model.export_bioimageio(tmp_path / "m.zip")
    path = model.save(tmp_path / "m.safetensors")
    assert main(["export", str(path), str(tmp_path / "m.zip")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "napari-pix2pix[bioimageio]"' in err and "Traceback" not in err


def test_bundled_models_export_and_pass_bioimageio_test(tmp_path):
    """Every bundled model becomes a package that `bioimageio test` passes."""
    models = p2p.list_models()
    assert models, "the bundled models are part of the package (src/napari_pix2pix/models)"
    for name in models:
        model = p2p.load_model(name)
        report = model.export_bioimageio(tmp_path / f"{name}.zip")
        _bioimageio_test(report.path)
        a, b = _predict_both(model, p2p.load_model(report.path), model.task.name,
                             model.task.image_channels(model.config.in_channels),
                             shape=(96, 130) if model.spatial_dims == 2 else (6, 96, 130))
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------- ONNX, TorchScript
@pytest.mark.parametrize("task", ["denoise", "inpaint", "colorize", "translate"])
def test_onnx_and_torchscript_match_predict(tmp_path, task):
    import onnx

    from napari_pix2pix.engine.formats.export import example_inputs, export_network, onnx_runner, torchscript_runner

    kw = {"channels": 2, "out_channels": 3} if task == "translate" else {}
    model = tiny_model(task, **kw)
    onnx_report = model.export_onnx(tmp_path / "m.onnx")
    ts_report = model.export_torchscript(tmp_path / "m.pt")
    assert onnx_report.max_abs_diff["onnxruntime"] < TOL and ts_report.max_abs_diff["torchscript"] < TOL
    # dynamic batch and size: another shape than the one exported with
    inputs = example_inputs(model, size=24, batch=3)
    with torch.no_grad():
        ref = export_network(model)(*inputs).numpy()
    arrays = [t.numpy() for t in inputs]
    for run in (onnx_runner(onnx_report.path), torchscript_runner(ts_report.path)):
        np.testing.assert_allclose(run(*arrays), ref, atol=TOL)
    # the metadata travels with the file
    meta = {p.key: p.value for p in onnx.load(str(onnx_report.path)).metadata_props}
    assert json.loads(meta["napari_pix2pix"])["task"] == task
    extra = {"napari_pix2pix.json": ""}
    torch.jit.load(str(ts_report.path), _extra_files=extra)
    assert json.loads(extra["napari_pix2pix.json"])["architecture"]["levels"] == 3


def test_cli_export_formats_and_errors(tmp_path, capsys):
    path = tiny_model("colorize").save(tmp_path / "c.safetensors")
    assert main(["export", str(path), str(tmp_path / "c.onnx")]) == 0
    assert main(["export", str(path), str(tmp_path / "c.pt"), "--torchscript", "--no-check"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime: max |Δ|" in out and (tmp_path / "c.pt").is_file()
    assert main(["export", str(path), str(tmp_path / "c.bin")]) == 2
    assert "cannot tell the export format" in capsys.readouterr().err
    assert main(["export", str(path), str(tmp_path / "c.onnx"), "--license", "MIT"]) == 2


# ---------------------------------------------------------------------- geometry and architecture source
def test_receptive_field_matches_gradient_support():
    torch.manual_seed(0)
    for k, kf, up in ((0, 0, "transpose"), (1, 0, "transpose"), (0, 1, "transpose"), (1, 2, "transpose"),
                      (0, 0, "resize"), (1, 1, "resize")):
        cfg = UNetConfig(levels=3, ngf=2 if not kf else 6, norm="none", dropout=0, block_convs=k, full_res_convs=kf,
                         upsample=up)
        net = UNetGenerator(cfg).eval()
        size, m = 96, cfg.multiple  # every output position of one grid cell, one per batch item
        x = torch.zeros(m, 1, size, size, requires_grad=True)
        y = net(x + 0.1 * torch.randn(1, 1, size, size))
        y[torch.arange(m), 0, size // 2 + torch.arange(m), size // 2].sum().backward()
        widest = 0
        for g in x.grad[:, 0].abs().sum(dim=2).numpy():
            rows = np.nonzero(g)[0]
            if not rows.size:  # every ReLU on this output's path happened to be off
                continue
            widest = max(widest, int(rows.max() - rows.min() + 1))
        assert (widest, widest) == cfg.receptive_field
        assert all(2 * h % m == 0 and 2 * m - 2 * h >= 1 for h, m in zip(cfg.halo, cfg.size_multiple))


def test_z_receptive_field_of_volumes_matches_gradient_support():
    torch.manual_seed(0)
    for zk, k, kf, up in ((None, 1, 1, "transpose"), (1, 1, 1, "transpose"), (2, 1, 0, "resize"),
                          (0, 0, 1, "transpose")):
        cfg = UNetConfig(levels=3, ngf=4, norm="none", dropout=0, block_convs=k, full_res_convs=kf, upsample=up,
                         spatial_dims=3, z_levels=0, z_kernel_levels=zk)
        net = UNetGenerator(cfg).eval()
        depth = 41
        x = torch.zeros(1, 1, depth, 16, 16, requires_grad=True)
        y = net(x + 0.1 * torch.randn(1, 1, depth, 16, 16))
        y[0, 0, depth // 2, 8, 8].backward()
        planes = np.nonzero(x.grad[0, 0].abs().sum(dim=(1, 2)).numpy())[0]
        assert int(planes.max() - planes.min() + 1) == cfg.receptive_field[0], (zk, k, kf, up)


def test_architecture_source_is_self_contained():
    tree = ast.parse(Path(unet_module.__file__).read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), "no relative imports"
    assert modules <= {"__future__", "collections", "dataclasses", "typing", "torch", "math"}, modules
