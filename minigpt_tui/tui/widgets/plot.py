"""A line plot drawn with braille dots (2×4 dots per cell), with a y axis and an x range.

Each series is a list of (x, y) points; the first series is drawn as a line, the others too,
in their own colour (component classes `plot--series-N`, styled in .tcss). The y range ignores
the first tenth of a long series, so the initial loss spike does not flatten the curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.widget import Widget

BRAILLE_BASE = 0x2800
# Dot bits by (column 0..1, row 0..3) inside one braille cell.
DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
AXIS_WIDTH = 8


Series = tuple[np.ndarray, np.ndarray]  # x values, y values (float64, same length)


def as_series(points: Sequence[tuple[float, float]]) -> Series:
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    keep = np.isfinite(arr).all(axis=1)
    return arr[keep, 0], arr[keep, 1]


def y_range(series: Sequence[Series]) -> tuple[float, float] | None:
    parts = []
    for _, ys in series:
        skip = ys.size // 10 if ys.size >= 20 else 0
        parts.append(ys[skip:])
    ys = np.concatenate(parts) if parts else np.empty(0)
    if ys.size == 0:
        return None
    lo, hi = float(ys.min()), float(ys.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def thin(series: Series, x0: float, x1: float, columns: int) -> list[tuple[float, float]]:
    """At most one point per dot column (the mean of those that fall in it), so a long run
    draws as fast as a short one and a noisy loss reads as its trend."""
    xs, ys = series
    if xs.size <= 2 * columns:
        return list(zip(xs.tolist(), ys.tolist(), strict=True))
    col = np.minimum(columns - 1, ((xs - x0) / ((x1 - x0) or 1.0) * columns).astype(np.int64))
    n = np.bincount(col, minlength=columns)
    sx = np.bincount(col, weights=xs, minlength=columns)
    sy = np.bincount(col, weights=ys, minlength=columns)
    keep = n > 0
    return list(zip((sx[keep] / n[keep]).tolist(), (sy[keep] / n[keep]).tolist(), strict=True))


def rasterize(
    points: list[tuple[float, float]],
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    width: int,
    height: int,
) -> list[list[int]]:
    """Braille bit masks, rows × columns, for one series joined into a line."""
    cells = [[0] * width for _ in range(height)]
    dots_w, dots_h = width * 2, height * 4
    span_x = (x1 - x0) or 1.0

    def dot(px: int, py: int) -> None:
        if 0 <= px < dots_w and 0 <= py < dots_h:
            cells[py // 4][px // 2] |= DOT_BITS[px % 2][py % 4]

    prev: tuple[int, int] | None = None
    for x, y in points:
        if not math.isfinite(y):
            continue
        px = round((x - x0) / span_x * (dots_w - 1))
        yc = min(max(y, y0), y1)
        py = round((y1 - yc) / (y1 - y0) * (dots_h - 1))
        if prev is None:
            dot(px, py)
        else:  # join to the previous point with a straight run of dots
            (qx, qy) = prev
            steps = max(abs(px - qx), abs(py - qy), 1)
            for s in range(1, steps + 1):
                dot(round(qx + (px - qx) * s / steps), round(qy + (py - qy) * s / steps))
        prev = (px, py)
    return cells


def tick(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.2e}"


class LinePlot(Widget):
    COMPONENT_CLASSES = {  # noqa: RUF012
        "plot--axis",
        "plot--series-0",
        "plot--series-1",
        "plot--empty",
    }

    def __init__(self, empty: str = "no data yet", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.series: list[Series] = []
        self.empty = empty

    def set_series(self, *series: Sequence[tuple[float, float]]) -> None:
        self.series = [as_series(s) for s in series]
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width - AXIS_WIDTH, self.size.height - 1
        rng = y_range(self.series)
        if width < 4 or height < 2 or rng is None:
            return Text(self.empty, style=self.get_component_rich_style("plot--empty"))
        y0, y1 = rng
        x0 = min(float(xs.min()) for xs, _ in self.series if xs.size)
        x1 = max(float(xs.max()) for xs, _ in self.series if xs.size)
        grids = [
            rasterize(thin(s, x0, x1, 2 * width), x0, x1, y0, y1, width, height)
            for s in self.series
        ]
        axis = self.get_component_rich_style("plot--axis")
        styles = [
            self.get_component_rich_style(f"plot--series-{min(i, 1)}") for i in range(len(grids))
        ]
        out = Text(no_wrap=True, overflow="crop")
        for row in range(height):
            label = tick(y1) if row == 0 else tick(y0) if row == height - 1 else ""
            if row == height // 2 and height > 4:
                label = tick((y0 + y1) / 2)
            out.append(f"{label:>{AXIS_WIDTH - 1}}┤", style=axis)
            for col in range(width):
                bits, style = 0, Style()
                for grid, series_style in zip(grids, styles, strict=True):
                    if grid[row][col]:
                        bits |= grid[row][col]
                        style = series_style  # later series (val) win a shared cell
                out.append(chr(BRAILLE_BASE + bits) if bits else " ", style=style)
            out.append("\n")
        left, right = f"{x0:,.0f}", f"{x1:,.0f}"
        gap = max(1, width - len(left) - len(right))
        out.append(" " * AXIS_WIDTH + left + " " * gap + right, style=axis)
        return out
