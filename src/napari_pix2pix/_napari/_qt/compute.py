"""The "Compute on" setting of the restoration widgets: this process, a local dask cluster, or a scheduler.

It applies to results written to a zarr store (multiscale inputs and results over 2 GB): those
are computed block by block, and the blocks can run on a dask cluster
(:mod:`napari_pix2pix.engine.predict.distributed`). The choice is remembered across sessions.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QSpinBox, QWidget

from ..choices import ComputeSetting, compute_setting, save_compute_setting

WHERE = (
    ("here", "This process", "Compute here, in napari's own process (its threads)"),
    ("local", "Local cluster", "Start a local dask cluster of N worker processes (one thread each) on this "
                               "machine: each computes blocks of the result; kept for the session"),
    ("scheduler", "Scheduler", "Send the blocks to a running dask scheduler (e.g. tcp://host:8786): its workers "
                               "must reach the input and the output folder (a shared file system)"),
)


class ComputeOn(QWidget):
    """Where results written to a zarr store are computed; emits :attr:`changed` and remembers each choice."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._where = QComboBox()
        for key, text, tip in WHERE:
            self._where.addItem(text, key)
            self._where.setItemData(self._where.count() - 1, tip, 3)  # 3: Qt.ToolTipRole
        self._where.setToolTip("Results written to a zarr store (multiscale inputs, results over 2 GB) are "
                               "computed block by block: here, or on a dask cluster. Cancel keeps the finished "
                               "blocks; running again with the same settings continues them.")
        self._workers = QSpinBox()
        self._workers.setRange(1, 256)
        self._workers.setSuffix(" workers")
        self._workers.setToolTip("Worker processes of the local cluster (one thread each)")
        self._address = QLineEdit()
        self._address.setPlaceholderText("tcp://host:8786")
        self._address.setToolTip("The dask scheduler's address")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self._where, 1)
        row.addWidget(self._workers)
        row.addWidget(self._address, 1)
        self.set_setting(compute_setting())
        self._where.currentIndexChanged.connect(self._changed)
        self._workers.valueChanged.connect(self._changed)
        self._address.editingFinished.connect(self._changed)

    def setting(self) -> ComputeSetting:
        """The current choice."""
        return ComputeSetting(str(self._where.currentData()), self._workers.value(), self._address.text().strip())

    def set_setting(self, setting: ComputeSetting) -> None:
        """Show `setting` (without remembering it)."""
        for w in (self._where, self._workers, self._address):
            w.blockSignals(True)
        self._where.setCurrentIndex(max(0, self._where.findData(setting.where)))
        self._workers.setValue(setting.workers)
        self._address.setText(setting.address)
        for w in (self._where, self._workers, self._address):
            w.blockSignals(False)
        self._show_fields()

    def _show_fields(self) -> None:
        where = self._where.currentData()
        self._workers.setVisible(where == "local")
        self._address.setVisible(where == "scheduler")

    def _changed(self, *_: object) -> None:
        self._show_fields()
        save_compute_setting(self.setting())
        self.changed.emit()
