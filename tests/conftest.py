"""Fixtures shared by the napari tests (importing this module imports neither napari nor Qt)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _pix2pix_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty list of remembered models (never the user's)."""
    folder = tmp_path / "pix2pix-config"
    monkeypatch.setenv("NAPARI_PIX2PIX_CONFIG_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model file per task (levels 3, ngf 4: size multiple 8), whose output depends on its input."""
    from tests._helpers import tiny_model

    folder = tmp_path_factory.mktemp("models")
    files = {}
    for task in ("denoise", "inpaint", "colorize", "translate"):
        model = tiny_model(task)
        model.name = f"tiny-{task}"
        files[task] = model.save(folder / f"tiny-{task}.safetensors")
    rgb = tiny_model("denoise", channels=3)
    rgb.name = "tiny-denoise-rgb"
    files["denoise-rgb"] = rgb.save(folder / "tiny-denoise-rgb.safetensors")
    big = tiny_model("denoise", levels=6)
    big.name = "tiny-denoise-levels6"
    files["denoise-levels6"] = big.save(folder / "tiny-denoise-levels6.safetensors")
    return files
