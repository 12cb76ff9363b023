"""Restoration widgets: Denoise, Inpaint, Colorize and Translate.

Each widget reads its choices, checks them (every problem is reported in the widget before
any work starts), hands plain arrays and settings to :func:`..jobs.predict_job` in a worker
thread, and shows the result as ``"<input> <suffix>"`` with the input's spatial metadata.
With "Show uncertainty" the same worker (:func:`..jobs.trust_job`) also computes the
uncertainty map, shown as ``"<input> uncertainty"`` over the result, and, for denoising,
the residual ``"<input> residual"`` (input − output) with its structure score and the
regions it flags (``"<input> flagged"``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...engine.images.zarrstore import partial_path
from .. import layers as lyr
from ..choices import RECENT, ModelInfo, model_choices
from ..jobs import PredictSettings, TrustResult, predict_job, trust_job
from . import common
from .common import DockWidget, LayerCombo, Outcome, PathEdit, Section, StatusLabel, WorkerRunner, device_combo
from .compute import ComputeOn
from .model_chooser import ModelChooser

if TYPE_CHECKING:
    import napari

UI_INTERVAL = 0.2  # seconds between updates of the widget's progress display (repaints cost GUI time)
LARGE_RESULT = 2 * 2**30  # bytes: larger results (and those of multiscale layers) go to a zarr store, shown lazily
RESULTS_DIR = Path.home() / "napari-pix2pix-results"  # where such stores go unless beside a zarr input
FLAG_NOTICE = 0.05  # share of flagged pixels from which the flags are drawn and a notification is shown


@dataclass(frozen=True)
class RestoreJob:
    """A run of a restoration widget: what to process and how (the layer stays on the GUI thread)."""

    layer: Any  # the input layer: read here, never handed to the worker
    info: ModelInfo
    image: Any  # the layer's data (or one plane of it)
    mask: Any  # inpainting mask, or None
    plane: tuple[int, ...] | None  # index of the plane processed ("current plane only"), or None
    samples: int  # uncertainty samples (0: none)
    settings: PredictSettings


class RestoreWidget(DockWidget):
    """Apply a Pix2Pix model to an image layer; subclasses set the task.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari passes it in).
    """

    TASK: ClassVar[str] = "denoise"
    SUFFIX: ClassVar[str] = "denoised"
    TITLE: ClassVar[str] = "Denoise"
    HELP: ClassVar[str] = ""
    KEEP_CONTRAST: ClassVar[bool] = True  # results on the input's intensity scale
    RESIDUAL: ClassVar[bool] = False  # with the uncertainty, also analyse input − output (denoising)

    done = Signal(str)  # "finished", "cancelled" or "failed", when a run ends

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._cancel = threading.Event()
        self._runner = WorkerRunner(self._on_progress, self._on_finished, self._cancel)
        self._pbar: Any = None
        self._started = 0.0
        self._last_ui = self._last_pbar = 0.0
        self._job: RestoreJob | None = None
        self._export_dialog: Any = None
        self._sample_layer: str | None = None  # the sample layer whose model was chosen (then the user's choice)
        self._make_widgets(viewer)
        self._lay_out()
        self._connect()
        self._update_scope()

    def _make_widgets(self, viewer: napari.viewer.Viewer) -> None:
        from napari.layers import Image, Labels, Shapes

        self._help = QLabel(self.HELP)
        self._help.setWordWrap(True)
        self._image_combo = LayerCombo(viewer, (Image,), placeholder="(no image layer)")
        self._image_combo.setToolTip("The image to process; it is never modified")
        self._mask_combo: LayerCombo | None = None
        if self.TASK == "inpaint":
            self._mask_combo = LayerCombo(viewer, (Labels, Shapes), placeholder="(no Labels or Shapes layer)")
            self._mask_combo.setToolTip("Pixels to fill: non-zero labels, or the inside of the shapes")
        self._models = self._model_chooser()
        self._device_combo = device_combo()
        self._tile_spin = QSpinBox()
        self._tile_spin.setRange(0, 8192)
        self._tile_spin.setSingleStep(64)
        self._tile_spin.setSpecialValueText("auto")  # shown for 0: the largest tile within ~512 MB
        self._tile_spin.setValue(0)
        self._tile_spin.setSuffix(" px")
        self._tile_spin.setToolTip("Largest tile processed at once: smaller tiles use less memory; 'auto' picks "
                                   "the largest whose activations fit in about 512 MB")
        self._scope_combo = QComboBox()
        self._scope_combo.addItem("Whole stack", "stack")
        self._scope_combo.addItem("Current plane only", "plane")
        self._scope_combo.setToolTip("For stacks: every plane, or only the plane on screen")
        self._big_dir = PathEdit(self._browse_big_dir, "beside a .zarr input, else ~/napari-pix2pix-results")
        self._big_dir.setToolTip("Results of multiscale layers and results larger than 2 GB are written to a zarr "
                                 "store (beside the input's store, or in this folder) and shown as a lazy, multiscale "
                                 "layer: nothing that large is held in memory")
        self._compute = ComputeOn()
        self._make_trust_widgets()
        self._run_btn = QPushButton(f"Run {self.TITLE.lower()}")
        self._cancel_btn = QPushButton("Cancel")
        self._cancel_btn.setEnabled(False)
        self._progress_bar = QProgressBar()
        self._progress_bar.setRange(0, 1)
        self._progress_bar.setValue(0)
        self._status = StatusLabel()

    def _make_trust_widgets(self) -> None:
        self._tta_check = QCheckBox("Average over flips and rotations")  # test-time augmentation
        self._tta_check.setToolTip("Predict the image's 8 flips/rotations (16 for a 3D model) and average them: a "
                                   "little more accurate (denoising: +0.2 dB on average, benchmarks/results/tta.log), "
                                   "8 (16) times slower")
        self._uncertainty_check = QCheckBox("Show uncertainty")
        self._samples_spin = QSpinBox()
        self._samples_spin.setRange(2, 32)
        self._samples_spin.setValue(8)
        self._samples_spin.setSuffix(" samples")
        self._samples_spin.setEnabled(False)
        tip = ("Also compute where the result is unsure: the per-pixel spread of predictions over flips/"
               "rotations (and dropout samples), shown as “<image> uncertainty” over the result. "
               "It multiplies the prediction time by the number of samples.")
        if self.RESIDUAL:
            tip += (" Also shows the residual “<image> residual” (input − output) and its structure score: "
                    "≈0 when only noise was removed; regions where it looks like image structure are "
                    "outlined in “<image> flagged”.")
        self._uncertainty_check.setToolTip(tip)
        self._samples_spin.setToolTip(tip)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        form.addRow("Image", self._image_combo)
        if self._mask_combo is not None:
            form.addRow("Mask", self._mask_combo)
        form.addRow("Model", self._models)
        form.addRow("Device", self._device_combo)
        form.addRow("Planes", self._scope_combo)
        form.addRow(self._tta_check)  # the whole row: a long label
        trust_row = QHBoxLayout()
        trust_row.addWidget(self._uncertainty_check, 1)
        trust_row.addWidget(self._samples_spin)
        form.addRow("", trust_row)
        advanced = QWidget()
        more = QFormLayout(advanced)
        more.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        more.setContentsMargins(0, 0, 0, 0)
        more.addRow("Tile size", self._tile_spin)
        more.addRow("Large results", self._big_dir)
        more.addRow("Compute on", self._compute)
        self._advanced = Section("Advanced", advanced)
        buttons = QHBoxLayout()
        buttons.addWidget(self._run_btn, 1)
        buttons.addWidget(self._cancel_btn)
        layout = QVBoxLayout(self.body)
        layout.addWidget(self._help)
        layout.addLayout(form)
        layout.addWidget(self._advanced)
        layout.addLayout(buttons)
        layout.addWidget(self._progress_bar)
        layout.addWidget(self._status)
        layout.addStretch(1)

    def _connect(self) -> None:
        self._run_btn.clicked.connect(self._run)
        self._cancel_btn.clicked.connect(self._request_cancel)
        self._models.message.connect(self._model_message)
        self._image_combo.currentIndexChanged.connect(self._update_scope)
        self._uncertainty_check.toggled.connect(self._samples_spin.setEnabled)
        self._models.changed.connect(self._update_scope)
        self._viewer.dims.events.ndisplay.connect(self._update_scope)
        # closing napari deletes docked widgets without closeEvent: stop a running job then too
        self.destroyed.connect(lambda *_, cancel=self._cancel: cancel.set())

    # ------------------------------------------------------------------ the model
    def _model_message(self, text: str, error: bool) -> None:
        if error:
            self._status.error(text)
        else:  # "Model: ..." unless the choice has a problem (a 3D model and a single plane): that stays in view
            self._status.info(text)
            self._update_scope()

    def _model_chooser(self) -> ModelChooser:
        """The model list of this widget (subclasses choose what it lists and accepts)."""
        return ModelChooser(self.TASK, self.TITLE)

    def use_model_file(self, path: str | Path) -> bool:
        """Check a model file, remember it and choose it; report problems in the widget."""
        return self._models.use_file(path)

    def open_export(self) -> Any:
        """Open the Export dialog with the chosen model; return it."""
        return self._models.open_export()

    # ------------------------------------------------------------------ choices
    def _update_scope(self, *_: Any) -> None:
        try:
            layer = self._image_combo.layer()
        except RuntimeError:  # widget closed: stop listening
            self._viewer.dims.events.ndisplay.disconnect(self._update_scope)
            return
        model = _sample_model(layer)
        if model and layer.name != self._sample_layer:  # a sample's layer, once: the bundled model it is for
            self._sample_layer = layer.name
            self._models.choose_bundled(model)
        has_stack = layer is not None and bool(lyr.stack_shape(layer))
        in_3d = self._viewer.dims.ndisplay == 3  # no single plane is on screen
        info = self._models.current()
        whole = info is not None and info.whole_stack
        self._scope_combo.setEnabled(has_stack and not in_3d and not whole)
        self._scope_combo.setToolTip(
            "A 3D model restores the whole volume at once" if whole and info is not None and info.spatial_dims == 3
            else
            "A 2.5D model reads each plane's neighbours: the whole stack is processed" if whole else
            "In the 3D view every plane is shown: the whole stack is processed" if in_3d else
            "For stacks: every plane, or only the plane on screen")
        if not has_stack or in_3d or whole:
            self._scope_combo.setCurrentIndex(0)
        if not self._runner.running:  # a 3D/2.5D model and a single plane: said when chosen, not only at Run
            self._status.choice_problem(_dims_problem(info, layer) if info is not None and layer is not None
                                        else None)

    def _prepare(self) -> RestoreJob:
        """Collect and check the choices; raise ValueError with a message for the user."""
        layer = self._image_combo.layer()
        if layer is None:
            raise ValueError("Choose an image layer (File › Open Sample › Pix2Pix has examples).")
        info = self._models.current()
        if info is None:
            raise ValueError(
                f"Choose a model: no {self.TASK} model is bundled with this version. Click “File…” "
                "to pick a .safetensors model file, or train one with Plugins › Pix2Pix › Train."
            )
        if not info.bundled and not Path(info.ref).exists():
            RECENT.remove(info.ref)
            raise ValueError(f"The model file {info.ref} no longer exists; choose another one.")
        why = self._models.why_not(info) or _dims_problem(info, layer)
        if why:
            raise ValueError(why)
        tile: int | str = self._tile_spin.value() or "auto"
        if isinstance(tile, int) and tile < info.multiple:
            raise ValueError(f"Tile size {tile} px is smaller than this model's size multiple {info.multiple}; "
                             f"use at least {info.multiple}.")
        device = self._device_combo.currentData()
        from ...engine.core.device import resolve_device

        resolve_device(device)  # raises ValueError naming the problem

        image, channel_axis = lyr.image_array(layer)
        plane: tuple[int, ...] | None = None
        if self._scope_combo.currentData() == "plane" and lyr.stack_shape(layer) and not info.whole_stack:
            plane = lyr.current_plane(self._viewer, layer)
            image = image[plane]
        mask = self._mask(layer, image, channel_axis, plane)
        samples = self._samples_spin.value() if self._uncertainty_check.isChecked() else 0
        out = None
        big = layer.multiscale or _result_bytes(image, info.task) > LARGE_RESULT
        if big and plane is None:  # the whole stack to a zarr store, shown lazily (one plane fits in memory)
            if samples:
                raise ValueError("This result is written to a zarr store (a multiscale layer, or more than 2 GB): "
                                 "untick “Show uncertainty”, or restore one plane at a time.")
            out = str(_store_path(layer, self.SUFFIX, self._big_dir.text()))
        compute: dict[str, Any] = {}
        if out is not None:  # a store: computed block by block, here or on a cluster; an interrupted one continues
            where = self._compute.setting()
            why = where.problem()
            if why:
                raise ValueError(why)
            compute = {**where.predict_kwargs(), "resume": partial_path(Path(out)).exists()}
        return RestoreJob(layer, info, image, mask, plane, samples,
                          PredictSettings(tile_size=tile, device=device, channel_axis=channel_axis, out=out,
                                          tta=self._tta_check.isChecked(), **compute))

    def _browse_big_dir(self, target: PathEdit) -> None:
        path = common.open_folder(self, "Write large results (zarr stores) into", target.text() or str(RESULTS_DIR))
        if path:
            target.setText(path)

    def _mask(self, layer: Any, image: Any, channel_axis: int | None, plane: tuple[int, ...] | None) -> Any:
        return None

    # ------------------------------------------------------------------ running
    def _run(self) -> None:
        if self._runner.running:
            return
        try:
            job = self._prepare()
        except (ValueError, TypeError, OSError) as e:
            self._status.error(str(e))
            return
        self._start(job)

    def _start(self, job: RestoreJob) -> None:
        self._job = job
        self._started = time.perf_counter()
        self._last_ui = self._last_pbar = 0.0
        self._status.info(f"{self.TITLE}: {job.layer.name} with {job.info.name}…")
        self._progress_bar.setRange(0, 0)  # busy until the first progress report
        self._pbar = common.napari_progress(f"{self.TITLE} {job.layer.name}", on_cancel=self._request_cancel)
        self._run_btn.setEnabled(False)
        self._cancel_btn.setEnabled(True)
        if job.samples:  # the same worker also computes the uncertainty (and the residual)
            self._runner.start(trust_job, job.info.ref, job.image, job.mask, settings=job.settings,
                               cancel=self._cancel, samples=job.samples, residual=self.RESIDUAL)
        else:
            self._runner.start(predict_job, job.info.ref, job.image, job.mask, settings=job.settings,
                               cancel=self._cancel)

    def _request_cancel(self) -> None:
        """Stop after the current batch of tiles."""
        self._ask_to_stop(self._runner, self._cancel_btn, self._status, "Cancelling after the current batch…")

    def _on_progress(self, p: Any) -> None:
        now = time.perf_counter()
        final = bool(p.total) and p.done >= p.total
        first = bool(p.total) and self._progress_bar.maximum() == 0  # the count is known: always shown at once
        if not (final or first) and now - self._last_ui < UI_INTERVAL:  # keep the GUI thread free: a few updates/s
            return
        self._last_ui = now
        if p.total:
            self._progress_bar.setRange(0, p.total)
            self._progress_bar.setValue(p.done)
            what = f" ({p.message})" if p.message else ""
            self._status.info(f"{self.TITLE}: {p.done}/{p.total} {getattr(p, 'unit', 'tiles')}{what}")
            self._advance_pbar(self._pbar, p.done, p.total, final, now)
        elif p.message:
            self._status.info(f"{self.TITLE}: {p.message}…")

    def _on_finished(self, outcome: Outcome) -> None:
        job, self._job = self._job, None
        pbar, self._pbar = self._pbar, None
        self._progress_bar.setRange(0, 1)
        if outcome.error is not None:
            state = "failed"
            hint = (" Out of memory: use a smaller tile size, or the CPU (Device)."
                    if getattr(outcome.error, "out_of_memory", False) else "")
            self._status.error(f"{self.TITLE} failed: {outcome.error}.{hint}", failure=True)
        elif outcome.result is None or job is None:
            state = "cancelled"
            store = job.settings.out if job is not None else None
            kept = partial_path(Path(store)) if store else None
            self._status.info(f"Cancelled: nothing was changed; the finished blocks are kept in {kept.name}: Run "
                              "again with the same settings to continue." if kept is not None and kept.exists()
                              else "Cancelled: nothing was changed.")
        else:
            state = self._show_result(job, outcome.result)
        self._progress_bar.setValue(1 if state == "finished" else 0)
        self._run_btn.setEnabled(True)
        self._cancel_btn.setEnabled(False)
        if pbar is not None:
            pbar.close()
        self.done.emit(state)

    def _show_result(self, job: RestoreJob, result: Any) -> str:
        trust = result if isinstance(result, TrustResult) else None
        info = {"task": job.info.task, "model": job.info.ref, "plane": job.plane, "tta": job.settings.tta}
        try:
            out = lyr.add_result(
                self._viewer, job.layer, trust.output if trust else result, self.SUFFIX, plane=job.plane,
                keep_contrast=self.KEEP_CONTRAST, info=info,
            )
            note = self._show_trust(job, trust, {**info, "samples": job.samples}) if trust else ""
        except Exception as e:  # shown in the widget, not lost in the event loop
            self._status.error(f"Could not show the result: {e}")
            return "failed"
        where = f" (plane {lyr.plane_label(job.plane, lyr.stack_shape(job.layer))})" if job.plane else ""
        self._status.info(f"Done in {time.perf_counter() - self._started:.1f} s with {job.info.name} → layer "
                          f"“{out.name}”{where}{note}")
        return "finished"

    def _show_trust(self, job: RestoreJob, trust: TrustResult, info: dict[str, Any]) -> str:
        """Add the uncertainty (and residual) layers over the result; return a note for the status line."""
        from napari.layers import Labels

        layer, plane = job.layer, job.plane
        note = ""
        if trust.residual is not None:
            report = trust.residual
            lyr.add_overlay(self._viewer, layer, report.residual, "residual", colormap="PiYG", blending="translucent",
                            opacity=1.0, centered=True, visible=False, plane=plane, info=info)
            share = float(np.mean(report.flagged)) if report.flagged.size else 0.0
            note = (f". Residual structure score {report.score:.2f} (0: only noise was removed; a 2-px blur of "
                    f"a noisy image scores about 0.2-0.3); {100 * share:.0f}% of the image flagged")
            removed, left = report.removed_signal, report.remaining_noise
            if report.noise_ratio is not None and removed is not None and left is not None:
                note += (f"; residual/noise {report.noise_ratio:.2f} (≈1: the noise and no more was removed; "
                         f"signal removed in {100 * float(np.mean(removed)):.0f}%, noise left in "
                         f"{100 * float(np.mean(left)):.0f}%)")
            if share > 0 or lyr.find_result(self._viewer, layer, "flagged", Labels) is not None:
                flagged = lyr.add_labels_result(self._viewer, layer, report.flagged, "flagged", plane=plane, info=info)
                flagged.visible = share >= FLAG_NOTICE  # a few small flags: listed, not drawn over the result
            if share >= FLAG_NOTICE:
                from napari.utils.notifications import show_info

                show_info(f"{layer.name}: residual structure score {report.score:.2f} (≈0 = noise only); "
                          f"{100 * share:.0f}% of the image flagged: check the regions outlined in "
                          f"“{layer.name} flagged” (the residual is in “{layer.name} residual”).")
        spread = lyr.add_overlay(self._viewer, layer, trust.uncertainty, "uncertainty", colormap="magma",
                                 blending="additive", opacity=0.5, visible=False, plane=plane, info=info)
        return f"{note}; uncertainty in “{spread.name}” (hidden: show it with its eye in the layer list)"

    def stop_job(self) -> None:
        """Cancel the running job (Cancel, closing the dock, quitting napari)."""
        self._cancel.set()


class DenoiseWidget(RestoreWidget):
    """Denoise an image layer (2D, stack or RGB) with a Pix2Pix denoising model."""

    TASK = "denoise"
    SUFFIX = "denoised"
    TITLE = "Denoise"
    HELP = "Remove noise from an image layer. The result is a new layer “<image> denoised”."
    RESIDUAL = True


class InpaintWidget(RestoreWidget):
    """Fill the pixels of a mask (Labels: non-zero; Shapes: inside) with a Pix2Pix inpainting model."""

    TASK = "inpaint"
    SUFFIX = "inpainted"
    TITLE = "Inpaint"
    HELP = ("Fill masked pixels (a Labels layer: non-zero, or a Shapes layer: inside the shapes). "
            "Every other pixel is kept exactly.")

    def _mask(self, layer: Any, image: Any, channel_axis: int | None, plane: tuple[int, ...] | None) -> Any:
        assert self._mask_combo is not None
        mlayer = self._mask_combo.layer()
        if mlayer is None:
            raise ValueError("Choose the mask: a Labels layer (non-zero = fill) or a Shapes layer around the "
                             "regions to fill (Layers › New Labels / Shapes layer, then paint or draw).")
        mask = lyr.mask_array(mlayer, layer)
        full, _ = lyr.image_array(layer)
        full_nochan = tuple(s for a, s in enumerate(full.shape) if channel_axis is None or a != full.ndim - 1)
        if plane is not None and mask.shape == full_nochan and mask.ndim > 2:
            mask = mask[plane]
        nochan = tuple(s for a, s in enumerate(image.shape) if channel_axis is None or a != image.ndim - 1)
        if mask.shape not in (nochan, nochan[-2:]):
            raise ValueError(
                f"The mask “{mlayer.name}” has shape {mask.shape} but the image “{layer.name}” has shape "
                f"{full_nochan}: the mask needs the image's shape (or its Y, X size). Create it with the image "
                "selected (Layers › New Labels layer)."
            )
        if not mask.any():
            raise ValueError(f"The mask “{mlayer.name}” is empty: paint (or draw) the pixels to fill first.")
        return mask


class ColorizeWidget(RestoreWidget):
    """Colorize a grayscale image layer (2D or stack); the result is an RGB layer."""

    TASK = "colorize"
    SUFFIX = "colorized"
    TITLE = "Colorize"
    HELP = ("Predict colour for a grayscale image. The result is an RGB layer “<image> colorized”. Bundled: "
            "colorize-he for H&E sections; colorize, a general one (H&E, landscapes). Other stains (IHC/DAB, "
            "PAS, trichrome) need a model of their own: Train › Colorize on a few RGB images of that stain.")
    KEEP_CONTRAST = False


class TranslateWidget(RestoreWidget):
    """Apply any trained Pix2Pix model (e.g. widefield → sharp, label-free → stained)."""

    TASK = "translate"
    SUFFIX = "translated"
    TITLE = "Translate"
    HELP = ("Apply any trained image-to-image model (e.g. low → high SNR, widefield → confocal, "
            "label-free → stained).")
    KEEP_CONTRAST = False

    def _model_chooser(self) -> ModelChooser:
        def accepts(info: ModelInfo) -> str | None:
            if info.task == "inpaint":
                return f"{info.name} is an inpainting model: it needs a mask, use the Inpaint widget"
            return None

        # the user's models (bundled ones have their own widgets; inpainting needs a mask)
        return ModelChooser(self.TASK, self.TITLE, accepts=accepts,
                            choices=lambda: [i for i in model_choices(None) if not i.bundled and i.task != "inpaint"],
                            empty_note="No model yet. Click “File…” to use a .safetensors model file, or train one "
                                       "with Plugins › Pix2Pix › Train (e.g. on the Translate sample).")


def _sample_model(layer: Any) -> str | None:
    """The bundled model a layer of the plugin's samples is for (the H&E sample: colorize-he), or None."""
    meta = (getattr(layer, "metadata", None) or {}).get("napari_pix2pix_sample") if layer is not None else None
    model = meta.get("model") if isinstance(meta, dict) else None
    return str(model) if model else None


def _dims_problem(info: ModelInfo, layer: Any) -> str | None:
    """Why a layer cannot be restored with a 3D (or 2.5D) model: it is a single plane; None if it can."""
    if not info.whole_stack or lyr.stack_shape(layer):
        return None
    if info.spatial_dims == 3:
        return (f"“{info.name}” is a 3D model: it restores volumes (Z, Y, X), and “{layer.name}” is a single "
                "plane. Choose a 3D layer (a stack of planes) or a 2D model.")
    return (f"“{info.name}” is a 2.5D model: it reads each plane with its neighbours along Z, and "
            f"“{layer.name}” is a single plane. Choose a stack, or a 2D model.")


def _result_bytes(image: Any, task: str) -> int:
    """About how large the result of `image` is (colorize adds three colours)."""
    n = int(np.prod(getattr(image, "shape", ()) or (0,), dtype=np.int64))
    itemsize = max(np.dtype(getattr(image, "dtype", np.float32)).itemsize, 4 if task == "translate" else 1)
    return n * itemsize * (3 if task == "colorize" else 1)


def _store_path(layer: Any, suffix: str, folder: str) -> Path:
    """A new zarr store for the result of `layer`: in `folder`, else beside the layer's own zarr store."""
    source = getattr(getattr(layer, "source", None), "path", None)
    if folder:
        where = Path(folder).expanduser()
    elif source and Path(str(source)).suffix.lower() == ".zarr":
        where = Path(str(source)).parent
    else:
        where = RESULTS_DIR
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{layer.name} {suffix}").strip("-")
    path = where / f"{stem}.zarr"
    k = 2
    while path.exists():  # (an interrupted store's partial folder is continued, not skipped)
        path = where / f"{stem}-{k}.zarr"
        k += 1
    return path

