"""Trace rows, calibration pulses and the page layout, from a deskewed trace map.

- Rows: peaks of the trace map's horizontal projection (a trace spends most of its time
  near its baseline), at least 8 mm apart.
- Calibration pulse: a 1 mV × 200 ms rectangle on 2 mm feet drawn left of a row's trace,
  found by a matched template (it survives faded, broken or blurred lines at ~90 dpi).
  Its height gives pixels per mV, its foot the baseline and its falling edge time 0
  (3 mm to its right); without it, ``gain × px/mm``, the projection peak and the row's
  first ink are used, and rows start together (or after the pulse a row's trace shows:
  :func:`time_from_traced_pulses`, :func:`time_from_own_traced_pulses`).
- Layout: 4 rows = 3×4 with a lead II rhythm strip, 3 rows = 3×4, 12 rows = 12×1, 6 rows
  = 3×4 with three rhythm strips (V1, II, V5) or 6×2 (limb leads over the first 5 s,
  V1–V6 over the last; :func:`assign_layout` switches between the two, the pipeline keeps
  the one whose limb leads agree) when evenly spaced 20–40 mm apart; any other count is
  refused with a one-line :class:`DigitizeError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
# where a printout puts each lead and the gains it uses: the renderer's definitions
from ecgscan_cli.render.layout import GAINS as STANDARD_GAINS
from ecgscan_cli.render.layout import GRID_ROWS, PANEL_MM, RHYTHM_LEAD, RHYTHM_LEADS_3, SIX_BY_TWO

_INK = 0.3
TWELVE_ROWS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
SIX_ROW_LAYOUTS = ("3x4+3", "6x2")
CAL_PULSE_S = 0.2


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
    ppm_x: float = 0.0            # pixels per mm along this row (perspective: rows differ)
    panels: list[tuple[str, float, float]] = field(default_factory=list)  # (lead, x from, x to)
    first_ink: float = np.nan     # x where the row's ink begins (its pulse, where one is printed)

    def as_dict(self) -> dict:
        return {"y": float(self.y), "px_per_mv": float(self.px_per_mv), "x0": float(self.x0),
                "x1": float(self.x1), "px_per_mm_x": float(self.ppm_x), "leads": [p[0] for p in self.panels],
                "calibration": bool(self.calibration)}


def _thin(trace: np.ndarray, max_px: float) -> np.ndarray:
    """``trace`` less whatever is thicker than ``max_px`` vertically (a white top-hat): a
    shadow, a dark background or a smudge that a map marks as ink is no row, and its mass
    would swamp the rows' projection peaks."""
    from ecgscan_cli.digitize.filters import vertical_opening

    return trace - vertical_opening(trace, max(int(round(max_px)), 3))


def find_row_baselines(trace: np.ndarray, min_gap_px: float) -> np.ndarray:
    """y of each trace row (projection peaks), top to bottom; empty when there is no ink."""
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    ink = np.where(_thin(trace, min_gap_px / 8.0) > _INK, trace, 0.0)
    proj = gaussian_filter1d(ink.sum(axis=1).astype(np.float64), sigma=max(min_gap_px / 16.0, 1.0))
    if proj.max() <= 0:
        return np.zeros(0)
    # a row's trace covers most of the page's width: text and stray marks cover little.
    # (A peak is never dropped for a lower one nearby, so the weak peaks' search also
    # gives the rows: those at least 0.3 of the strongest.)
    peaks, props = find_peaks(proj, distance=max(int(min_gap_px), 1), height=_WEAK_ROW * proj.max(),
                              prominence=0.15 * proj.max())
    rows = peaks[props["peak_heights"] >= 0.3 * proj.max()]
    if rows.size == 3:
        rows = _fourth_row(ink, rows, peaks, props["peak_heights"])
    return rows.astype(np.float64)


# Three rows found are most often a 3x4 + rhythm strip page whose fourth row the projection
# shows weakly (a page shaded or seen at an angle smears one row's peak: 0.12-0.29 of the
# strongest on fold-7 photos); read as a plain 3x4 page, its rows then take the wrong
# leads (every lead wrong, ~0 dB). A weaker peak one row spacing beyond either end is a row
# where its ink runs along the page as the rows' does: a header line above a plain 3x4
# page's first row (as far above it as a row, on renders) covers a tenth of the columns
# the rows cover.
_WEAK_ROW = 0.15            # of the strongest row's projection
_ROW_SPACING_SLACK = 0.15   # how far from one spacing (relative) the weak row may lie
_ROW_COVER = 0.5            # of the columns the found rows' bands cover, at least


def _fourth_row(ink: np.ndarray, rows: np.ndarray, weak: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """``rows`` and the weak peak (of ``weak`` at ``heights``) that is their fourth, if one."""
    spacing = float(np.median(np.diff(rows)))

    def columns(y: float) -> np.ndarray:     # columns with ink within 0.3 spacing of y
        return (ink[int(max(0.0, y - 0.3 * spacing)):int(y + 0.3 * spacing) + 1] > 0).any(axis=0)

    found = [columns(y) for y in rows]
    span = np.flatnonzero(np.logical_or.reduce(found))
    lo, hi = span[0], span[-1] + 1
    cover = float(np.median([c[lo:hi].mean() for c in found]))
    beyond = []     # (height, y) of weak peaks one spacing above the first row or below the last
    for y, height in zip(weak, heights):
        gap = rows[0] - y if y < rows[0] else y - rows[-1]
        if (gap > 0 and abs(gap / spacing - 1.0) <= _ROW_SPACING_SLACK
                and columns(y)[lo:hi].mean() >= _ROW_COVER * cover):
            beyond.append((height, y))
    return np.sort(np.r_[rows, max(beyond)[1]]) if beyond else rows


def _runs(occupied: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """[start, end) runs of True, joining runs separated by at most ``max_gap`` False."""
    idx = np.flatnonzero(occupied)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist()))


# A pulse's weakest part (top, feet, an edge) must average this probability on the map.
# On a heavily blurred page TraceNet marks a pulse's thin edges at 0.1-0.2: such a faint
# match counts only where most rows show one at the same height and place (rows start
# together and are printed at one gain), which a trace's strokes do not (agreeing_pulses).
PULSE_SCORE = 0.25
FAINT_PULSE_SCORE = 0.1


@dataclass
class Pulse:
    """A calibration pulse found left of a row (band pixels, continuous coordinates)."""

    rise: float                   # x of the rising edge
    fall: float                   # x of the falling edge
    foot: float                   # y of the baseline (0 mV)
    height: float                 # px from foot to top: 1 mV
    score: float = 1.0            # the template's match: the weakest part's mean probability


def _box_mean(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Means of ``n`` consecutive elements along ``axis`` (output i covers i..i+n-1, shorter array)."""
    n = max(int(n), 1)
    c = np.cumsum(a, axis=axis, dtype=np.float64)
    c = np.concatenate([np.zeros_like(np.take(c, [0], axis=axis)), c], axis=axis)
    k = c.shape[axis] - n
    if k <= 0:
        return np.zeros_like(np.take(c, [], axis=axis))
    return (np.take(c, np.arange(n, n + k), axis=axis) - np.take(c, np.arange(k), axis=axis)) / n


def _centroid(w: np.ndarray, pos: np.ndarray) -> float | None:
    s = float(w.sum())
    return float((w * pos).sum() / s) if s > 1e-9 else None


def find_calibration(band: np.ndarray, ppm: tuple[float, float] | float, speed_mm_s: float,
                     y_guess: float | None = None, heights_px=None, x_range=None,
                     min_score: float = PULSE_SCORE) -> Pulse | None:
    """The calibration pulse (1 mV × 200 ms, with 2 mm feet) in ``band``, or None.

    A matched template, not a run of ink: the pulse's feet, edges and top are scored by the
    map's mean probability along them, so a pulse whose thin lines fade or break (about
    90 dpi, a soft network map) or that touches the trace (blur closes the 1 mm gap) is still
    found. Searched: the rising edge's x in ``x_range`` (default the band's left 40 %), the
    foot's y within 4 mm of ``y_guess`` (default: anywhere), the height among ``heights_px``
    (default 4–25 mm in 1 px steps). The edges, foot and top are then refined to sub-pixel
    precision from the ink's centroid. ``min_score``: the weakest part's mean probability
    a match needs (:attr:`Pulse.score`).
    """
    from scipy.ndimage import maximum_filter

    ppm_x, ppm_y = (ppm, ppm) if np.isscalar(ppm) else ppm
    m = np.clip(np.asarray(band, np.float64), 0.0, 1.0)
    h, w = m.shape
    pw = CAL_PULSE_S * speed_mm_s * ppm_x
    foot_px = 2.0 * ppm_x
    if heights_px is None:
        heights_px = np.arange(max(4.0 * ppm_y, 6.0), 25.0 * ppm_y, 1.0)
    heights_px = [hp for hp in np.atleast_1d(heights_px) if 3 <= hp < h - 2]
    xa, xb = (0, int(0.4 * w)) if x_range is None else (max(int(x_range[0]), 0), min(int(x_range[1]), w))
    if not heights_px or xb - xa < 2:
        return None
    ipw, ifoot = int(round(pw)), max(int(round(foot_px)), 1)
    # only the columns a pulse in x_range can touch (and a margin for the filters below):
    # the band is the page's width, the search a few cm of it
    c0, c1 = max(xa - ifoot - 4, 0), min(xb + ipw + ifoot + 4, w)
    if c0 > 0 or c1 < w:
        found = find_calibration(m[:, c0:c1], (ppm_x, ppm_y), speed_mm_s, y_guess, heights_px,
                                 (xa - c0, xb - c0), min_score)
        return None if found is None else Pulse(found.rise + c0, found.fall + c0, found.foot, found.height,
                                                found.score)
    # a pixel of slack across each line: a thin line resampled at ~90 dpi splits over two
    mv = maximum_filter(m, size=(3, 1))
    mh = maximum_filter(m, size=(1, 3))
    inner = max(int(round(0.7 * pw)), 1)          # the top, less its rounded corners
    head_rows = _box_mean(mv, inner, axis=1)         # [h, w - inner + 1]
    foot_rows = _box_mean(mv, ifoot, axis=1)
    xs = np.arange(xa, xb)
    xs = xs[(xs - ifoot >= 0) & (xs + ipw + ifoot <= w)]
    if xs.size == 0:
        return None
    y_lo, y_hi = (0, h) if y_guess is None else (int(max(y_guess - 4 * ppm_y, 0)), int(min(y_guess + 4 * ppm_y, h)))
    ys_f = np.arange(max(y_lo, 3), y_hi)
    col_cum = np.concatenate([np.zeros((1, w)), np.cumsum(mh, axis=0)], axis=0)
    off = (ipw - inner) // 2
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = m.cumsum(axis=0).cumsum(axis=1)
    hollow_x, hollow_y = max(2, int(round(0.6 * ppm_x))), max(2, int(round(0.6 * ppm_y)))
    best, best_score = None, 0.0
    for hp in heights_px:
        ihp = int(round(hp))
        yf = ys_f[ys_f - ihp >= 0]
        if yf.size == 0:
            continue
        yh = yf - ihp
        lo, hi = yh + max(ihp // 5, 1), yf - max(ihp // 5, 1)     # the edges' middle part
        vert = (col_cum[hi] - col_cum[lo]) / np.maximum(hi - lo, 1)[:, None]      # [len(yf), w]
        head = head_rows[yh][:, xs + off]
        rise, fall = vert[:, xs], vert[:, xs + ipw]
        feet = np.maximum(foot_rows[yf][:, xs - ifoot], foot_rows[yf][:, xs + ipw])
        # every part must be there: the trace has tall strokes and flat stretches, but not
        # a flat top of exactly 200 ms between two such strokes, above a flat foot
        # (one edge may be lost: a one-pixel line split over two columns fades at ~90 dpi)
        score = np.minimum(np.minimum(head, feet), np.maximum(rise, fall))
        # and the pulse is hollow: a trace's stroke passing between the edges is no pulse
        # (less a margin that a blurred line spreads into: ~0.6 mm, 5 px at 200 dpi)
        y0, y1 = yh + hollow_y, yf - max(hollow_y - 1, 1)
        xi0, xi1 = xs + hollow_x, xs + ipw - max(hollow_x - 1, 1)
        inside = (integral[y1[:, None], xi1[None, :]] - integral[y0[:, None], xi1[None, :]]
                  - integral[y1[:, None], xi0[None, :]] + integral[y0[:, None], xi0[None, :]])
        area = np.maximum((y1 - y0)[:, None] * (xi1 - xi0)[None, :], 1)
        score = np.where(inside / area < 0.05, score, 0.0)
        k = int(np.argmax(score))
        if score.flat[k] > best_score:
            i, j = np.unravel_index(k, score.shape)
            best_score, best = float(score.flat[k]), (int(xs[j]), int(yf[i]), ihp)
    if best is None or best_score < min_score:
        return None
    x, yf, ihp = best
    pulse = _refine_pulse(m, x, yf, ihp, ipw, ifoot)
    return None if pulse is None else Pulse(pulse.rise, pulse.fall, pulse.foot, pulse.height, best_score)


def _refine_pulse(m: np.ndarray, x: int, yf: int, ihp: int, ipw: int, ifoot: int) -> Pulse | None:
    """The pulse at template position (rise x, foot y, height) to sub-pixel precision."""
    h, w = m.shape
    rows = np.arange(h) + 0.5
    cols = np.arange(w) + 0.5
    s = max(ihp // 4, 1)
    mid = m[yf - ihp + s:yf - s + 1]                 # the edges' middle: nothing but the two edges

    def edge(xc):
        a, b = max(xc - 2, 0), min(xc + 3, w)
        return _centroid(mid[:, a:b].sum(axis=0), cols[a:b])

    def level(a, b, yc):
        a, b = max(a, 0), min(b, w)
        y0, y1 = max(yc - 3, 0), min(yc + 4, h)
        if b <= a:
            return None
        return _centroid(m[y0:y1, a:b].sum(axis=1), rows[y0:y1])

    rise, fall = edge(x), edge(x + ipw)
    foot_l = level(x - ifoot, x - 1, yf)
    foot_r = level(x + ipw + 2, x + ipw + ifoot, yf)
    head = level(x + 2, x + ipw - 1, yf - ihp)
    feet = [f for f in (foot_l, foot_r) if f is not None]
    if rise is None and fall is None or head is None or not feet:
        return None
    pw = ipw if fall is None or rise is None else None
    rise = fall - pw if rise is None else rise
    fall = rise + pw if fall is None else fall
    foot = float(np.mean(feet))
    if foot - head < 3:
        return None
    return Pulse(rise, fall, foot, foot - head)


def _row_extent(band: np.ndarray, start: int, ppm_x: float) -> tuple[float, float] | None:
    """(first, last + 1) ink column of the row's trace right of ``start``: the span of its
    long runs of ink columns (a break where a steep stroke fades does not cut the row)."""
    occ = (band > _INK).any(axis=0)
    occ[:max(start, 0)] = False
    runs = [r for r in _runs(occ, max_gap=max(int(2 * ppm_x), 2)) if r[1] - r[0] >= 10 * ppm_x]
    if not runs:
        return None
    longest = max(runs, key=lambda r: r[1] - r[0])
    # runs further than 15 mm from the longest one are not the trace (a scribble, a label)
    keep = [r for r in runs if r is longest or (r[0] - longest[1] < 15 * ppm_x and longest[0] - r[1] < 15 * ppm_x)]
    return float(min(r[0] for r in keep)), float(max(r[1] for r in keep))


def agreeing_pulses(pulses: list[Pulse | None], ppm_x: float, height_px: float) -> list[Pulse | None]:
    """``pulses`` (one per row) with the faint ones (score below :data:`PULSE_SCORE`) kept
    only where they agree with the page: ``height_px`` tall within 15 % (the height the
    clear pulses show, else the caller's gain: a faint match must not set a page's gain),
    their rising edges within 4 mm of the median of the pulses that pass, and those on more
    than half the rows, at least two (rows start together and are printed at one gain)."""
    clear = [p for p in pulses if p is not None and p.score >= PULSE_SCORE]
    if len(clear) == sum(p is not None for p in pulses):
        return list(pulses)
    if clear:
        height_px = float(np.median([p.height for p in clear]))
    tall = [p if p is not None and abs(np.log(p.height / height_px)) < 0.15 else None for p in pulses]
    found = [p for p in tall if p is not None]
    if len(found) >= 2 and 2 * len(found) > len(pulses):
        rise = float(np.median([p.rise for p in found]))
        tall = [p if p is not None and abs(p.rise - rise) < 4.0 * ppm_x else None for p in tall]
    else:
        tall = [None] * len(pulses)
    return [p if p is not None and p.score >= PULSE_SCORE else q for p, q in zip(pulses, tall)]


_PULSE_MV = (0.35, 2.5)     # a traced pulse's height at the caller's gain: 1 mV printed at 5-20 mm/mV
_PULSE_ROWS_AGREE = 0.2     # log ratio of a row's traced pulse height to the rows' median


def pulse_in_trace(x: np.ndarray, mv: np.ndarray, ppm_x: float, speed_mm_s: float) -> tuple[float, float] | None:
    """(falling edge x, height in mV) of a calibration pulse at the start of a traced row
    (x: the maps' columns, increasing; mV at the caller's gain), or None.

    A pulse the maps show too faintly for :func:`find_calibration` is often still traced:
    a flat top that ends in a steep fall to a flat foot within the row's first 15 mm. The
    falling edge is the part to trust (the tracker climbs a blurred rising edge over a few
    mm); so a pulse is: the top's last 60 % (but its final 15 %, the corner) and the foot
    0.5-2 mm past the fall each flat to within 15 % of the height, the fall (where the
    trace crosses half the height) within 2 mm, and the trace 3 mm before the top's start
    below half the height (a top much longer than a pulse's is a flat stretch of the trace;
    blur widens a pulse by 1-2 mm)."""
    ok = np.isfinite(x) & np.isfinite(mv)
    x, mv = x[ok], mv[ok]
    if x.size < 10:
        return None
    pw = CAL_PULSE_S * speed_mm_s * ppm_x
    u = np.arange(x[0], min(x[-1], x[0] + 15.0 * ppm_x + 2.0 * ppm_x), 0.5)
    if u.size < 4:
        return None
    v = np.interp(u, x, mv)

    def part(a, b):
        sel = (u >= a) & (u <= b)
        return v[sel] if np.count_nonzero(sel) >= 3 else None

    best = None
    for k in range(1, u.size):
        f = u[k]
        top, foot = part(f - 0.6 * pw, f - 0.15 * pw), part(f + 0.5 * ppm_x, f + 2.0 * ppm_x)
        if top is None or foot is None:
            continue
        height = float(np.median(top) - np.median(foot))
        half = float(np.median(foot)) + height / 2
        if height <= 0 or (best is not None and height <= best[1]) or not (v[k - 1] >= half > v[k]):
            continue
        before = np.interp(f - pw - 3.0 * ppm_x, u, v, left=np.nan)
        steep = part(f - 1.0 * ppm_x, f + 1.0 * ppm_x)
        if (np.ptp(top) < 0.15 * height and np.ptp(foot) < 0.15 * height and not before >= half
                and steep is not None and steep.max() >= half + 0.35 * height and steep.min() <= half - 0.35 * height):
            fall = float(u[k - 1] + (u[k] - u[k - 1]) * (v[k - 1] - half) / max(v[k - 1] - v[k], 1e-9))
            best = (fall, height)
    if best is None or not _PULSE_MV[0] <= best[1] <= _PULSE_MV[1]:
        return None
    return best


def time_from_traced_pulses(layout: str, rows: list[Row], traced, ppm_x: float, speed_mm_s: float) -> bool:
    """Where no row's calibration pulse was found on the maps, time 0 from the pulses the
    rows' traces show (:func:`pulse_in_trace`; ``traced``: per row, x in the maps' columns
    and mV). Rows whose trace begins more than 3 mm after their start say nothing (their
    pulse and first millimetres lost); of the others, at least two and more than half must
    show a pulse of one height (within 20 %) that moves their start alike (within 4 mm: an
    unrectified photo's rows are stretched differently). Such a row then starts 3 mm after
    its pulse's falling edge, as :func:`read_rows` places it from a pulse; a row without
    one that started with them (within 3 mm) moves as they do; the rows' px/mm and panels
    follow. The gain stays the caller's (blur lowers a traced pulse's top first). Without
    this a page whose pulses are faint was read from the pulse's foot: 0.4 s late, lead I
    beginning with the pulse, the rows' own px/mm 4 % off."""
    if any(r.calibration for r in rows):
        return False
    found = {k: pulse_in_trace(x, mv, ppm_x, speed_mm_s) for k, (x, mv) in enumerate(traced)}
    found = {k: f for k, f in found.items() if f is not None}
    telling = sum(1 for row, (x, _) in zip(rows, traced) if x.size and x[0] < row.x0 + 3.0 * ppm_x)
    if len(found) < 2 or 2 * len(found) <= telling:
        return False
    heights = np.array([f[1] for f in found.values()])
    moves = np.array([f[0] + 3.0 * ppm_x - rows[k].x0 for k, f in found.items()])
    agree = (np.abs(np.log(heights / np.median(heights))) < _PULSE_ROWS_AGREE) & \
            (np.abs(moves - np.median(moves)) < 4.0 * ppm_x)
    timed = [k for k, ok in zip(found, agree) if ok]
    if len(timed) < 2 or 2 * len(timed) <= telling:
        return False
    move = float(np.median(moves[agree]))
    start = float(np.median([rows[k].x0 for k in timed]))
    for k, row in enumerate(rows):
        if k in timed:
            row.x0 = found[k][0] + 3.0 * ppm_x
        elif abs(row.x0 - start) < 3.0 * ppm_x:
            row.x0 += move
        row.ppm_x = _row_scale(row, ppm_x, speed_mm_s)
        _panels(layout, row, k)
    return True


_OWN_PULSE_MV = 0.25        # log ratio: a traced pulse at the page's gain reads 1 mV (blur lowers its top)


def time_from_own_traced_pulses(layout: str, rows: list[Row], traced, ppm_x: float, speed_mm_s: float) -> int:
    """Rows whose pulse the maps miss, on a page where other rows show theirs: time 0 from
    the pulse the row's own trace shows (``traced``: per row, x in the maps' columns and mV
    at the page's gain, traced from the row's first ink; None for a row not to move), 3 mm
    after its falling edge, where it is 1 mV tall within 25 % (the gain is the page's now).
    Returns how many rows moved.

    Such a row otherwise starts where the rows with a pulse start: right on a level page,
    but where the page's left edge still slants (perspective left by the rectification, a
    curl, a misplaced side) its leads are read millimetres early or late (a fold-7 photo:
    two rows 6.5 and 8.3 mm off, every lead of them read against the wrong beats)."""
    moved = 0
    for k, (row, rt) in enumerate(zip(rows, traced)):
        if row.calibration or rt is None:
            continue
        found = pulse_in_trace(*rt, ppm_x, speed_mm_s)
        if found is None or abs(np.log(found[1])) > _OWN_PULSE_MV:
            continue
        row.x0 = found[0] + 3.0 * ppm_x
        row.ppm_x = _row_scale(row, ppm_x, speed_mm_s)
        _panels(layout, row, k)
        moved += 1
    return moved


def read_rows(trace: np.ndarray, ppm: tuple[float, float], *, speed_mm_s: float, gain_mm_mv: float,
              grid_found: bool, faint_pulses: bool = True) -> tuple[str, list[Row]]:
    """(layout name, rows) of a deskewed trace map with ``ppm`` = (x, y) pixels per mm.
    ``faint_pulses``: see :func:`agreeing_pulses` (with a grid only)."""
    ppm_x, ppm_y = ppm
    h, w = trace.shape
    ys = find_row_baselines(trace, 8.0 * ppm_y)
    if ys.size == 0:
        raise DigitizeError("no ECG trace found")
    n = ys.size
    names = {4: "3x4+1", 3: "3x4", 6: "3x4+3", 12: "12x1"}
    if n == 6 and not _evenly_spaced(ys, ppm_y):
        raise DigitizeError("unknown layout: 6 unevenly spaced trace rows")
    if n not in names:
        raise DigitizeError(f"unknown layout: {n} trace row{'s' if n != 1 else ''}")
    layout = names[n]
    spacing = float(np.median(np.diff(ys))) if n > 1 else float(h)
    rows = []
    votes = []          # the standard gain each pulse read on a grid says
    bands = []          # per row: (top, bottom, core_top, core, first ink run, pulse or None)
    for y in ys:
        top = int(max(0, y - 0.75 * spacing))
        bottom = int(min(h, y + 0.75 * spacing))
        # the pulse and the row's start are read in a narrower band: less of the neighbours
        # (the pulse rises above its baseline, up to 20 mm at 20 mm/mV: its band reaches up)
        core_top = int(max(0, y - 0.7 * spacing))
        core = trace[core_top:int(min(h, y + 0.3 * spacing))]
        first = _row_extent(core, 0, ppm_x)
        cal = None
        if first is not None:
            # the pulse is the row's leftmost ink (or close: a scribble or label may precede it);
            # ``first`` is the first long run of ink: the trace, or the pulse where blur joins them
            heights = [g * ppm_y for g in STANDARD_GAINS] if grid_found else None
            # (without a grid any height is possible: then only a pulse that is the row's first
            # ink counts, as a piece of trace can look like a pulse of some height)
            reach = (25.0 if grid_found else 4.0) * ppm_x
            cal = find_calibration(core, (ppm_x, ppm_y), speed_mm_s, y_guess=y - core_top, heights_px=heights,
                                   x_range=(first[0] - 15 * ppm_x, first[0] + reach),
                                   min_score=FAINT_PULSE_SCORE if grid_found and faint_pulses else PULSE_SCORE)
        bands.append((top, bottom, core_top, core, first, cal))
    kept = agreeing_pulses([b[5] for b in bands], ppm_x, gain_mm_mv * ppm_y)
    for y, (top, bottom, core_top, core, first, _), cal in zip(ys, bands, kept):
        if first is None:   # only fragments (a faint trace): the other rows say where it runs
            rows.append(Row(float(y), gain_mm_mv * ppm_y, np.nan, np.nan, top, bottom, False))
            continue
        if cal is not None and not grid_found:
            # and it stands apart from the trace: some empty column 1.5–3.5 mm after its edge
            gap = ~(core[:, int(cal.fall + 1.5 * ppm_x):int(np.ceil(cal.fall + 3.5 * ppm_x))] > _INK).any(axis=0)
            cal = cal if gap.any() else None
        extent = _row_extent(core, int(cal.fall + 1.5 * ppm_x) if cal else 0, ppm_x) or first
        baseline, px_per_mv, found = float(y), gain_mm_mv * ppm_y, False
        x0 = extent[0] + 0.5   # ink starts in the column holding time 0
        if cal is not None:
            if grid_found:  # the pulse tells the gain; the grid measures it more precisely
                gain = min(STANDARD_GAINS, key=lambda g: abs(np.log(cal.height / (g * ppm_y))))
                if abs(np.log(cal.height / (gain * ppm_y))) < 0.2:
                    baseline, px_per_mv, found = core_top + cal.foot, gain * ppm_y, True
                    votes.append(gain)
            else:
                baseline, px_per_mv, found = core_top + cal.foot, cal.height, True
            if found:
                # time 0 is where the trace leaves the pulse's right foot (2 mm) after a
                # 1 mm gap: placed from the pulse's falling edge, which blur does not move
                # (the gap itself closes at ~90 dpi, and a faint foot breaks up)
                x0 = cal.fall + 3.0 * ppm_x
        rows.append(Row(baseline, px_per_mv, x0, extent[1], top, bottom, found, first_ink=first[0]))
    lost = [k for k, row in enumerate(rows) if not np.isfinite(row.x0)]
    if len(lost) == len(rows):
        raise DigitizeError(f"no ECG trace found in row {lost[0] + 1}")
    for k in lost:
        rows[k].x0 = float(np.median([r.x0 for r in rows if np.isfinite(r.x0)]))
        rows[k].x1 = float(np.median([r.x1 for r in rows if np.isfinite(r.x1)]))
    if votes:
        # one printout, one gain: rows whose pulse says otherwise (a blurred top, a pulse
        # half cut off) take the page's, and the caller's gain stands unless two pulses
        # agree on another
        gain = page_gain(votes, gain_mm_mv)
        for r in rows:
            if r.calibration:
                r.px_per_mv = gain * ppm_y
    # a row whose pulse was hidden is printed at the same gain as the others
    found = [r.px_per_mv for r in rows if r.calibration]
    if found:
        for r in rows:
            if not r.calibration:
                r.px_per_mv = float(np.median(found))
    _assign_leads(layout, rows, ppm_x)
    for row in rows:
        row.ppm_x = _row_scale(row, ppm_x, speed_mm_s)
        _panels(layout, row, rows.index(row))
    return layout, rows


# six rows are a six-row printout only when evenly spaced about 30 mm apart (printers use
# 25-35 mm); two stray rows among a 3x4+1 page's four (a header, a fold, a desk edge in a
# photo) leave 10-mm or 45-mm gaps (fold-8 photo pages read 2.2 -> -1.4 and 6.7 -> 4.1 dB
# as six-row pages before this check)
_SIX_ROW_GAP_MM = (20.0, 40.0)
_SIX_ROW_EVEN = 0.25


def _evenly_spaced(ys: np.ndarray, ppm_y: float) -> bool:
    gaps = np.diff(np.sort(ys)) / ppm_y
    mid = float(np.median(gaps))
    return _SIX_ROW_GAP_MM[0] <= mid <= _SIX_ROW_GAP_MM[1] and bool(np.all(np.abs(gaps / mid - 1.0) <= _SIX_ROW_EVEN))


def page_gain(votes: list[float], default: float) -> float:
    """The page's gain (mm/mV) from the standard gains its rows' pulses read: the one most
    pulses read, ``default`` on a tie, and ``default`` unless at least two pulses read
    another (a single pulse that disagrees is more often misread than the printout unusual)."""
    counts = {g: votes.count(g) for g in set(votes)}
    best = max(counts, key=lambda g: (counts[g], g == default))
    return best if best == default or counts[best] >= 2 else default


def row_seconds(speed_mm_s: float) -> float:
    """Seconds a full row shows: four panels' width (10 s at 25 mm/s, 5 s at 50)."""
    return min(canonical.DURATION_S, 4 * PANEL_MM / float(speed_mm_s))


def _row_scale(row: Row, ppm_x: float, speed_mm_s: float) -> float:
    """Pixels per mm along ``row``: its own length (:func:`row_seconds`) where that differs
    from the grid's pitch by 0.5–8 %, as a page photographed at an angle shrinks its far
    rows (the grid's pitch is the page's average); otherwise the grid's, the more precise."""
    own = (row.x1 - row.x0) / ((row_seconds(speed_mm_s) - 0.002) * speed_mm_s)
    return own if 0.005 < abs(own / ppm_x - 1.0) < 0.08 else ppm_x


def _assign_leads(layout: str, rows: list[Row], ppm_x: float) -> None:
    # rows start together on a printout: a row without a pulse starts where those with one
    # do (its own first ink may be a fragment, a label or a break in a faint stroke)
    timed = [r.x0 for r in rows if r.calibration]
    x0 = float(np.median(timed if timed else [r.x0 for r in rows]))
    for k, row in enumerate(rows):
        if (timed and not row.calibration) or abs(row.x0 - x0) < 2 * ppm_x and not timed:
            row.x0 = x0
        row.ppm_x = ppm_x
        _panels(layout, row, k)


def assign_layout(layout: str, rows: list[Row]) -> None:
    """Give ``rows`` (read by :func:`read_rows`) the panels of ``layout`` instead: for a
    six-row page, which may be either of :data:`SIX_ROW_LAYOUTS`."""
    if layout not in SIX_ROW_LAYOUTS or len(rows) != 6:
        raise ValueError(f"cannot read {len(rows)} rows as {layout}")
    for k, row in enumerate(rows):
        _panels(layout, row, k)


def _panels(layout: str, row: Row, k: int) -> None:
    panel = PANEL_MM * row.ppm_x
    if layout.startswith("3x4") and k < 3:
        row.panels = [(GRID_ROWS[k][j], row.x0 + j * panel, row.x0 + (j + 1) * panel) for j in range(4)]
    elif layout == "3x4+1":
        row.panels = [(RHYTHM_LEAD, row.x0, row.x1)]
    elif layout == "3x4+3":
        row.panels = [(RHYTHM_LEADS_3[k - 3], row.x0, row.x1)]
    elif layout == "6x2":
        row.panels = [(SIX_BY_TWO[k][j], row.x0 + 2 * j * panel, row.x0 + 2 * (j + 1) * panel) for j in range(2)]
    else:
        row.panels = [(TWELVE_ROWS[k], row.x0, row.x1)]
