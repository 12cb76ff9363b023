"""Model files and bioimage.io packages written by napari-pix2pix 0.1.0 still load and predict bit-identically."""

from pathlib import Path

import numpy as np

import napari_pix2pix as p2p
from napari_pix2pix import Pix2PixModel

DATA = Path(__file__).parents[2] / "data" / "legacy"


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


# the metadata keys napari-pix2pix 0.1 knows (its UNetConfig and Normalization refuse any other)
V01_ARCHITECTURE = {"type", "in_channels", "out_channels", "levels", "ngf", "norm", "dropout", "dropout_blocks",
                    "block_convs", "residual", "full_res_convs"}
V01_NORMALIZATION = {"low", "high", "output", "out_lo", "out_hi"}


def test_2d_model_files_stay_readable_by_0_1(tmp_path):
    """A 2D model saved today is format version 1 with only the keys 0.1 reads (newer ones at defaults omitted)."""
    from safetensors import safe_open

    from napari_pix2pix.engine.formats.modelfile import read_metadata
    from napari_pix2pix.engine.registry import bundled_paths

    paths = [Pix2PixModel("denoise", "unet_tiny", levels=2, ngf=2).save(tmp_path / "m.safetensors"),
             *(p for p in bundled_paths().values() if read_metadata(p)["architecture"].get("spatial_dims", 2) == 2)]
    for path in paths:
        meta = read_metadata(path)
        assert set(meta["architecture"]) <= V01_ARCHITECTURE, path
        assert set(meta["normalization"]) <= V01_NORMALIZATION, path
        assert "z_context" not in meta
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["format_version"] == "1"
