"""Model files and bioimage.io packages written by napari-pix2pix 0.1.0 still load and predict bit-identically."""

from pathlib import Path

import numpy as np

import napari_pix2pix as p2p

DATA = Path(__file__).parent / "data" / "legacy"


def test_legacy_model_file_predicts_bit_identically():
    ref = np.load(DATA / "predictions-v0.1.0.npz")
    model = p2p.load_model(DATA / "tiny-denoise-v0.1.0.safetensors")
    assert model.task.name == "denoise" and model.name == "legacy-tiny-denoise"
    out = model.predict(ref["image"], tile_size=None, device="cpu", precision="fp32")
    assert out.dtype == ref["denoise"].dtype
    np.testing.assert_array_equal(out, ref["denoise"])
    tiled = model.predict(ref["image"], tile_size=32, overlap=8, device="cpu", precision="fp32")
    np.testing.assert_array_equal(tiled, ref["denoise_tiled"])


def test_legacy_bioimageio_package_predicts_bit_identically():
    ref = np.load(DATA / "predictions-v0.1.0.npz")
    model = p2p.load_model(DATA / "tiny-inpaint-v0.1.0.zip")
    assert model.task.name == "inpaint"
    out = model.predict(ref["image"], ref["mask"], tile_size=None, device="cpu", precision="fp32")
    np.testing.assert_array_equal(out, ref["inpaint"])
    assert (out != ref["image"])[ref["mask"]].any()  # the holes were filled by the network
