"""The Train widget: pairs from layers or folders, a recipe, a warm start, a time budget; live curves and preview.

Built from three parts: :class:`~.train_data.TrainingData` (the task and the data),
:class:`~.train_settings.TrainingSettings` (recipe, start, duration, network, Advanced) and
:class:`~.train_progress.TrainingProgress` (bar, curves, preview). The widget checks what can
be checked at once (layers, shapes, folders, settings), collects a frozen :class:`TrainJob`
and runs :func:`..jobs.train_job` in a worker thread, which prepares the pairs and trains;
it listens to the engine's typed updates. What is left at "auto" is decided by the engine
once the data are known, and shown when the run starts. The saved model is added to the
remembered models, so it shows up in the restoration widgets at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ...engine import CHECKPOINT, CheckpointSaved, StatusUpdate, StepUpdate, TrainConfig, ValidationUpdate
from ...engine.core.device import resolve_device
from ...engine.formats.modelfile import ModelFileError
from ...engine.training.config import RESUMABLE, resume_config
from ...engine.training.data import patch_shape
from ...engine.training.setup import checkpoint_config
from .. import layers as lyr
from ..choices import RECENT, read_header, short_path
from ..jobs import train_job, warm_up_in_background
from .common import DockWidget, Outcome, StatusLabel, WorkerRunner, napari_progress
from .train_data import TrainingData
from .train_progress import PREVIEW_NAME, PREVIEW_UNCERTAINTY_NAME, TrainingProgress
from .train_settings import TrainingSettings, default_model_path

if TYPE_CHECKING:
    import napari

__all__ = ["PREVIEW_NAME", "PREVIEW_UNCERTAINTY_NAME", "TrainJob", "TrainWidget", "default_model_path",
           "unused_path"]


@dataclass(frozen=True)
class TrainJob:
    """A training run of the widget: settings and data keywords (the layer stays on the GUI thread)."""

    config: TrainConfig
    model_path: Path
    source: dict[str, Any]  # the engine's data keywords: layer data as they are, or folders (prepared in the worker)
    layer: Any  # the layer the data come from (for the preview's scale), or None
    resume: str | None  # checkpoint to continue from


def unused_path(path: Path) -> Path:
    """`path`, or ``<stem>-2``, ``-3``, ... if a file of that name exists (a new run never overwrites a model)."""
    if not path.exists():
        return path
    stem = path.name.removesuffix(".safetensors")
    base, _, n = stem.rpartition("-")
    start = int(n) + 1 if base and n.isdigit() else 2
    stem = base if base and n.isdigit() else stem
    for k in range(start, start + 10_000):
        candidate = path.with_name(f"{stem}-{k}.safetensors")
        if not candidate.exists():
            return candidate
    raise ValueError(f"could not find a free file name beside {path}")


class TrainWidget(DockWidget):
    """Train a Pix2Pix model from napari layers or folders.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari passes it in).
    """

    done = Signal(str)  # "finished", "stopped", "cancelled" or "failed"
    model_saved = Signal(str)  # path of the saved model file

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._stop = threading.Event()
        self._runner = WorkerRunner(self._on_event, self._on_finished, self._stop, on_warned=self._on_warned)
        self._notes: list[str] = []  # the run's warnings (noisy clean images, ...): said again when it ends
        self._pbar: Any = None
        self._job: TrainJob | None = None
        self._config_overrides: dict[str, Any] = {}  # extra options (tests, experts)
        self._last_pbar = 0.0
        self._stepped = False  # the run has taken a step (before it, a failure is a problem with the data)
        self._made_preview = False
        self._export_dialog: Any = None
        self._last_model: str | None = None  # the model file saved last
        self._data = TrainingData(viewer)
        self._settings = TrainingSettings()
        self._status = StatusLabel()
        self._progress = TrainingProgress(viewer, self._status)
        self._start_btn = QPushButton("Start")
        self._stop_btn = QPushButton("Stop")
        self._stop_btn.setEnabled(False)
        self._stop_btn.setToolTip("Stop after the current step; the model and a checkpoint are saved")
        self._resume_btn = QPushButton("Resume")
        self._resume_btn.setToolTip("Continue from the checkpoint (“Advanced”), with the data chosen above")
        self._export_btn = QPushButton("Export…")
        self._export_btn.setToolTip("Export a model (by default the one trained last) as a bioimage.io package, "
                                    "ONNX or TorchScript")
        buttons = QHBoxLayout()
        for b in (self._start_btn, self._stop_btn, self._resume_btn, self._export_btn):
            buttons.addWidget(b, 1 if b is self._start_btn else 0)
        layout = QVBoxLayout(self.body)
        for part in (self._data, self._settings):
            layout.addWidget(part)
        layout.addLayout(buttons)
        layout.addWidget(self._progress)
        layout.addStretch(1)
        self._data.task_changed.connect(self._settings.set_task)
        self._data.layer_changed.connect(self._check_dims)
        self._settings.dims_changed.connect(self._check_dims)
        for button, slot in {self._start_btn: self._start_clicked, self._stop_btn: self._request_stop,
                             self._resume_btn: self._resume_clicked, self._export_btn: self.open_export}.items():
            button.clicked.connect(slot)
        # closing napari deletes docked widgets without closeEvent: stop (and save) a running training then too
        self.destroyed.connect(lambda *_, stop=self._stop: stop.set())
        self._settings.set_task(self._data.task())
        self._data.preselect_target()
        self._check_dims()
        self._warm = warm_up_in_background()  # torch's first optimizer import, off the GUI thread

    # ------------------------------------------------------------------ choices
    def _check_dims(self, *_: Any) -> None:
        """2.5D and 3D train on stacks: a single-plane layer chosen with them is called out when chosen."""
        if self._runner.running:
            return
        dims, layer = self._settings.dims(), self._data.layer()
        problem = None
        if dims in ("2.5d", "3d") and layer is not None and not lyr.stack_shape(layer):
            what = "a 3D network learns from volumes (Z, Y, X)" if dims == "3d" else \
                "a 2.5D network sees each plane with its neighbours along Z"
            problem = (f"“{layer.name}” is a single plane, and {what}: choose a stack of planes, or Dimensions "
                       "2D.")
        self._status.choice_problem(problem)

    def set_steps(self, steps: int) -> None:
        """Train for `steps` steps (instead of a time budget)."""
        self._settings.set_duration(steps=steps)

    def set_minutes(self, minutes: float) -> None:
        """Train for `minutes` (the steps are derived from the measured speed)."""
        self._settings.set_duration(minutes=minutes)

    def set_start_from(self, ref: str | None) -> None:
        """Start from "scratch", "auto", a bundled model's name or a model file (added to the choices)."""
        self._settings.set_start_from(ref)

    def config(self) -> TrainConfig:
        """The settings as a :class:`TrainConfig` (raises ValueError with a message if invalid); None = auto."""
        options = {**self._settings.options(), **self._config_overrides}
        if options.get("generator") and options.get("start_from") is None:
            options["start_from"] = "scratch"  # an architecture given (tests, experts): a new network
        return TrainConfig(self._data.task(), **options)

    def _prepare(self, resume: str | None = None) -> TrainJob:
        """Check what can be checked at once and collect the job; raise ValueError with a message for the user."""
        config = self.config()
        resolve_device(config.device)
        if resume is not None:
            config = self._settings_from_checkpoint(resume, config)
        model_path = Path(self._settings.model_path(config.task)).expanduser()
        if model_path.is_dir():
            raise ValueError(f"{model_path} is a folder; choose a file name for the model (…/name.safetensors).")
        if model_path.suffix != ".safetensors":
            model_path = model_path.with_name(model_path.name + ".safetensors")
        if resume is None:
            model_path = unused_path(model_path)  # a new run never overwrites a saved model
        source, layer = self._data.source()
        return TrainJob(config, model_path, source, layer, resume)

    def _settings_from_checkpoint(self, path: str, config: TrainConfig) -> TrainConfig:
        """Show the checkpoint's settings in the widget; the run's settings by the engine's resume rule."""
        meta = read_header(path)
        if meta.get("kind") != "training-checkpoint":
            raise ValueError(f"{Path(path).name} is a model file, not a training checkpoint: resume from the "
                             f"{CHECKPOINT} in the run's .checkpoints folder.")
        saved = checkpoint_config(meta)
        self._data.set_task(saved.task)
        self._settings.show_checkpoint(saved)
        step = int(meta.get("step", 0))
        if config.steps is not None and config.steps <= step:
            raise ValueError(f"The checkpoint is at step {step}; set “Train for” above {step} steps (or a number "
                             "of minutes) to train further.")
        return resume_config(saved, {k: getattr(config, k) for k in RESUMABLE})

    # ------------------------------------------------------------------ running
    def _start_clicked(self) -> None:
        self._run(None)

    def _resume_clicked(self) -> None:
        edit = self._settings._resume_path
        if not edit.text():
            self._settings._browse_checkpoint(edit)
        if not edit.text():
            self._status.error("Choose a checkpoint to resume from (the run's .checkpoints/checkpoint.safetensors).")
            return
        self._run(edit.text())

    def _run(self, resume: str | None) -> None:
        if self._runner.running:
            return
        try:
            job = self._prepare(resume)
        except (ValueError, TypeError, OSError, ModelFileError) as e:
            self._progress.clear(curves=resume is None)  # no last run's bar and curves beside a new problem
            self._status.error(str(e))
            return
        self._start(job)

    def _start(self, job: TrainJob) -> None:
        cfg = job.config
        self._job = job
        self._last_pbar = 0.0
        self._stepped = False
        self._notes = []
        self._progress.start(cfg.steps, job.resume is not None, job.layer)
        self._settings._output.setText(str(job.model_path))
        self._made_preview = self._prepare_preview(None)  # adding layers is the slowest GUI step: before the run
        verb = "Resuming" if job.resume else "Training"
        length = f"{cfg.steps} steps" if cfg.steps else f"{cfg.minutes:g} min"
        self._status.info(f"{verb} a {cfg.task} model ({length}) → {short_path(job.model_path)}…")
        self._pbar = napari_progress(f"Train {cfg.task} model", total=cfg.steps or 0, on_cancel=self._request_stop)
        for b in (self._start_btn, self._resume_btn):
            b.setEnabled(False)
        self._stop_btn.setEnabled(True)
        self._runner.start(train_job, cfg, model_path=job.model_path, source=job.source, resume=job.resume,
                           stop=self._stop)

    def stop_job(self) -> None:
        """Stop the running training (it saves its model and checkpoint): Stop, closing the dock, quitting."""
        self._stop.set()

    def _request_stop(self) -> None:
        """Stop after the current step; the engine saves the model and a checkpoint."""
        self._ask_to_stop(self._runner, self._stop_btn, self._status, "Stopping after the current step; saving…")

    def _on_event(self, ev: Any) -> None:
        if isinstance(ev, StepUpdate):
            self._stepped = True
            if self._progress.on_step(ev, self._stop.is_set()) and ev.total:
                self._advance_pbar(self._pbar, ev.step, ev.total, ev.step >= ev.total, time.perf_counter())
        elif isinstance(ev, ValidationUpdate):
            self._progress.on_validation(ev)
        elif isinstance(ev, StatusUpdate):
            if ev.plan is not None:  # what "auto" and the recipe decided, and a time budget's steps
                self._settings.show_plan(ev.plan)
                self._progress.on_steps_known(ev.plan.steps)
                self._prepare_preview(ev.plan)
            if ev.message:
                self._status.info(ev.message[0].upper() + ev.message[1:] + "…")
        elif isinstance(ev, CheckpointSaved) and ev.kind == "checkpoint":
            self._settings._resume_path.setText(ev.path)

    def _on_warned(self, warning: Warning) -> None:
        """A warning of the run (napari also shows it as a notification): in the status now and when it ends."""
        text = str(warning)
        if text and text not in self._notes:
            self._notes.append(text)
            self._status.error(text[0].upper() + text[1:] + ".", notify=False)

    def _prepare_preview(self, plan: Any) -> bool:
        """Make the run's preview layers (before the worker starts; again at the plan, with its patch size).

        Returns whether there is a preview to make.
        """
        job = self._job
        if job is None or job.layer is None or job.config.val_fraction <= 0:
            return False
        cfg = job.config
        colour = bool(getattr(job.layer, "rgb", False)) or cfg.task == "colorize"
        patch = plan.patch_size if plan is not None else (cfg.patch_size or 64)
        self._progress.prepare_preview(colour, patch_shape(patch, plan.spatial_dims if plan else cfg.dims)[-1])
        return True

    def _on_finished(self, outcome: Outcome) -> None:
        job, self._job = self._job, None
        pbar, self._pbar = self._pbar, None
        model_path = job.model_path if job is not None else None
        if outcome.error is not None:
            state = "failed"
            self._progress.failed()
            hint = (" Out of memory: use a smaller batch or patch size (Advanced), or the CPU."
                    if getattr(outcome.error, "out_of_memory", False) else "")
            data = not self._stepped and isinstance(outcome.error, (ValueError, TypeError))  # a problem of the data
            what = "Cannot start training" if data else "Training failed"
            if data and self._made_preview:  # nothing ran: no empty preview left behind
                self._progress.remove_preview()
            self._status.error(f"{what}: {outcome.error}.{hint}", failure=True)
        else:
            model = outcome.result
            summary = model.training_summary if model is not None else {}
            status = summary.get("status") or "stopped"
            state = "finished" if status == "finished" else "stopped"
            if model_path is not None and model_path.is_file():
                self._saved(model_path, summary, status)
            else:
                self._status.info("Training stopped before a model was saved.")
        for b in (self._start_btn, self._resume_btn):
            b.setEnabled(True)
        self._stop_btn.setEnabled(False)
        if pbar is not None:
            pbar.close()
        self.done.emit(state)

    def _saved(self, model_path: Path, summary: dict[str, Any], status: str) -> None:
        """A model file was written: list it in the restoration widgets and say what it holds."""
        from ..choices import SESSION

        RECENT.add(model_path)  # the restoration widgets list it now
        SESSION.trained(model_path)
        steps = summary.get("steps_done")
        done = f" after {steps} steps" if steps is not None else ""
        best = summary.get("best_val_psnr")
        kept = (f" (the weights of step {summary['weights_of_step']}, best on the held-out part: {best:.2f} dB)"
                if isinstance(best, float) and best > -1e9 and summary.get("weights_of_step") not in (None, steps)
                else "")
        text = (f"Model saved{done} ({status}){kept}: {model_path}. It is now listed in the "
                "Denoise/Inpaint/Colorize/Translate widgets.")
        if self._notes:  # what the run warned about stays in view
            self._status.error(text + " Note: " + " ".join(n[0].upper() + n[1:] + "." for n in self._notes),
                               notify=False)
        else:
            self._status.info(text)
        self._last_model = str(model_path.resolve())
        self.model_saved.emit(str(model_path))

    def open_export(self) -> Any:
        """Open the Export dialog, with the model saved last (if any) chosen; return it."""
        from .export import ExportDialog

        if self._export_dialog is None:
            self._export_dialog = ExportDialog(None, parent=self)
        if self._last_model is not None and Path(self._last_model).exists():
            self._export_dialog.set_model(self._last_model)
        self._export_dialog.show()
        self._export_dialog.raise_()
        return self._export_dialog
