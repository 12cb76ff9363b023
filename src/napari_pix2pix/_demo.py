"""``napari-pix2pix demo``: napari with a sample and the widgets, or the same pipeline headless.

With a display it opens napari with the denoise sample, the Denoise widget (with the
bundled denoiser, in front) and the Train widget docked and ready. Without one (or with
``headless=True``) it restores the noisy sample with the bundled denoiser (or, if none is
bundled, a tiny one trained on the sample's clean image) and writes a comparison figure
and the metrics.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEMO_NOISE = {"gaussian_sigma": (0.02, 0.15), "photons": (5.0, 40.0), "read_noise": (0.0, 0.03),
              "poisson_fraction": 0.8}  # covers the sample's noise (12 photons/unit, read noise 0.02)


def has_display() -> bool:
    """True when a GUI can open (Windows and macOS always; elsewhere with X11 or Wayland)."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo(headless: bool = False, out: str | os.PathLike[str] = "pix2pix-demo", *, steps: int = 200) -> int:
    """Run the demo; return the exit code.

    Parameters
    ----------
    headless : bool
        Never open a window (also the case when there is no display).
    out : path
        Folder for the headless figure, metrics and model.
    steps : int
        Training steps of the headless denoiser.
    """
    if headless or not has_display():
        return _headless(Path(out), steps)
    return _gui()


def _gui() -> int:
    import napari

    from .engine.registry import default_model_name

    bundled = default_model_name("denoise") is not None
    viewer = napari.Viewer(title="napari-pix2pix demo")
    viewer.open_sample("napari-pix2pix", "denoise")
    if not bundled:
        viewer.window.add_plugin_dock_widget("napari-pix2pix", "Denoise")
    _, train = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Train", tabify=not bundled)
    train._data._task_combo.setCurrentIndex(train._data._task_combo.findData("denoise"))
    train._data._source_combo.setCurrentIndex(train._data._source_combo.findData("layers"))
    train._data._input_combo.set_layer("noisy")
    train._data._target_combo.set_layer("clean reference")
    train.set_minutes(1.0)  # everything else at its defaults (the bundled denoiser, fine-tuned, where it ships)
    train._status.info("Press Start to train a denoiser on the sample for a minute (it starts from the bundled one "
                       "where it ships); it then appears in the Denoise tab: choose it there and press Run denoise.")
    if bundled:  # the bundled denoiser in front, ready to run; training one's own in the next tab
        _, denoise = viewer.window.add_plugin_dock_widget("napari-pix2pix", "Denoise", tabify=True)
        denoise._image_combo.set_layer("noisy")
        denoise._status.info("Press Run denoise to restore the noisy sample with the bundled denoiser; "
                             "the Train tab trains your own.")
    napari.run()
    return 0


def _to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1) * 255).round().astype(np.uint8)


def comparison_figure(panels: list[tuple[str, np.ndarray]], lo: float, hi: float) -> Any:
    """Side-by-side grayscale panels with a caption above each (a PIL image)."""
    from PIL import Image, ImageDraw

    h, w = panels[0][1].shape
    bar, gap = 22, 6
    fig = Image.new("L", (len(panels) * w + (len(panels) - 1) * gap, h + bar), 255)
    draw = ImageDraw.Draw(fig)
    for i, (caption, img) in enumerate(panels):
        x = i * (w + gap)
        fig.paste(Image.fromarray(_to_uint8(img, lo, hi)), (x, bar))
        draw.text((x + 4, 5), caption, fill=0)
    return fig


def _headless(out: Path, steps: int) -> int:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from ._napari.sample_data import sample_path
    from .engine import describe, train
    from .engine.images.io import read_image
    from .engine.registry import default_model_name, load_model

    out.mkdir(parents=True, exist_ok=True)
    noisy = read_image(str(sample_path("denoise_noisy.tif")))
    clean = read_image(str(sample_path("denoise_clean.tif")))
    t0 = time.perf_counter()
    bundled = default_model_name("denoise")
    if bundled is not None:
        model = load_model(bundled)
        how = f"bundled model {bundled!r}"
    else:
        print(f"No bundled denoiser: training a tiny one for {steps} steps on the sample's clean image "
              "(noisy/clean pairs synthesized on the fly)...", flush=True)
        last = [0.0]

        def log(ev: Any) -> None:
            if time.perf_counter() - last[0] > 5:
                last[0] = time.perf_counter()
                print("  " + describe(ev), flush=True)

        model = train(progress=log, clean=clean, task="denoise", preset="unet_tiny", steps=steps,
                      patch_size=64, batch_size=8, lr=1e-3, ndf=32, val_fraction=0.0, noise=DEMO_NOISE,
                      model_path=out / "demo-denoiser.safetensors", checkpoint_dir=out / "checkpoints")
        how = (f"unet_tiny trained {steps} steps on synthesized pairs from the sample's clean image "
               "(the reference below has the same content: an easy, optimistic test)")
    t_train = time.perf_counter() - t0
    t1 = time.perf_counter()
    restored = model.predict(noisy, tile_size=512)
    t_pred = time.perf_counter() - t1

    ref = clean.astype(np.float64)
    rng = float(ref.max() - ref.min())

    def scores(img: np.ndarray) -> dict[str, float]:
        x = img.astype(np.float64)
        return {"psnr": round(float(peak_signal_noise_ratio(ref, x, data_range=rng)), 3),
                "ssim": round(float(structural_similarity(ref, x, data_range=rng)), 4)}

    metrics: dict[str, Any] = {"noisy": scores(noisy), "restored": scores(restored), "model": how,
               "train_seconds": round(t_train, 1), "predict_seconds": round(t_pred, 2),
               "image_shape": list(noisy.shape), "dtype": str(noisy.dtype)}
    lo, hi = (float(v) for v in np.percentile(clean, (0.1, 99.9)))
    fig = comparison_figure([
        (f"noisy  PSNR {metrics['noisy']['psnr']:.2f} dB  SSIM {metrics['noisy']['ssim']:.3f}", noisy),
        (f"restored  PSNR {metrics['restored']['psnr']:.2f} dB  SSIM {metrics['restored']['ssim']:.3f}", restored),
        ("clean reference", clean),
    ], lo, hi)
    fig_path = out / "demo_comparison.png"
    fig.save(fig_path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"model: {how}")
    print(f"noisy    PSNR {metrics['noisy']['psnr']:6.2f} dB  SSIM {metrics['noisy']['ssim']:.3f}")
    print(f"restored PSNR {metrics['restored']['psnr']:6.2f} dB  SSIM {metrics['restored']['ssim']:.3f}")
    print(f"training {t_train:.1f} s, prediction {t_pred:.2f} s")
    print(f"wrote {fig_path} and {out / 'metrics.json'}")
    return 0
