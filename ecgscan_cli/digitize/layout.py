"""Trace rows, calibration pulses and the page layout, from a deskewed trace map.

- Rows: peaks of the trace map's horizontal projection (a trace spends most of its time
  near its baseline), at least 8 mm apart.
- Calibration pulse: a 1 mV × 200 ms rectangle drawn left of a row's trace, separated
  from it by a small gap. Its height gives pixels per mV and its foot the baseline;
  without it, ``gain × px/mm`` and the projection peak are used.
- Layout: 4 rows = 3×4 with a lead II rhythm strip, 3 rows = 3×4, 12 rows = 12×1;
  6 rows (6×2) and any other count are refused with a one-line :class:`DigitizeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgscan_cli.errors import EcgscanError

_INK = 0.3
GRID_ROWS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
TWELVE_ROWS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
PANEL_MM = 62.5           # one 3×4 panel on paper, whatever the speed
CAL_PULSE_S = 0.2
STANDARD_GAINS = (5.0, 10.0, 20.0)


class DigitizeError(EcgscanError):
    """The maps cannot be read as an ECG page (one-line reason)."""


@dataclass
class Row:
    """One trace row of the page, in pixels of the deskewed maps."""

    y: float                      # baseline (0 mV)
    px_per_mv: float
    x0: float                     # continuous x of the row's time 0
    x1: float                     # continuous x where the trace ends
    top: int                      # the band searched for this row's trace
    bottom: int
    calibration: bool             # scale and baseline from a calibration pulse
    panels: list[tuple[str, float, float]] = field(default_factory=list)  # (lead, x from, x to)

    def as_dict(self) -> dict:
        return {"y": float(self.y), "px_per_mv": float(self.px_per_mv), "x0": float(self.x0),
                "x1": float(self.x1), "leads": [p[0] for p in self.panels],
                "calibration": bool(self.calibration)}


def find_row_baselines(trace: np.ndarray, min_gap_px: float) -> np.ndarray:
    """y of each trace row (projection peaks), top to bottom; empty when there is no ink."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    ink = np.where(trace > _INK, trace, 0.0)
    proj = gaussian_filter1d(ink.sum(axis=1).astype(np.float64), sigma=max(min_gap_px / 16.0, 1.0))
    if proj.max() <= 0:
        return np.zeros(0)
    # a row's trace covers most of the page's width: text and stray marks cover little
    peaks, _ = find_peaks(proj, distance=max(int(min_gap_px), 1), height=0.3 * proj.max(),
                          prominence=0.15 * proj.max())
    return peaks.astype(np.float64)


def _runs(occupied: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """[start, end) runs of True, joining runs separated by at most ``max_gap`` False."""
    idx = np.flatnonzero(occupied)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist()))


def find_calibration(band: np.ndarray, ppm_x: float, speed_mm_s: float) -> tuple[int, int, float, float] | None:
    """(x start, x end, baseline y, height px) of a calibration pulse at the band's left, or None.

    The pulse is the first run of ink columns, 60–160 % of its nominal width (2 + 200 ms
    + 2 mm), followed by a gap and then a long run: the trace.
    """
    occ = (band > _INK).any(axis=0)
    runs = _runs(occ, max_gap=0)
    if len(runs) < 2:
        return None
    nominal = (4.0 + CAL_PULSE_S * speed_mm_s) * ppm_x
    (a, b), (c, d) = runs[0], runs[1]
    if not (0.6 * nominal <= b - a <= 1.6 * nominal) or (d - c) < 3 * nominal:
        return None
    # per column, the ink's centre: the feet are the lowest levels, the top the highest
    # (the two rising and falling columns fall in between and are left out)
    p = np.where(band[:, a:b] > 0.05, band[:, a:b], 0.0).astype(np.float64)
    mass = p.sum(axis=0)
    centre = (p * (np.arange(band.shape[0]) + 0.5)[:, None]).sum(axis=0) / np.maximum(mass, 1e-9)
    centre = np.sort(centre[mass > 0])
    q = max(2, centre.size // 5)
    foot, head = float(np.median(centre[-q:])), float(np.median(centre[:q]))
    if foot - head < 3:
        return None
    return a, b, foot, foot - head


def _row_extent(band: np.ndarray, start: int, ppm_x: float) -> tuple[float, float] | None:
    occ = (band > _INK).any(axis=0)
    occ[:start] = False
    runs = [r for r in _runs(occ, max_gap=max(int(2 * ppm_x), 2)) if r[1] - r[0] >= 10 * ppm_x]
    if not runs:
        return None
    longest = max(runs, key=lambda r: r[1] - r[0])
    return float(longest[0]), float(longest[1])


def read_rows(trace: np.ndarray, ppm: tuple[float, float], *, speed_mm_s: float, gain_mm_mv: float,
              grid_found: bool) -> tuple[str, list[Row]]:
    """(layout name, rows) of a deskewed trace map with ``ppm`` = (x, y) pixels per mm."""
    ppm_x, ppm_y = ppm
    h, w = trace.shape
    ys = find_row_baselines(trace, 8.0 * ppm_y)
    if ys.size == 0:
        raise DigitizeError("no ECG trace found")
    n = ys.size
    names = {4: "3x4+1", 3: "3x4", 12: "12x1"}
    if n == 6:
        raise DigitizeError("layout 6x2 (6 trace rows) is not supported")
    if n not in names:
        raise DigitizeError(f"unknown layout: {n} trace row{'s' if n != 1 else ''}")
    layout = names[n]
    spacing = float(np.median(np.diff(ys))) if n > 1 else float(h)
    rows = []
    for r, y in enumerate(ys):
        top = int(max(0, y - 0.75 * spacing))
        bottom = int(min(h, y + 0.75 * spacing))
        # the pulse and the row's start are read in a narrower band: less of the neighbours
        core = trace[int(max(0, y - 0.45 * spacing)):int(min(h, y + 0.45 * spacing))]
        core_top = int(max(0, y - 0.45 * spacing))
        cal = find_calibration(core, ppm_x, speed_mm_s)
        extent = _row_extent(core, cal[1] if cal else 0, ppm_x)
        if extent is None:
            raise DigitizeError(f"no ECG trace found in row {r + 1}")
        baseline, px_per_mv, found = float(y), gain_mm_mv * ppm_y, False
        if cal is not None:
            height = cal[3]
            if grid_found:  # the pulse tells the gain; the grid measures it more precisely
                gain = min(STANDARD_GAINS, key=lambda g: abs(np.log(height / (g * ppm_y))))
                if abs(np.log(height / (gain * ppm_y))) < 0.2:
                    baseline, px_per_mv, found = core_top + cal[2], gain * ppm_y, True
            else:
                baseline, px_per_mv, found = core_top + cal[2], height, True
        x0 = extent[0] + 0.5   # ink starts in the column holding time 0
        rows.append(Row(baseline, px_per_mv, x0, extent[1], top, bottom, found))
    _assign_leads(layout, rows, ppm_x)
    return layout, rows


def _assign_leads(layout: str, rows: list[Row], ppm_x: float) -> None:
    x0 = float(np.median([r.x0 for r in rows]))   # rows start together on a printout
    for k, row in enumerate(rows):
        if abs(row.x0 - x0) < 2 * ppm_x:
            row.x0 = x0
        if layout.startswith("3x4") and k < 3:
            panel = PANEL_MM * ppm_x
            row.panels = [(GRID_ROWS[k][j], row.x0 + j * panel, row.x0 + (j + 1) * panel) for j in range(4)]
        elif layout == "3x4+1":
            row.panels = [("II", row.x0, row.x1)]
        else:
            row.panels = [(TWELVE_ROWS[k], row.x0, row.x1)]
