"""A small line plot painted with QPainter (no plotting library): training curves."""

from __future__ import annotations

import math
from typing import Any

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

PALETTE = ("#4fc3f7", "#ffb74d", "#ef5350", "#66bb6a", "#ba68c8", "#fff176")
MAX_POINTS = 1500  # per series; older points are thinned out beyond this


class CurvesPlot(QWidget):
    """Named series of (x, y) points drawn as polylines, with a legend and the y range.

    Parameters
    ----------
    title : str
        Drawn at the top left.
    log_y : bool
        Logarithmic y axis (for losses of different magnitudes); non-positive values are skipped.
    """

    def __init__(self, title: str, *, log_y: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = title
        self._log_y = log_y
        self._series: dict[str, list[tuple[float, float]]] = {}
        self._colors: dict[str, QColor] = {}
        self._dashed: set[str] = set()
        self._labels: dict[str, str] = {}
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def add_series(self, name: str, color: str | None = None, *, dashed: bool = False, label: str | None = None
                   ) -> None:
        """Declare a series (fixes its colour, line style, legend text and legend order)."""
        if name not in self._series:
            self._series[name] = []
            self._colors[name] = QColor(color or PALETTE[len(self._colors) % len(PALETTE)])
            self._labels[name] = label or name
            if dashed:
                self._dashed.add(name)

    def add_point(self, name: str, x: float, y: float | None, *, redraw: bool = True, label: str | None = None
                  ) -> None:
        """Append a point to a series (None and non-finite values are skipped).

        With ``redraw=False`` the plot is repainted at the next :meth:`update` only (to batch
        many points into one repaint).
        """
        self.add_series(name, label=label)
        if y is None or not math.isfinite(y) or (self._log_y and y <= 0):
            return
        pts = self._series[name]
        pts.append((float(x), float(y)))
        if len(pts) > MAX_POINTS:
            del pts[1:-1:2]
        if redraw:
            self.update()

    def clear(self) -> None:
        """Remove every point (the series stay declared)."""
        for pts in self._series.values():
            pts.clear()
        self.update()

    def points(self, name: str) -> list[tuple[float, float]]:
        """The points of a series."""
        return list(self._series.get(name, []))

    def _pen(self, name: str) -> QPen:
        pen = QPen(self._colors[name], 2)
        if name in self._dashed:
            pen.setStyle(Qt.PenStyle.DashLine)
        return pen

    def _ty(self, y: float) -> float:
        return math.log10(y) if self._log_y else y

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt name
        """Draw frame, curves, legend and ranges."""
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        dim = QColor(fg)
        dim.setAlpha(110)
        fm = p.fontMetrics()
        lh = fm.height()
        area = QRectF(46, lh + 6, max(self.width() - 54, 10), max(self.height() - 2 * lh - 12, 10))
        p.setPen(QPen(dim, 1))
        p.drawRect(area)
        p.setPen(fg)
        p.drawText(QPointF(4, lh), self._title)
        # legend, right-aligned on the title line: the series that have points (all, before any)
        x = float(self.width() - 6)
        shown = [n for n, pts in self._series.items() if pts] or list(self._series)
        for name in reversed(shown):
            text = self._labels.get(name, name)
            w = fm.horizontalAdvance(text)
            x -= w
            p.setPen(fg)
            p.drawText(QPointF(x, lh), text)
            x -= 16
            p.setPen(self._pen(name))
            p.drawLine(QPointF(x, lh - fm.ascent() / 2 + 1), QPointF(x + 12, lh - fm.ascent() / 2 + 1))
            x -= 10

        pts = [pt for s in self._series.values() for pt in s]
        if not pts:
            p.setPen(dim)
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "no data yet")
            p.end()
            return
        x0, x1 = min(pt[0] for pt in pts), max(pt[0] for pt in pts)
        ys = [self._ty(pt[1]) for pt in pts]
        y0, y1 = min(ys), max(ys)
        if x1 <= x0:
            x1 = x0 + 1
        if y1 - y0 < 1e-9:
            y0, y1 = y0 - 0.5, y1 + 0.5
        pad = (y1 - y0) * 0.05
        y0, y1 = y0 - pad, y1 + pad

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(area.left() + (x - x0) / (x1 - x0) * area.width(),
                           area.bottom() - (self._ty(y) - y0) / (y1 - y0) * area.height())

        p.setClipRect(area)
        for name, series in self._series.items():
            if not series:
                continue
            p.setPen(self._pen(name))
            if len(series) == 1:
                p.drawEllipse(to_px(*series[0]), 2, 2)
            else:
                p.drawPolyline(QPolygonF([to_px(*pt) for pt in series]))
        p.setClipping(False)
        p.setPen(dim)

        def fmt(v: float) -> str:
            v = 10**v if self._log_y else v
            return f"{v:.3g}"

        p.drawText(QPointF(2, area.top() + fm.ascent()), fmt(y1))
        p.drawText(QPointF(2, area.bottom()), fmt(y0))
        p.drawText(QPointF(area.left(), area.bottom() + lh), f"{x0:.0f}")
        label = f"step {x1:.0f}"
        p.drawText(QPointF(area.right() - fm.horizontalAdvance(label), area.bottom() + lh), label)
        p.end()
