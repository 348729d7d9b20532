"""From the segmentation maps (trace, grid) to a 12-lead signal: the digitiser after the network.

Steps, each in its own module:

1. :mod:`.geometry`: deskew both maps, then pixels per mm on both axes from the grid;
2. :mod:`.layout`: trace rows, calibration pulses (px per mV, baseline) and the layout;
3. :mod:`.vectorize`: per row, the trace's sub-pixel centre in each column, in mV, moved
   with the grid's lines where the page is stretched or its rows slant unevenly;
4. resampling to 500 Hz over 10 s, NaN for the samples a lead does not show (as the
   PhysioNet 2024 references are); lead II from the rhythm strip when there is one.

Without a grid, the time axis comes from the rows' length (a printout shows 10 s) and
the mV scale from the calibration pulses. Every failure is a :class:`DigitizeError`
with a one-line reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.digitize.geometry import deskew, grid_lift, grid_pitch_near, grid_px_per_mm, grid_shift
from ecgscan_cli.digitize.jitter import calm_jitter
from ecgscan_cli.digitize.layout import (SIX_ROW_LAYOUTS, DigitizeError, Row, read_rows, row_seconds,
                                        time_from_own_traced_pulses, time_from_traced_pulses)
from ecgscan_cli.digitize.panels import assemble, choose_six_row_layout, name_rhythm_strips
from ecgscan_cli.digitize.vectorize import centreline, line_width, track_row
from ecgscan_cli.digitize.warp_field import band_warp
from ecgscan_cli.leads import LEAD_INDEX

# the digitiser writes the canonical form: every ecgscan signal is 10 s at 500 Hz
FS, N_SAMPLES = canonical.FS, canonical.N_SAMPLES
_INK = 0.3
_MIN_PPM, _MAX_PPM = 0.8, 60.0          # plausible pixels per mm
# How far the grid's lines along a row move before the row is corrected (see _follow_grid),
# in mm so that a reading at the image's resolution gates like one at the working
# resolution (2 and 4 px there, at ~3.7 px/mm)
FOLLOW_MM = 0.55                        # the row's own stretch and baseline
WARPED_MM = 1.1                         # crumpled or curled: the band's displacement field
# A printout's rows are about 250 mm long whatever its speed (10 s at 25 mm/s, 5 s at 50:
# the page's width); rows this far (log ratio, ~1.33×) from it at the grid's pitch mean
# the pitch was misread
_ROW_MM = 250.0
_ROWS_PLAUSIBLE = 0.29
_INK_PLAUSIBLE = 0.69                   # the ink's width (rows, pulses, stray marks): a factor of 2
__all__ = ["Digitized", "DigitizeError", "Printout", "digitize_maps"]


@dataclass(frozen=True)
class Printout:
    """The printout's settings where the caller knows them: the paper speed (the page
    itself does not say it, short of reading its header text) and the gain used where no
    calibration pulse shows it (a pulse's height wins)."""
    speed_mm_s: float = 25.0
    gain_mm_mv: float = 10.0


@dataclass
class Digitized:
    signal: np.ndarray                   # [12, N_SAMPLES] float32 mV at FS, LEADS order, NaN = not shown
    fs: float
    layout: str                          # "3x4+1", "3x4", "3x4+3", "6x2", "12x1"
    px_per_mm: tuple[float, float]       # (x, y) at the maps' resolution
    rotation_deg: float                  # deskew applied (the maps were rotated by this)
    rows: list[dict] = field(default_factory=list)
    grid_found: bool = True
    # set by digitize_image: which maps were read, their shape and their pixels → the image's
    reading: str = "working"
    map_shape: tuple[int, int] | None = None
    to_image: np.ndarray | None = None      # 3×3 homography
    lead_residual: float | None = None      # consistency.lead_relation_residual, when compared
    orientation: int = 0                    # degrees counter-clockwise the image was turned to read it
    tilt_deg: float = 0.0                   # and then levelled by (rows tilted beyond the deskew's ±15°)
    line_mm: float | None = None            # the trace's line width (mm), median over rows: blur thickens it


def _check_map(m, name: str, shape=None) -> np.ndarray:
    a = np.asarray(m, dtype=np.float32)
    if a.ndim != 2 or min(a.shape) < 16:
        raise DigitizeError(f"{name} map must be a 2-D image of at least 16×16 pixels, got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise DigitizeError(f"{name} map shape {a.shape} differs from the trace map's {shape}")
    return np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)


def _ink_width(trace: np.ndarray) -> float:
    cols = np.flatnonzero((trace > _INK).sum(axis=0) > 0)
    return float(cols[-1] - cols[0] + 1 if cols.size else trace.shape[1])


def _scale_without_grid(trace: np.ndarray, speed_mm_s: float) -> float:
    """A first px/mm guess from the ink's width: the rows' 10 s (5 at 50 mm/s) plus the calibration pulses."""
    return _ink_width(trace) / (row_seconds(speed_mm_s) * speed_mm_s + 10.0)


def _clear_border(m: np.ndarray, px: int = 4) -> np.ndarray:
    """``m`` with its outermost ``px`` pixels cleared: a network marks the image's edge
    (where the padding starts) as a line across the whole page, which pins the deskew at 0°
    and reads as a trace row; no ECG content lies that close to a page image's edge."""
    out = m.copy()
    out[:px] = 0.0
    out[-px:] = 0.0
    out[:, :px] = 0.0
    out[:, -px:] = 0.0
    return out


def despeckle(trace: np.ndarray, min_pixels: int) -> np.ndarray:
    """``trace`` without ink blobs of fewer than ``min_pixels`` pixels (8-connected).

    A trace is one long connected stroke per row (or a few pieces where a steep stroke
    fades); isolated specks (dust, noise, a network's false positives) would otherwise
    start a row early, hide its calibration pulse or catch the tracker.
    """
    from scipy import ndimage

    labels, n = ndimage.label(trace > _INK, structure=np.ones((3, 3), bool))
    if n == 0:
        return trace
    small = np.bincount(labels.ravel(), minlength=n + 1) < min_pixels
    small[0] = False
    if not small.any():
        return trace
    return np.where(small[labels], 0.0, trace).astype(np.float32)


def digitize_maps(trace: np.ndarray, grid: np.ndarray | None, *, speed_mm_s: float = 25.0,
                  gain_mm_mv: float = 10.0, straight: bool = False, faint_pulses: bool = True) -> Digitized:
    """The 12-lead signal shown by a page's ``trace`` and ``grid`` probability maps (H×W in [0, 1]).

    ``straight``: the maps are known to be level already (made on a deskewed or rectified
    canvas): no deskew. ``faint_pulses``: calibration pulses the map shows faintly count
    where the rows agree on them (:func:`~.layout.agreeing_pulses`), and where no row's
    pulse is found, those the rows' traces show (:func:`~.layout.time_from_traced_pulses`);
    for TraceNet's maps."""
    trace = _check_map(trace, "trace")
    grid = None if grid is None else _check_map(grid, "grid", trace.shape)
    if speed_mm_s <= 0 or gain_mm_mv <= 0:
        raise DigitizeError("paper speed and gain must be positive")
    if np.count_nonzero(trace > _INK) < 50:
        raise DigitizeError("no ECG trace found")
    trace, grid = _clear_border(trace), (None if grid is None else _clear_border(grid))
    trace, grid, angle = (trace, grid, 0.0) if straight else deskew(trace, grid)
    ppm_x, ppm_y = grid_px_per_mm(grid)
    grid_found = ppm_x is not None or ppm_y is not None
    ppm_x, ppm_y = ppm_x or ppm_y, ppm_y or ppm_x       # one axis only: square pixels
    if grid_found and abs(np.log(ppm_x / ppm_y)) > 0.15:
        # pixels are square to within what a tilted camera does: the vertical pitch was
        # taken from something else (the rows' own spacing, shading); the horizontal
        # profile, which the rows do not cross, keeps the grid's
        ppm_y = ppm_x
    if not grid_found:
        ppm_x = ppm_y = _scale_without_grid(trace, speed_mm_s)
    if not (_MIN_PPM <= ppm_x <= _MAX_PPM and _MIN_PPM <= ppm_y <= _MAX_PPM):
        raise DigitizeError(f"no grid found (implausible scale of {ppm_x:.2f} × {ppm_y:.2f} px/mm)")
    if grid_found:
        # first against the ink's width, loosely (stray ink on a desk widens it): a pitch
        # misread by a factor of 2 or more would merge the rows; only a grid line near the
        # width's scale replaces it
        ppm_x, ppm_y = _pitch_checked(grid, _ink_width(trace) / (_ROW_MM + 10.0), ppm_x, ppm_y, _INK_PLAUSIBLE)
    trace = despeckle(trace, min_pixels=max(4, int(round(ppm_x * ppm_y / 4))))
    layout, rows = read_rows(trace, (ppm_x, ppm_y), speed_mm_s=speed_mm_s, gain_mm_mv=gain_mm_mv,
                             grid_found=grid_found, faint_pulses=faint_pulses)
    lengths = [r.x1 - r.x0 for r in rows if np.isfinite(r.x0) and np.isfinite(r.x1)]
    if grid_found and lengths:      # then against the rows' length, the finer ruler
        from_rows = float(np.median(lengths)) / _ROW_MM
        checked = _pitch_checked(grid, from_rows, ppm_x, ppm_y, _ROWS_PLAUSIBLE)
        if checked != (ppm_x, ppm_y):
            ppm_x, ppm_y = checked
            layout, rows = read_rows(trace, (ppm_x, ppm_y), speed_mm_s=speed_mm_s, gain_mm_mv=gain_mm_mv,
                                     grid_found=grid_found, faint_pulses=faint_pulses)
    if not grid_found:
        # the rows show 10 s at 25 mm/s (the last sample at 9.998 s): their length is the time axis
        length = float(np.median([r.x1 - r.x0 for r in rows]))
        ppm_x = ppm_y = length / ((row_seconds(speed_mm_s) - 1.0 / FS) * speed_mm_s)   # square pixels
        layout, rows = read_rows(trace, (ppm_x, ppm_y), speed_mm_s=speed_mm_s, gain_mm_mv=gain_mm_mv,
                                 grid_found=False, faint_pulses=faint_pulses)
    if grid_found and faint_pulses and not any(r.calibration for r in rows):
        # no pulse found on the maps: perhaps the traces show them (in the maps' own x,
        # where a pulse is 200 ms wide; the rows are then traced again from their time 0).
        # TraceNet's maps only, as for faint pulses: on the finer colour-score maps it let
        # a poorer reading win the lead relations (docs/digitize.md)
        time_from_traced_pulses(layout, rows, _trace_rows(trace, rows, ppm_y)[0], ppm_x, speed_mm_s)
    elif grid_found and faint_pulses and not all(r.calibration for r in rows):
        _time_untimed_rows(layout, rows, trace, ppm_x, ppm_y, speed_mm_s)
    traced, widths = _trace_rows(trace, rows, ppm_y, grid if grid_found else None)
    if layout in SIX_ROW_LAYOUTS:
        layout = choose_six_row_layout(rows, traced, layout, speed_mm_s)
    else:
        name_rhythm_strips(rows, traced, speed_mm_s)
    signal = assemble(rows, traced, speed_mm_s)
    if not np.isfinite(signal).any():
        raise DigitizeError("no ECG trace found")
    signal = calm_jitter(signal, FS)
    widths = [w for w in widths if np.isfinite(w)]
    return Digitized(signal, FS, layout, (float(ppm_x), float(ppm_y)), float(angle),
                     [r.as_dict() for r in rows], grid_found,
                     line_mm=float(np.median(widths)) / ppm_y if widths else None)


def _time_untimed_rows(layout: str, rows: list[Row], trace: np.ndarray, ppm_x: float, ppm_y: float,
                       speed_mm_s: float) -> None:
    """Rows without a pulse (others have one) timed by the pulse their own trace shows
    (:func:`~.layout.time_from_own_traced_pulses`): each traced from its first ink."""
    from dataclasses import replace

    untimed = [not r.calibration and np.isfinite(r.first_ink) for r in rows]
    from_start = [replace(r, x0=r.first_ink + 0.5) for r, u in zip(rows, untimed) if u]
    traced = iter(_trace_rows(trace, from_start, ppm_y)[0])
    time_from_own_traced_pulses(layout, rows, [next(traced) if u else None for u in untimed], ppm_x, speed_mm_s)


def _pitch_checked(grid: np.ndarray, guess: float, ppm_x: float, ppm_y: float,
                   off: float) -> tuple[float, float]:
    """(px/mm x, y): the grid's pitch, unless ``guess`` (px/mm from the ink's width or the
    rows' length: a printout's rows are ~250 mm long) puts it further off than ``off`` (log
    ratio) and the grid has 5 mm lines near the guess.

    A blurred photo's shading can let a sub-harmonic of the 5 mm lines pass for them (rows
    read as 63 or 84 mm instead of 250, or merged into two). Without a line near the guess
    the grid's pitch stands: rows can be short for other reasons (a photo's crop), and a
    page too dark to read is better refused than read on a guessed scale."""
    if not (np.isfinite(guess) and guess > 0) or abs(np.log(guess / ppm_x)) < off:
        return ppm_x, ppm_y     # (no ruler: rows whose ends were misplaced)
    near = [grid_pitch_near(grid.sum(axis=a), guess) for a in (0, 1)]
    near = [p for p in near if p is not None]
    return (float(near[0]), float(near[0])) if near else (ppm_x, ppm_y)


def _follow_grid(x: np.ndarray, y: np.ndarray, row: Row, grid: np.ndarray | None,
                 ppm_y: float, grid_seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trace points (page px) moved to where they lie on an evenly pitched grid.

    A page seen at an angle, curled or warped stretches a row unevenly and slants or bends
    its baseline; the grid's lines undergo the same. Along the row (:func:`geometry.grid_shift`,
    :func:`geometry.grid_lift`) they give the stretch and the baseline, used where they
    move by more than ``FOLLOW_MM``: a straight page's phase only wobbles by a pixel where the
    trace hides the grid. Where they move by more than ``WARPED_MM`` the page is crumpled
    or curled, not just tilted, and shears differently at every height, so the
    displacement is read over the whole band (:mod:`.warp_field`) and each point, a QRS
    peak too, moves with the paper around it; on a straight page that field's own noise
    would cost more than it corrects (the gate was set while the field was read under the
    trace too, 0.3–1 px of wobble there; re-tuned since on fold 7, it gained nothing).
    ``grid_seen``: where the trace does not hide the grid (:func:`_grid_seen`); the row's
    stretch, baseline and displacement field are read there only.
    """
    if grid is None:
        return x, y
    cols = np.arange(grid.shape[1]) + 0.5
    seen = (cols >= row.x0) & (cols <= row.x1)
    if not seen.any():
        return x, y
    lift = grid_lift(grid, row.top, row.bottom, ppm_y, grid_seen)
    shift = grid_shift(grid, row.top, row.bottom, row.ppm_x, grid_seen)
    moves = [np.ptp(f[seen]) / ppm if f is not None else 0.0 for f, ppm in ((lift, ppm_y), (shift, row.ppm_x))]
    if max(moves) > WARPED_MM:
        warp = band_warp(grid, row.top, row.bottom, (row.ppm_x, ppm_y), grid_seen)
        if warp is not None:
            return warp.to_even(x, y, row.x0, row.y)
    if moves[0] > FOLLOW_MM:
        y = y - (np.interp(x, cols, lift) - np.interp(row.x0, cols, lift))
    if moves[1] > FOLLOW_MM:
        x = x - (np.interp(x, cols, shift) - np.interp(row.x0, cols, shift))
    return x, y


_HIDES_GRID = 0.15      # trace probability (within a pixel) above which the grid cannot show


def _grid_seen(trace: np.ndarray) -> np.ndarray:
    """Where the trace leaves the grid to be seen: not on its ink or the pixel beside it."""
    from ecgscan_cli.digitize.filters import square_max

    return ~square_max(trace >= _HIDES_GRID, 1)


def _trace_rows(trace: np.ndarray, rows: list[Row], ppm_y: float,
                grid: np.ndarray | None = None) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
    """Per row: its trace as (x on an evenly pitched grid, px; mV), whatever leads it shows;
    and per row its line width (px, :func:`~.vectorize.line_width`)."""
    traced, widths = [], []
    seen = None if grid is None else _grid_seen(trace)
    for row in rows:
        band = trace[row.top:row.bottom]
        c0, c1 = int(np.floor(row.x0)), int(np.ceil(row.x1))
        top, bottom = track_row(band, row.y - row.top, c0, c1, max_jump=3.0 * ppm_y)
        widths.append(line_width(top, bottom))
        x, y = centreline(top, bottom, c0)
        x, y = _follow_grid(x, y + row.top, row, grid, ppm_y, seen)
        traced.append((x, (row.y - y) / row.px_per_mv))
    return traced, widths
