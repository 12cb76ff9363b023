"""The Train widget's progress: the bar, the status lines, the live curves and the validation preview.

The preview (input | output | target of a held-out patch) is an image layer placed to the
right of everything shown; the uncertainty of its output lies over the output panel, hidden
until asked for. Both are the plugin's helper layers: the widgets never offer them as inputs.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QProgressBar, QVBoxLayout, QWidget

from ...engine.core.progress import StepUpdate, ValidationUpdate
from .common import HELPER, StatusLabel
from .plot import CurvesPlot

if TYPE_CHECKING:
    import napari

LOSS_NAMES = {"G_GAN": "adversarial", "G_L1": "L1 to target", "G_L2": "L2 to target", "D": "discriminator"}
PREVIEW_NAME = "pix2pix preview (input | output | target)"
PREVIEW_UNCERTAINTY_NAME = "pix2pix preview uncertainty"  # over the preview's output panel (hidden at first)
PREVIEW_GAP = 4  # pixels between the preview's panels
PREVIEW_HEIGHT = 0.4  # the preview's height: up to this share of the images' (zoomed by whole pixels, if at all)
UI_INTERVAL = 0.25  # seconds between updates of the progress display and curves (repaints cost GUI time)


def fmt_time(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class TrainingProgress(QWidget):
    """Progress bar, status, the held-out scores, loss and PSNR curves; the preview layers in the viewer."""

    def __init__(self, viewer: napari.viewer.Viewer, status: StatusLabel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._status = status
        self._last_ui = 0.0
        self._layer_scale: tuple[float, ...] = (1.0, 1.0)
        self._progress_bar = QProgressBar()
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._val_label = StatusLabel()
        self._loss_plot = CurvesPlot("training losses (log scale)", log_y=True)
        for name in ("G_GAN", "G_L1", "D"):
            self._loss_plot.add_series(name, label=LOSS_NAMES[name])
        self._psnr_plot = CurvesPlot("held-out PSNR (dB)")
        self._psnr_plot.add_series("model", "#00e676", label="model")
        self._psnr_plot.add_series("input", "#bdbdbd", dashed=True, label="input")
        for plot in (self._loss_plot, self._psnr_plot):
            plot.setFixedHeight(96)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self._progress_bar, status, self._val_label, self._loss_plot, self._psnr_plot):
            layout.addWidget(w)

    def start(self, steps: int | None, resumed: bool, layer: Any) -> None:
        """A run starts: busy until a time budget's steps are known; a resumed run keeps its curves."""
        self._last_ui = 0.0
        self.clear(curves=not resumed)
        self._progress_bar.setRange(0, steps or 0)
        self._layer_scale = tuple(float(s) for s in layer.scale[-2:]) if layer is not None else (1.0, 1.0)

    def clear(self, curves: bool = True) -> None:
        """No bar, no held-out scores (and no curves)."""
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._val_label.info("")
        if curves:
            self._loss_plot.clear()
            self._psnr_plot.clear()

    def failed(self) -> None:
        """The run failed: the bar goes back to empty."""
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)

    def on_step(self, ev: StepUpdate, stopping: bool) -> bool:
        """Curves always; the bar and the status a few times a second. Returns whether the display was updated."""
        for name, value in ev.losses.items():
            self._loss_plot.add_point(name, ev.step, value, redraw=False, label=LOSS_NAMES.get(name, name))
        now = time.perf_counter()
        final = bool(ev.total) and ev.step >= ev.total
        if not final and now - self._last_ui < UI_INTERVAL:  # keep the GUI thread free: a few updates/s
            return False
        self._last_ui = now
        self._loss_plot.update()
        if self._progress_bar.maximum() != ev.total:
            self._progress_bar.setRange(0, ev.total)  # 0: busy (a time budget's warm-up: the steps are not known)
        self._progress_bar.setValue(ev.step)
        if not stopping:
            if ev.total:
                self._status.info(f"step {ev.step}/{ev.total} · {ev.it_per_s:.1f} steps/s · "
                                  f"{fmt_time(ev.eta)} left · {fmt_time(ev.elapsed)} so far")
            else:
                self._status.info(f"step {ev.step} · measuring the speed to fit the time budget · "
                                  f"{ev.it_per_s:.1f} steps/s · {fmt_time(ev.elapsed)} so far")
        return True

    def on_steps_known(self, steps: int | None) -> None:
        """A time budget fixed the steps: the bar counts them."""
        if steps:
            self._progress_bar.setRange(0, steps)

    def on_validation(self, ev: ValidationUpdate) -> None:
        """The held-out scores, the PSNR curve and the preview."""
        self._psnr_plot.add_point("model", ev.step, ev.psnr)
        self._psnr_plot.add_point("input", ev.step, ev.psnr_input)
        base = f" (input {ev.psnr_input:.2f} dB)" if ev.psnr_input is not None else ""
        against = {"noisy": " against the second noisy image", "estimated": " (estimated: no clean image)",
                   "blind-spot": " against noisy pixels it did not see"}.get(ev.target, "")
        ssim = f", SSIM {ev.ssim:.3f}" if math.isfinite(ev.ssim) else ""
        self._val_label.info(f"held-out part at step {ev.step}: PSNR {ev.psnr:.2f} dB{base}{against}{ssim}, "
                             f"uncertainty {ev.uncertainty:.4f}")
        self.show_preview(ev.preview)
        if ev.preview_uncertainty is not None:
            self.preview_uncertainty_layer(ev.preview_uncertainty)

    # ------------------------------------------------------------------ the preview layers
    def show_preview(self, preview: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Show input | output | target of the validation patch as one image layer."""
        chans = max(p.shape[0] for p in preview)
        panels = []
        for p in preview:
            p = np.repeat(p, 3, axis=0) if chans == 3 and p.shape[0] == 1 else p[:3] if chans >= 3 else p[:1]
            panels.append(np.moveaxis(p, 0, -1) if p.shape[0] == 3 else p[0])
        gap = np.ones((panels[0].shape[0], PREVIEW_GAP, *panels[0].shape[2:]), np.float32)
        self.preview_layer(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1).astype(np.float32))

    def preview_layer(self, img: np.ndarray) -> Any:
        """Put `img` into the preview layer (made, right of everything shown, if needed)."""
        from napari.layers import Image

        rgb = img.ndim == 3
        layers = self._viewer.layers
        if PREVIEW_NAME in layers and isinstance(layers[PREVIEW_NAME], Image) and layers[PREVIEW_NAME].rgb == rgb:
            layers[PREVIEW_NAME].data = img
            return layers[PREVIEW_NAME]
        if PREVIEW_NAME in layers:
            layers.remove(PREVIEW_NAME)
        translate, scale = (0.0, 0.0), self._layer_scale
        box = _world_box(layers)
        if box is not None:  # to the right of everything shown, so that it covers nothing, and large enough to read
            lo, hi = box
            translate = (float(lo[0]), float(hi[1] + 0.05 * (hi[1] - lo[1])))
            zoom = max(1.0, float(np.floor(PREVIEW_HEIGHT * (hi[0] - lo[0]) / (img.shape[0] * scale[0]))))
            scale = (scale[0] * zoom, scale[1] * zoom)  # whole pixels: crisp
        selected = list(layers.selection)
        layer = self._viewer.add_image(img, name=PREVIEW_NAME, rgb=rgb, contrast_limits=(0, 1),
                                       scale=scale, translate=translate,
                                       colormap="gray" if not rgb else None, metadata={HELPER: True})
        _keep_selection(layers, selected)  # a helper layer never becomes the selected (default) layer
        self._viewer.reset_view()  # the preview lies beside the images: show both
        return layer

    def preview_uncertainty_layer(self, spread: np.ndarray) -> Any:
        """Put the validation patch's uncertainty (h, w) over the preview's output panel (made if needed)."""
        from napari.layers import Image

        layers = self._viewer.layers
        if PREVIEW_NAME not in layers:
            return None
        preview = layers[PREVIEW_NAME]
        scale = tuple(float(s) for s in preview.scale[-2:])
        translate = (float(preview.translate[-2]),
                     float(preview.translate[-1]) + (spread.shape[1] + PREVIEW_GAP) * scale[1])
        high = float(np.percentile(spread, 99.5)) if spread.size else 0.0
        limits = (0.0, high if high > 0 else 1.0)
        name = PREVIEW_UNCERTAINTY_NAME
        if name in layers and isinstance(layers[name], Image) and layers[name].ndim == 2 and not layers[name].rgb:
            layer = layers[name]
            layer.data = spread
            if tuple(layer.translate) != translate or tuple(layer.scale) != scale:
                layer.scale, layer.translate = scale, translate
            layer.contrast_limits = limits
        else:
            if name in layers:
                layers.remove(name)
            selected = list(layers.selection)
            layer = self._viewer.add_image(spread, name=name, colormap="magma", blending="additive", opacity=0.6,
                                           contrast_limits=limits, scale=scale, translate=translate,
                                           visible=False,  # shown when asked: it would tint the output panel
                                           metadata={HELPER: True})
            _keep_selection(layers, selected)
        if layers.index(layer) < layers.index(preview):  # the preview was remade on top: stay over it
            layers.move(layers.index(layer), len(layers))
        return layer

    def remove_preview(self) -> None:
        """Take the preview layers out of the viewer."""
        for name in (PREVIEW_UNCERTAINTY_NAME, PREVIEW_NAME):
            if name in self._viewer.layers:
                self._viewer.layers.remove(name)

    def prepare_preview(self, colour: bool, size: int) -> None:
        """Make the preview layers before training starts (adding a layer is the slowest GUI step)."""
        if PREVIEW_NAME not in self._viewer.layers:
            shape = (size, 3 * size + 2 * PREVIEW_GAP) + ((3,) if colour else ())
            self.preview_layer(np.zeros(shape, np.float32))
        if PREVIEW_UNCERTAINTY_NAME not in self._viewer.layers:
            self.preview_uncertainty_layer(np.zeros((size, size), np.float32))


def _world_box(layers: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) corners (Y, X, world units) of the user's layers (the plugin's helper layers left out)."""
    boxes = [np.asarray(layer.extent.world)[:, -2:] for layer in layers
             if not (getattr(layer, "metadata", {}) or {}).get(HELPER) and layer.ndim >= 2]
    if not boxes:
        return None
    return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)


def _keep_selection(layers: Any, selected: list[Any]) -> None:
    """Select `selected` again (napari selects a layer it adds: a helper layer would become every default)."""
    if selected:
        layers.selection.active = selected[-1]
        layers.selection.update(selected)
    else:
        layers.selection.clear()
