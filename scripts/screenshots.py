"""Screenshots of each widget at work, for the README: ``docs/images/*.png``.

Needs a display; on a server run it under Xvfb::

    xvfb-run -a python scripts/screenshots.py

Denoise, Inpaint and Colorize use the bundled models (the denoise and inpaint samples were not
in their training data; the colorize sample is an H&E section, colorized by colorize-he). The
window is 1366 x 768 (a common laptop screen), as a new user sees it. For Translate, and
for any task without a bundled model, a small model is trained first on the sample's reference
image (a few minutes on a CPU; it flatters the result) and cached in
``~/.cache/napari-pix2pix/screenshots`` so that later runs are quick.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
SIZE = (1366, 768)  # window size (logical pixels): a common laptop screen
MAX_BYTES = 300_000

# a small U-Net (unet_tiny, ngf 16) and a lighter discriminator: good results in ~2 min each on a CPU
RECIPE = {"preset": "unet_tiny", "patch_size": 64, "batch_size": 8, "lr": 1e-3, "ndf": 32, "val_fraction": 0.0}


def train_models(cache: Path, steps: int) -> dict[str, Path | None]:
    """Train (or reuse) a model for each task that has no bundled one (None: use the bundled model)."""
    from napari_pix2pix._napari.sample_data import SAMPLES
    from napari_pix2pix.engine import describe, train
    from napari_pix2pix.engine.registry import bundled_paths

    cache.mkdir(parents=True, exist_ok=True)
    layers = {name: {kw["name"]: data for data, kw, _ in make()} for name, make in SAMPLES.items()}
    sources = {
        "denoise": {"clean": layers["denoise"]["clean reference"],
                    "noise": {"gaussian_sigma": (0.02, 0.15), "photons": (5.0, 40.0), "read_noise": (0.0, 0.03),
                              "poisson_fraction": 0.8}},
        "inpaint": {"clean": layers["inpaint"]["intact reference"]},
        "colorize": {"clean": layers["colorize"]["colour reference"], "channel_axis": -1},
        "translate": {"input": layers["translate"]["widefield"], "target": layers["translate"]["sharp target"]},
    }
    paths: dict[str, Path | None] = {}
    for task, source in sources.items():
        if task in bundled_paths():
            paths[task] = None
            continue
        path = cache / f"{task}-{steps}.safetensors"
        if not path.is_file():
            print(f"training a {task} model ({steps} steps)...", flush=True)
            last = [time.perf_counter()]

            def log(ev: object, last: list[float] = last) -> None:
                if time.perf_counter() - last[0] > 15:
                    last[0] = time.perf_counter()
                    print("   ", describe(ev), flush=True)  # type: ignore[arg-type]

            model = train(progress=log, task=task, steps=steps, model_path=path, **RECIPE, **source)
            model.name = f"{task} (screenshot model)"
            model.save(path)
        paths[task] = path
    return paths


def settle(seconds: float = 1.0) -> None:
    """Let Qt process events (and vispy draw) for a while."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait(widget: object, timeout: float = 600) -> None:
    """Until the widget's worker has finished."""
    end = time.perf_counter() + timeout
    def busy() -> bool:
        runner = getattr(widget, "_runner", None)
        if runner is not None:
            return bool(runner.running)
        return getattr(widget, "_worker", None) is not None

    settle(0.2)
    while busy() and time.perf_counter() < end:
        settle(0.05)
    settle(0.5)  # the result's layer is added by the finished handler


def shot(viewer: object, name: str) -> Path:
    """Screenshot of the whole window, quantized so that it stays small."""
    settle(1.0)
    img = viewer.screenshot(canvas_only=False, flash=False)  # type: ignore[attr-defined]
    pic = Image.fromarray(np.asarray(img)[..., :3])
    path = OUT / f"{name}.png"
    for colors in (256, 192, 128, 96, 64):
        pic.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            break
    print(f"wrote {path} ({pic.size[0]}x{pic.size[1]}, {path.stat().st_size / 1024:.0f} KB)")
    return path


def fresh(viewer: object, sample: str, widget: str) -> object:
    """Clear the viewer, open a sample and dock one of the plugin's widgets."""
    viewer.layers.clear()  # type: ignore[attr-defined]
    viewer.window.remove_dock_widget("all")  # type: ignore[attr-defined]
    viewer.canvas.grid.enabled = False  # type: ignore[attr-defined]
    viewer.canvas.overlays.text.visible = False  # type: ignore[attr-defined]
    viewer.open_sample("napari-pix2pix", sample)  # type: ignore[attr-defined]
    _, w = viewer.window.add_plugin_dock_widget("napari-pix2pix", widget)  # type: ignore[attr-defined]
    return w


def grid(viewer: object, names: list[str]) -> None:
    """Show `names` side by side (first = left), everything else removed from view."""
    layers = viewer.layers  # type: ignore[attr-defined]
    for layer in list(layers):
        layer.visible = layer.name in names
    for i, name in enumerate(reversed(names)):  # napari's grid shows the top layer first
        layers.move(layers.index(name), len(layers) - 1 - i)
    hidden = [layer for layer in layers if layer.name not in names]
    for layer in hidden:
        layers.move(layers.index(layer.name), 0)
    g = viewer.canvas.grid  # type: ignore[attr-defined]
    g.enabled, g.shape, g.stride = True, (1, len(names)), 1
    text = viewer.canvas.overlays.text  # type: ignore[attr-defined]
    text.text = "      |      ".join(names)
    text.position, text.font_size, text.visible = "top_center", 13, True
    viewer.reset_view()  # type: ignore[attr-defined]


def restore_shot(viewer: object, models: dict[str, Path | None], task: str, sample: str, widget: str,
                 image: str, reference: str, suffix: str, mask: str | None = None) -> object:
    w = fresh(viewer, sample, widget)
    w._image_combo.set_layer(image)  # type: ignore[attr-defined]
    if mask is not None:
        w._mask_combo.set_layer(mask)  # type: ignore[attr-defined]
    model = models[task]
    if model is not None:  # otherwise the bundled model, selected by default
        assert w.use_model_file(model), w._status.text()  # type: ignore[attr-defined]
    w._run_btn.click()  # type: ignore[attr-defined]
    wait(w)
    out = f"{image} {suffix}"
    assert out in viewer.layers, w._status.text()  # type: ignore[attr-defined]
    grid(viewer, [image, out, reference])
    viewer.layers.selection.active = viewer.layers[out]  # type: ignore[attr-defined]
    shot(viewer, task)
    return w


def export_shot(widget: object) -> None:
    """The Export dialog opened from a restoration widget's model chooser."""
    from qtpy.QtWidgets import QApplication, QPushButton

    from napari_pix2pix._napari._qt.export import ExportDialog

    button = next(b for b in widget.findChildren(QPushButton) if "Export" in b.text())  # type: ignore[attr-defined]
    button.click()
    settle(1.0)
    dialog = next(w for w in QApplication.topLevelWidgets() if isinstance(w, ExportDialog) and w.isVisible())
    path = OUT / "export.png"
    dialog.grab().save(str(path))
    dialog.close()
    print(f"wrote {path}")


def train_shot(viewer: object, at_step: int, steps: int) -> None:
    w = fresh(viewer, "denoise", "Train")
    w._data._input_combo.set_layer("noisy")  # type: ignore[attr-defined]
    w._data._target_combo.set_layer("clean reference")  # type: ignore[attr-defined]
    w.set_steps(steps)  # type: ignore[attr-defined]
    w._settings._batch_spin.setValue(8)  # type: ignore[attr-defined]
    w._settings._val_every_spin.setValue(25)  # type: ignore[attr-defined]
    w._config_overrides = {"ndf": 32}  # type: ignore[attr-defined]
    w._settings._lr_spin.setValue(1e-3)  # type: ignore[attr-defined]
    demo = Path.home() / ".cache" / "napari-pix2pix" / "screenshots" / "train-demo.safetensors"
    w._settings._output.setText(str(demo))
    w._warm.wait(60)  # type: ignore[attr-defined]
    w._start_btn.click()  # type: ignore[attr-defined]
    end = time.perf_counter() + 900
    while w._progress._progress_bar.value() < at_step and w._runner.running and time.perf_counter() < end:  # type: ignore
        settle(0.1)
    viewer.layers["clean reference"].visible = False  # type: ignore[attr-defined]
    viewer.reset_view()  # type: ignore[attr-defined]
    shot(viewer, "train")
    w._stop_btn.click()  # type: ignore[attr-defined]
    wait(w)


def small_screen_shot(viewer: object) -> None:
    """A 1366 x 768 window (a common laptop screen) with Train and Denoise docked: nothing cut off."""
    viewer.layers.clear()  # type: ignore[attr-defined]
    viewer.window.remove_dock_widget("all")  # type: ignore[attr-defined]
    viewer.canvas.grid.enabled = False  # type: ignore[attr-defined]
    viewer.canvas.overlays.text.visible = False  # type: ignore[attr-defined]
    viewer.window.resize(1366, 768)  # type: ignore[attr-defined]
    viewer.open_sample("napari-pix2pix", "denoise")  # type: ignore[attr-defined]
    viewer.window.add_plugin_dock_widget("napari-pix2pix", "Train")  # type: ignore[attr-defined]
    viewer.window.add_plugin_dock_widget("napari-pix2pix", "Denoise")  # type: ignore[attr-defined]
    viewer.reset_view()  # type: ignore[attr-defined]
    shot(viewer, "small_screen")
    viewer.window.resize(*SIZE)  # type: ignore[attr-defined]


def volume_shot(viewer: object) -> None:
    """The generated volume sample denoised plane by plane, in napari's 3D view: noisy | denoised | clean."""
    w = fresh(viewer, "volume", "Denoise")
    w._image_combo.set_layer("noisy volume")  # type: ignore[attr-defined]
    w._run_btn.click()  # type: ignore[attr-defined]
    wait(w)
    out = "noisy volume denoised"
    assert out in viewer.layers, w._status.text()  # type: ignore[attr-defined]
    for name in ("noisy volume", out, "clean volume"):
        viewer.layers[name].rendering = "mip"  # type: ignore[attr-defined]
    viewer.dims.ndisplay = 3  # type: ignore[attr-defined]
    grid(viewer, ["noisy volume", out, "clean volume"])
    viewer.camera.angles = (0.0, 35.0, 60.0)  # type: ignore[attr-defined]
    viewer.layers.selection.active = viewer.layers[out]  # type: ignore[attr-defined]
    shot(viewer, "volume3d")
    viewer.dims.ndisplay = 2  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps of each screenshot model")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "napari-pix2pix" / "screenshots")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    parser.add_argument("--only", help="comma-separated shots: denoise,inpaint,colorize,translate,train,"
                                       "small_screen,volume3d (default: all)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    import torch

    from napari_pix2pix._napari.jobs import worker_threads

    torch.set_num_threads(args.threads or worker_threads())
    models = train_models(args.cache, args.steps)

    import napari

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-pix2pix")
    viewer.window.resize(*SIZE)
    settle(1.0)

    def wanted(name: str) -> bool:
        return only is None or name in only

    if wanted("denoise"):
        w = restore_shot(viewer, models, "denoise", "denoise", "Denoise", "noisy", "clean reference", "denoised")
        export_shot(w)
    if wanted("inpaint"):
        restore_shot(viewer, models, "inpaint", "inpaint", "Inpaint", "damaged", "intact reference", "inpainted",
                     mask="damage mask")
    if wanted("colorize"):
        restore_shot(viewer, models, "colorize", "colorize", "Colorize", "grayscale H&E", "colour reference",
                     "colorized")
    if wanted("translate"):
        restore_shot(viewer, models, "translate", "translate", "Translate", "widefield", "sharp target",
                     "translated")
    if wanted("train"):
        train_shot(viewer, at_step=150, steps=400)
    if wanted("volume3d"):
        volume_shot(viewer)
    if wanted("small_screen"):
        small_screen_shot(viewer)
    viewer.close()


if __name__ == "__main__":
    main()
