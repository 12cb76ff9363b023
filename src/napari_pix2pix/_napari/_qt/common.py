"""Small Qt pieces shared by the widgets: the worker runner, layer pickers, status line, dialogs, device list."""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari
    import napari.layers

from ...engine.core.device import DEVICES

_OPENED = itertools.count()
HELPER = "napari_pix2pix_helper"  # layer metadata of the plugin's own helper layers (previews): never an input
NO_LAYER = "\x00none"  # the data of a LayerCombo's choice that is no layer


class LayerCombo(QComboBox):
    """The viewer's layers of some types, kept in sync with the layer list.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layers are listed.
    types : sequence of layer classes
        Layer types to list (e.g. ``(napari.layers.Image,)``).
    placeholder : str
        Shown when no layer of these types exists.
    accept : callable, optional
        Extra filter on layers (e.g. only RGB images).
    none : str, optional
        A first choice that is no layer (its data :data:`NO_LAYER`), e.g. "none — learn from the noisy images".
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        types: Sequence[type],
        *,
        placeholder: str = "(no layer)",
        accept: Callable[[Any], bool] | None = None,
        none: str | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._types = tuple(types)
        self._placeholder = placeholder
        self._accept = accept
        self._none = none
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        ev = viewer.layers.events
        for emitter in (ev.inserted, ev.removed, ev.reordered, ev.renamed):
            emitter.connect(self.refresh)
        self.refresh()

    def _matching(self) -> list[Any]:
        return [
            lyr for lyr in self._viewer.layers
            if isinstance(lyr, self._types) and (self._accept is None or self._accept(lyr))
            and not (getattr(lyr, "metadata", None) or {}).get(HELPER)  # the plugin's previews are no inputs
        ]

    def refresh(self, event: Any = None) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        try:
            current = self.currentData()
            names = [lyr.name for lyr in self._matching()]
            self.blockSignals(True)
            self.clear()
            first = 0
            if self._none is not None:  # a choice that is no layer, first
                self.addItem(self._none, NO_LAYER)
                first = 1
            if not names and self._none is None:
                self.addItem(self._placeholder, None)
            for name in names:
                self.addItem(name, name)
            if current == NO_LAYER and self._none is not None:
                self.setCurrentIndex(0)
            elif current in names:
                self.setCurrentIndex(first + names.index(current))
            elif names:  # a new choice: the selected layer if it fits, else the top one
                active = self._viewer.layers.selection.active
                self.setCurrentIndex(first + (names.index(active.name) if active is not None and active.name in names
                                              else len(names) - 1))
            self.blockSignals(False)
            self.currentIndexChanged.emit(self.currentIndex())
        except RuntimeError:  # the Qt object is gone (widget closed): stop listening
            ev = self._viewer.layers.events
            for emitter in (ev.inserted, ev.removed, ev.reordered, ev.renamed):
                with contextlib.suppress(Exception):
                    emitter.disconnect(self.refresh)

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentData()
        if name is None or name not in self._viewer.layers:
            return None
        layer = self._viewer.layers[name]
        return layer if isinstance(layer, self._types) else None

    def set_layer(self, layer: Any) -> None:
        """Choose a layer (or a layer name)."""
        name = layer if isinstance(layer, str) else layer.name
        i = self.findData(name)
        if i < 0:
            raise ValueError(f"no layer {name!r} of type {[t.__name__ for t in self._types]} in the viewer")
        self.setCurrentIndex(i)


class StatusLabel(QLabel):
    """A word-wrapped status line: plain for progress, red for problems (kept for tests in `text()`)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # its text changes ~10 times a second: never let it resize the dock (and the canvas with it)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumHeight(2 * self.fontMetrics().lineSpacing() + 4)
        self.is_error = False
        self._choice_problem: str | None = None

    def info(self, text: str) -> None:
        """Show a normal message."""
        self.is_error = False
        self.setStyleSheet("")
        self.setText(text)

    def choice_problem(self, text: str | None) -> None:
        """Say at once what is wrong with the current choices (in red, no notification); None: it was resolved.

        A resolved problem's text is cleared only if it is still shown (not a later message).
        """
        if text:
            if text != self.text():
                self.error(text, notify=False)
        elif self._choice_problem is not None and self.text() == self._choice_problem:
            self.info("")
        self._choice_problem = text or None

    def error(self, text: str, *, notify: bool = True, failure: bool = False) -> None:
        """Show a problem in red (and as a napari notification: a warning, or an error for a failed run)."""
        self.is_error = True
        self.setStyleSheet("color: #ff6b6b;")
        self.setText(text)
        if notify:
            from napari.utils.notifications import show_error, show_warning

            (show_error if failure else show_warning)(text)


def device_combo(parent: QWidget | None = None) -> QComboBox:
    """A device choice (auto, cpu, cuda, mps) with the devices this machine lacks disabled."""
    import torch

    combo = QComboBox(parent)
    available = {"auto": True, "cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    for name in DEVICES:
        combo.addItem(name if available[name] else f"{name} (not available)", name)
        if not available[name]:
            item = combo.model().item(combo.count() - 1)  # type: ignore[union-attr]
            item.setEnabled(False)
    combo.setToolTip("auto: CUDA GPU, then Apple MPS, then the CPU")
    return combo


def open_file(parent: QWidget, title: str, start: str = "", filters: str = "All files (*)") -> str:
    """A file-open dialog; the empty string if cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, start, filters)
    return str(path or "")


def save_file(parent: QWidget, title: str, start: str = "", filters: str = "All files (*)") -> str:
    """A file-save dialog; the empty string if cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, start, filters)
    return str(path or "")


def open_folder(parent: QWidget, title: str, start: str = "") -> str:
    """A folder dialog; the empty string if cancelled."""
    return str(QFileDialog.getExistingDirectory(parent, title, start) or "")


def napari_progress(desc: str, total: int = 0, on_cancel: Callable[[], Any] | None = None) -> Any:
    """A progress bar in napari's activity dock; its Cancel button calls `on_cancel`."""
    from napari.utils import cancelable_progress

    class _Progress(cancelable_progress):  # napari only calls cancel_callback while iterating
        def cancel(self) -> None:
            super().cancel()
            if self.cancel_callback is not None:
                self.cancel_callback()

    return _Progress(total=total, desc=desc, cancel_callback=on_cancel)


# ---------------------------------------------------------------------- running jobs in a worker thread
class JobFailed(Exception):
    """A job's error, re-raised as a plain Exception, with the original's message (and as ``__cause__``).

    superqt treats a RuntimeError (every torch error, out-of-memory included) as a deleted
    worker and reports neither ``errored`` nor ``finished``.
    """

    @property
    def out_of_memory(self) -> bool:
        """Whether the job ran out of (GPU or CPU) memory."""
        import torch

        kinds = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))
        return isinstance(self.__cause__, kinds) or "out of memory" in str(self).lower()


def _reraising(fn: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Generator[Any, Any, Any]]:
    """`fn`, with RuntimeErrors (and MemoryErrors) re-raised as :class:`JobFailed` (see there)."""

    @functools.wraps(fn)
    def job(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        try:
            return (yield from fn(*args, **kwargs))
        except (RuntimeError, MemoryError) as e:
            raise JobFailed(str(e) or type(e).__name__) from e

    return job


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its result, its error, or aborted (napari quit before it returned)."""

    result: Any = None
    error: BaseException | None = None
    aborted: bool = False


def _worker_class() -> type:
    from superqt.utils import GeneratorWorker  # napari's adds its own error notification: the widgets notify

    class StoppableWorker(GeneratorWorker):  # type: ignore[misc, valid-type]
        """A worker whose quit() (napari quitting) sets the job's stop event.

        The job then ends at its next check and saves what a stopped job saves, instead of
        being abandoned mid-run.
        """

        stop_event: threading.Event | None = None

        def quit(self) -> None:
            if self.stop_event is not None:
                self.stop_event.set()
            else:
                super().quit()

    return StoppableWorker


class WorkerRunner:
    """Runs one job (a generator function) at a time in a napari worker thread.

    `on_yielded` gets each update while the job runs; `on_finished` gets the :class:`Outcome`
    once, after the last update, on the GUI thread. Errors always arrive (RuntimeErrors
    included, see :class:`JobFailed`); the widget shows them (and notifies napari) once. `stop` is
    the job's stop/cancel event: :meth:`stop` and napari quitting set it (a job that checks
    no event, None, is aborted by napari's quit as usual).
    """

    def __init__(self, on_yielded: Callable[[Any], Any], on_finished: Callable[[Outcome], Any],
                 stop: threading.Event | None = None, on_warned: Callable[[Warning], Any] | None = None) -> None:
        self._on_yielded, self._on_finished, self.stop_event = on_yielded, on_finished, stop
        self._on_warned = on_warned  # a job's warnings (napari shows them as notifications too)
        self.worker: Any = None
        self._outcome: Outcome | None = None

    @property
    def running(self) -> bool:
        """Whether a job is running (until its outcome has been handled)."""
        return self.worker is not None

    def start(self, fn: Callable[..., Generator[Any, Any, Any]], *args: Any, **kwargs: Any) -> None:
        """Start ``fn(*args, **kwargs)`` in a worker thread (the stop event is cleared first)."""
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("a job is already running")
        if self.stop_event is not None:
            self.stop_event.clear()
        self._outcome = None
        worker = create_worker(_reraising(fn), *args, _start_thread=False, _ignore_errors=True,
                               _worker_class=_worker_class(), **kwargs)
        worker.stop_event = self.stop_event
        worker.yielded.connect(self._yielded)
        worker.returned.connect(lambda r: self._record(Outcome(result=r)))
        worker.errored.connect(lambda e: self._record(Outcome(error=e)))
        worker.aborted.connect(lambda: self._record(Outcome(aborted=True)))
        worker.finished.connect(self._finished)
        if self._on_warned is not None:
            worker.warned.connect(self._warned)
        self.worker = worker
        worker.start()

    def stop(self) -> None:
        """Ask the job to stop at its next check (training saves; prediction returns nothing)."""
        if self.stop_event is not None:
            self.stop_event.set()
        elif self.worker is not None:
            self.worker.quit()

    def _record(self, outcome: Outcome) -> None:
        if self._outcome is None:
            self._outcome = outcome

    def _warned(self, args: tuple[Any, ...]) -> None:
        message = args[0] if args else None
        if self._on_warned is not None and self.worker is not None:
            with _unless_deleted():
                self._on_warned(message if isinstance(message, Warning) else UserWarning(str(message)))

    def _yielded(self, update: Any) -> None:
        if self.worker is None or self._outcome is not None:  # a late report
            return
        with _unless_deleted():
            self._on_yielded(update)

    def _finished(self) -> None:
        outcome, self._outcome = self._outcome or Outcome(), None
        worker = self.worker
        if outcome.aborted and worker is not None:  # aborted mid-run: close the job so that it saves
            with contextlib.suppress(Exception):
                worker._gen.close()
        try:
            with _unless_deleted():
                self._on_finished(outcome)
        finally:
            self.worker = None  # only now: a click while the outcome is shown starts no second job


@contextlib.contextmanager
def _unless_deleted() -> Any:
    """Ignore the error Qt raises when the widget a signal is delivered to has been deleted (napari closed it)."""
    try:
        yield
    except RuntimeError as e:
        if "deleted" not in str(e):
            raise


# ---------------------------------------------------------------------- dock layout
class Section(QWidget):
    """A titled section whose content folds away (closed by default): the "Advanced" settings."""

    def __init__(self, title: str, content: QWidget, *, expanded: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._button = QToolButton()
        self._button.setText(title)
        self._button.setCheckable(True)
        self._button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self._button.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self._content = content
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._button)
        layout.addWidget(content)
        self._button.toggled.connect(self._set)
        self._set(expanded)
        self._button.setChecked(expanded)

    def _set(self, expanded: bool) -> None:
        self._button.setArrowType(Qt.ArrowType.DownArrow if expanded else Qt.ArrowType.RightArrow)
        self._content.setVisible(expanded)

    def is_expanded(self) -> bool:
        """Whether the content is shown."""
        return self._button.isChecked()

    def expand(self, expanded: bool = True) -> None:
        """Show (or fold away) the content."""
        self._button.setChecked(expanded)


class DockWidget(QWidget):
    """A plugin widget that fits small screens and stops its job when its dock closes.

    Subclasses lay out their controls on :attr:`body`, which scrolls inside the dock (so
    the dock never forces napari's window larger than the screen), and implement
    :meth:`stop_job`. napari closes a dock by taking the widget out of it (``setParent(None)``,
    no ``closeEvent``); quitting deletes it: both stop the job, as does ``closeEvent``.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.body = QWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(self.body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self._scroll = scroll
        self._last_pbar = 0.0  # when napari's activity progress bar was last moved
        self._tabified = False
        self._order = next(_OPENED)  # the plugin's oldest open dock anchors the shared tabs

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """Let every drop-down shrink to the dock's width (long choices are elided, not cut off); join the tabs."""
        for combo in self.body.findChildren(QComboBox):
            if combo.sizeAdjustPolicy() != QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon:
                combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                combo.setMinimumContentsLength(12)
        super().showEvent(event)
        if not self._tabified:
            QTimer.singleShot(50, self._tabify_with_siblings)  # once napari has placed the dock

    def _tabify_with_siblings(self) -> None:
        """Share a tabbed dock with the plugin's other open widgets, instead of stacking into slivers."""
        try:
            dock = self.parentWidget()
            while dock is not None and not isinstance(dock, QDockWidget):
                dock = dock.parentWidget()
            main = dock.parentWidget() if dock is not None else None
            if dock is None or not isinstance(main, QMainWindow) or dock.isFloating():
                return  # not docked (yet): the next show tries again
            self._tabified = True
            area = main.dockWidgetArea(dock)
            older = [(w._order, d) for d in main.findChildren(QDockWidget) if d is not dock and not d.isFloating()
                     and main.dockWidgetArea(d) == area for w in d.findChildren(DockWidget) if w._order < self._order]
            if older:  # join the oldest one's tabs
                main.tabifyDockWidget(min(older, key=lambda x: x[0])[1], dock)
                dock.show()
                dock.raise_()
        except RuntimeError:  # closed meanwhile
            pass

    def stop_job(self) -> None:  # pragma: no cover - overridden
        """Stop the running job (training saves what a stopped run saves)."""

    def _ask_to_stop(self, runner: WorkerRunner, button: QWidget, status: StatusLabel, message: str) -> None:
        """Ask the running job to stop at its next check: its button off, the status says what happens."""
        if runner.running:
            runner.stop()
            button.setEnabled(False)
            status.info(message)

    PBAR_INTERVAL = 1.0  # seconds between updates of napari's activity progress bar (it processes Qt events)

    def _advance_pbar(self, pbar: Any, done: int, total: int, final: bool, now: float) -> None:
        """Move napari's activity progress bar: last and rarely (each update processes Qt events)."""
        if pbar is not None and (final or now - self._last_pbar > self.PBAR_INTERVAL):
            self._last_pbar = now
            if pbar.total != total:
                pbar.total = total
            pbar.update(done - pbar.n)

    def event(self, e: Any) -> bool:
        """A dock's close (the widget taken out of its dock) stops the job."""
        if e.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.stop_job()
        return bool(super().event(e))

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        """Stop the running job when the widget closes."""
        self.stop_job()
        super().closeEvent(event)


class PathEdit(QWidget):
    """A line edit with a browse button."""

    def __init__(self, browse: Any, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setMinimumWidth(60)
        self.button = QPushButton("…")
        self.button.setFixedWidth(28)
        self.button.clicked.connect(lambda: browse(self))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(self.button)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802 - Qt style
        self.edit.setText(text)
