import pickle
import struct

import numpy as np
import pytest
import torch

import napari_pix2pix as p2p
from napari_pix2pix import ModelFileError, Pix2PixModel, import_reference_checkpoint, load_model
from napari_pix2pix.engine.formats.modelfile import read_model_file
from napari_pix2pix.nn import preset_config, reference_key_map
from tests._helpers import smooth_image, tiny_model


def test_save_load_equal(tmp_path):
    m = tiny_model("inpaint", channels=3)
    m.card["summary"] = "test model"
    path = m.save(tmp_path / "m")
    assert path.suffix == ".safetensors"
    m2 = load_model(path)
    assert m2.task.name == "inpaint" and m2.config == m.config and m2.card["summary"] == "test model"
    for k, v in m.generator.state_dict().items():
        assert torch.equal(v, m2.generator.state_dict()[k])
    im = np.random.default_rng(0).random((40, 50, 3), dtype=np.float32)
    mask = np.zeros((40, 50), bool)
    mask[5:15, 5:15] = True
    np.testing.assert_array_equal(m.predict(im, mask, channel_axis=-1), m2.predict(im, mask, channel_axis=-1))
    meta = m2.metadata
    assert meta["architecture"]["levels"] == 3 and meta["package_version"] == p2p.__version__


def test_save_is_atomic(tmp_path, monkeypatch):
    m = tiny_model()
    path = m.save(tmp_path / "m.safetensors")
    before = path.read_bytes()
    import napari_pix2pix.engine.formats.modelfile as mf

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(mf.os, "replace", boom)
    with pytest.raises(OSError):
        tiny_model(seed=1).save(path)
    assert path.read_bytes() == before  # the old file is intact
    assert [f.name for f in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


@pytest.mark.skipif(not hasattr(__import__("os"), "getuid"), reason="POSIX file modes")
def test_saved_files_get_normal_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    path = tiny_model().save(tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file
    os.chmod(path, 0o640)
    tiny_model(seed=1).save(path)
    assert path.stat().st_mode & 0o777 == 0o640  # replacing a file keeps its mode


class _Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['P2P_PWNED'], 'w').write('x')",))


def test_pickle_is_refused_without_running_it(tmp_path, monkeypatch):
    flag = tmp_path / "pwned"
    monkeypatch.setenv("P2P_PWNED", str(flag))
    for name, writer in [("evil.pth", lambda f: torch.save({"x": _Evil()}, f)),
                         ("evil.safetensors", lambda f: f.write_bytes(pickle.dumps(_Evil())))]:
        path = tmp_path / name
        if name.endswith(".pth"):
            writer(path)
        else:
            writer(path)
        with pytest.raises(ModelFileError, match="never unpickles"):
            load_model(path)
    assert not flag.exists()


def test_tampered_and_corrupt_files_are_refused(tmp_path):
    path = tiny_model().save(tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    tampered = tmp_path / "tampered.safetensors"
    data[-5] ^= 0xFF  # flip bits in a weight
    tampered.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="modified"):
        load_model(tampered)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="corrupted|truncated"):
        load_model(truncated)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelFileError, match="not a napari-pix2pix model"):
        load_model(junk)
    # a valid safetensors file of someone else's
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="not a napari-pix2pix model"):
        read_model_file(other)
    with pytest.raises(FileNotFoundError, match="no model named"):
        load_model(tmp_path / "missing.safetensors")


def test_metadata_edit_is_detected(tmp_path):
    path = tiny_model().save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n].replace(b'\\"levels\\": 3', b'\\"levels\\": 4')
    assert header != data[8 : 8 + n]
    (tmp_path / "edit.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + data[8 + n :])
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "edit.safetensors")


def test_import_reference_checkpoint(tmp_path):
    cfg = preset_config("unet_128", in_channels=3, out_channels=3)
    torch.manual_seed(0)
    ours = Pix2PixModel("translate", config=cfg)
    with torch.no_grad():
        for mod in ours.generator.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    inverse = {v: k for k, v in reference_key_map(cfg).items()}
    ref_state = {}
    for k, v in ours.generator.state_dict().items():
        prefix, leaf = k.rsplit(".", 1)
        ref_state["module." + inverse[prefix + "."] + leaf] = v.clone()
    path = tmp_path / "latest_net_G.pth"
    torch.save(ref_state, path)
    imported = import_reference_checkpoint(path, "translate", preset="unet_128")
    im = np.random.default_rng(0).random((128, 128, 3), dtype=np.float32)
    np.testing.assert_allclose(imported.predict(im, channel_axis=-1), ours.predict(im, channel_axis=-1), atol=1e-6)
    with pytest.raises(ModelFileError, match="unexpected key"):
        import_reference_checkpoint(path, preset="unet_256")
    with pytest.raises(ValueError, match="batch-norm"):
        import_reference_checkpoint(path, norm="instance")


def test_task_functions_without_bundled_model(monkeypatch):
    from napari_pix2pix.engine import api

    monkeypatch.setattr(api, "default_model_name", lambda task: None)
    with pytest.raises(p2p.NoBundledModelError, match="no pretrained denoise model"):
        p2p.denoise(np.zeros((8, 8)))


def test_default_model_is_the_one_named_after_its_task(monkeypatch):
    from napari_pix2pix.engine import registry

    both = {"colorize-he": {"task": "colorize"}, "colorize": {"task": "colorize"}, "denoise": {"task": "denoise"}}
    monkeypatch.setattr(registry, "list_models", lambda: both)  # sorted by file name: colorize-he first
    assert registry.default_model_name("colorize") == "colorize"
    assert registry.default_model_name("denoise") == "denoise" and registry.default_model_name("inpaint") is None
    monkeypatch.setattr(registry, "list_models", lambda: {"colorize-he": {"task": "colorize"}})
    assert registry.default_model_name("colorize") == "colorize-he"


def test_task_functions_with_model_file(tmp_path):
    path = tiny_model("denoise").save(tmp_path / "d.safetensors")
    im = smooth_image((40, 40), np.uint16)
    out = p2p.denoise(im, model=path)
    assert out.dtype == np.uint16 and out.shape == im.shape
    with pytest.raises(ValueError, match="does denoise, not colorize"):
        p2p.colorize(im, model=path)
    assert p2p.translate(im, model=path).shape == im.shape


def test_import_does_not_pull_qt_or_napari():
    import subprocess
    import sys

    gui = "('napari', 'PyQt6', 'PyQt5', 'PySide6', 'qtpy')"
    code = f"import sys, napari_pix2pix; print(any(m.split('.')[0] in {gui} for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_half_precision_file_is_smaller_and_predicts_the_same(tmp_path):
    m = tiny_model("denoise", ngf=8, block_convs=1, residual=True)
    full = m.save(tmp_path / "full.safetensors")
    half = m.save(tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    m2 = load_model(half)
    assert m2.config == m.config and all(p.dtype == torch.float32 for p in m2.generator.parameters())
    im = smooth_image((64, 80))
    a, b = m.predict(im, precision="fp32"), m2.predict(im, precision="fp32")
    assert np.abs(a - b).max() < 2e-3 * np.ptp(a)
    # a value float16 cannot hold stays float32 (a BatchNorm variance above 65504 once became inf)
    with torch.no_grad():
        var = next(b for n, b in m.generator.named_buffers() if n.endswith("running_var"))
        var[0] = 7e4
    m3 = load_model(m.save(tmp_path / "wide.safetensors", half=True))
    var3 = next(b for n, b in m3.generator.named_buffers() if n.endswith("running_var"))
    assert torch.isfinite(var3).all() and float(var3[0]) == 7e4
