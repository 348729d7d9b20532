"""A row's trace as points of its centre line, then as millivolts at 500 Hz.

In each column the ink of the row's band falls into vertical runs (a run broken by a
pixel or two of faint ink is one run). The trace is continuous, so the run chosen in a
column is one touching the run chosen in the previous column, where the stroke leaves it
(the nearest one after a gap); a neighbouring row's tall QRS, a label or a blur fragment
entering the band is passed over. A run's sub-pixel top and bottom come from its ink
mass and centre; :func:`centreline` turns the columns' spans into the path of least
vertical travel through them, keeping the peaks a per-column mean would blunt; where blur
has filled a narrow spike's inside, its outline (:func:`_outline_filled`). Where the image
was resampled, a steep stroke's ink shares two columns and their spans overlap instead of
meeting end to end (:func:`_spread_sideways`); the path then need not visit an end that a
neighbour's span covers, and crosses between such columns mid-overlap.
"""

from __future__ import annotations

import numpy as np

_INK = 0.3
_JOIN_PX = 2
_EDGE_PX = 2
_FILLED_TALL = 3.0       # a filled column spans more than this many line widths
_FILLED_OVERLAP = 0.6    # and shares more than this share of its span with each neighbour
_ERODE = 1               # columns a filled spike's outline is narrowed by on each side
_FILLED_AROUND = 10      # columns either side of a filled run that give its level
# A chain's ink is spread sideways when its neighbouring tall spans (over _STEEP_PX) overlap
# by more than this share of the shorter, in the median: on the renderer's own pages they
# meet end to end (95th percentile of chains 0.04), on a page resampled by half a pixel they
# overlap by half (5th percentile 0.22). Measured on 20 fold-8 pages, aligned dB: clean
# 25.54 → 25.37, columns averaged in pairs 18.21 → 21.05 (docs/digitize.md).
_SIDEWAYS = 0.1
_STEEP_PX = 4.0
_INSIDE_PX = 0.5         # an end this far inside a neighbour's span is that neighbour's ink
_MIDDLE_COST = 0.01      # per px from an overlap's middle: breaks the ties of a monotonic stroke


def _segments(band: np.ndarray, c0: int, c1: int):
    """Per column in [c0, c1): ink runs as sorted arrays (column, lo, hi, top edge, bottom edge).

    ``lo``/``hi`` are the run's pixel rows [lo, hi); the edges are sub-pixel, from the
    ink's mass and centre (see below).
    """
    sub = np.clip(band[:, c0:c1].T.astype(np.float64), 0.0, 1.0)     # [cols, h]
    cols, h = sub.shape
    on = np.zeros((cols, h + 2), np.int8)
    on[:, 1:-1] = sub > _INK
    d = np.diff(on, axis=1)
    cs, lo = np.nonzero(d == 1)      # run starts, sorted by column then y
    _, hi = np.nonzero(d == -1)      # run ends (exclusive), paired with the starts
    # a stroke whose ink dips below the threshold for a pixel or two (blur, a resampled
    # map) is one run, not several
    join = np.r_[False, (cs[1:] == cs[:-1]) & (lo[1:] - hi[:-1] <= _JOIN_PX)]
    if join.any():
        first = np.flatnonzero(~join)
        last = np.r_[first[1:], cs.size] - 1
        cs, lo, hi = cs[first], lo[first], hi[last]
    # edges from the ink's mass and centre over the run and two pixels either side: a
    # line covering [A, B] has mass B − A and centre (A + B) / 2, and both survive blur
    s0 = np.zeros((cols, h + 1))
    s1 = np.zeros((cols, h + 1))
    np.cumsum(sub, axis=1, out=s0[:, 1:])
    np.cumsum(sub * (np.arange(h) + 0.5), axis=1, out=s1[:, 1:])
    a = np.maximum(lo - _EDGE_PX, 0)
    b = np.minimum(hi + _EDGE_PX, h)
    mass = np.maximum(s0[cs, b] - s0[cs, a], 1e-6)
    centre = (s1[cs, b] - s1[cs, a]) / mass
    top, bottom = centre - mass / 2.0, centre + mass / 2.0
    return cs, lo.astype(np.float64), hi.astype(np.float64), top, bottom


def track_row(band: np.ndarray, y_start: float, c0: int, c1: int, max_jump: float) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom) ink edges (band pixels, continuous) of the trace in columns c0..c1-1, NaN where lost.

    ``y_start``: where the trace should be at c0 (the baseline); ``max_jump``: how far (px)
    the trace may be from its last position after a gap and still be the same trace.
    """
    c0, c1 = max(int(c0), 0), min(int(c1), band.shape[1])
    out_top = np.full(max(c1 - c0, 0), np.nan)
    out_bottom = out_top.copy()
    if c1 <= c0:
        return out_top, out_bottom
    cs, lo, hi, top, bottom = _segments(band, c0, c1)
    centre = (top + bottom) / 2.0
    bounds = np.searchsorted(cs, np.arange(c1 - c0 + 1)).tolist()
    lo_l, hi_l, ce_l = lo.tolist(), hi.tolist(), centre.tolist()
    p_lo = p_hi = p_c = p_exit = float(y_start)
    have = False                     # a segment was chosen already (else: nearest to y_start)
    missed = 0
    for c in range(c1 - c0):
        k0, k1 = bounds[c], bounds[c + 1]
        if k0 == k1:
            missed += 1
            continue
        best, best_key = -1, None
        reach = 1.0 + missed          # a trace moves at most this far per empty column
        for k in range(k0, k1):
            if have:
                gap = max(lo_l[k] - p_hi, p_lo - hi_l[k], 0.0)
                if gap > reach and gap > max_jump * (1 + missed):
                    continue
                # of the runs touching the last one, the one where the stroke leaves it;
                # then the bigger (a blur fragment loses to the stroke)
                d_exit = 0.0 if p_exit is None else max(lo_l[k] - p_exit, p_exit - hi_l[k], 0.0)
                key = (gap > reach, d_exit if gap <= reach else gap, lo_l[k] - hi_l[k])
            else:
                dist = abs(ce_l[k] - p_c)
                if dist > max_jump:
                    continue
                key = (False, dist, 0.0)
            if best_key is None or key < best_key:
                best, best_key = k, key
        if best < 0:
            missed += 1
            continue
        lo_b, hi_b = lo_l[best], hi_l[best]
        # where the stroke enters this run (its overlap with the last) and so where it leaves:
        # a tall run is a steep stroke crossing the column, leaving at its far end
        entry = min(max((max(lo_b, p_lo) + min(hi_b, p_hi)) / 2.0, lo_b), hi_b) if have and missed == 0 else ce_l[best]
        tall = hi_b - lo_b > 6
        if tall and have and missed == 0 and min(hi_b, p_hi) - max(lo_b, p_lo) > _FILLED_OVERLAP * (hi_b - lo_b):
            # a blob (blur has filled a spike) entered across most of its height: where the
            # stroke leaves it is unknown; the next column's biggest touching run is the trace
            p_exit = None
        elif tall:
            p_exit = hi_b - 1 if entry - lo_b < hi_b - entry else lo_b
        else:
            p_exit = ce_l[best]
        p_lo, p_hi, p_c = lo_b, hi_b, ce_l[best]
        out_top[c], out_bottom[c] = top[best], bottom[best]
        have, missed = True, 0
    return out_top, out_bottom


def _travel(e: float, x: float, ends: tuple[float, ...]) -> float:
    """Least vertical travel of a path entering a column at ``e``, leaving at ``x`` and
    visiting ``ends`` (its span's lo and hi, one of them, or none)."""
    if len(ends) == 2:
        lo, hi = ends
        return (hi - lo) + min(abs(e - lo) + abs(hi - x), abs(e - hi) + abs(lo - x))
    if ends:
        return abs(e - ends[0]) + abs(ends[0] - x)
    return abs(x - e)


def _column_path(e: float, x: float, ends: tuple[float, ...], tol: float) -> list[float]:
    """The extremes a column's trace visits between entry ``e`` and exit ``x``, in order."""
    if len(ends) == 2:
        lo, hi = ends
        ends = (lo, hi) if abs(e - lo) + abs(hi - x) <= abs(e - hi) + abs(lo - x) else (hi, lo)
    out = []
    for v in ends:
        if abs(v - e) > tol and abs(v - x) > tol and not (min(e, x) - tol <= v <= max(e, x) + tol):
            out.append(v)
    return out


def _spread_sideways(lo: list[float], hi: list[float]) -> bool:
    """Whether a chain's steep strokes share their ink between neighbouring columns (an
    image resampled off the pixel grid: scanned, photographed, rotated or scaled), judged
    by how far its neighbouring tall spans overlap (see ``_SIDEWAYS``)."""
    lo_a, hi_a = np.asarray(lo), np.asarray(hi)
    if lo_a.size < 3:
        return False
    span = hi_a - lo_a
    shorter = np.minimum(span[:-1], span[1:])
    overlap = np.minimum(hi_a[:-1], hi_a[1:]) - np.maximum(lo_a[:-1], lo_a[1:])
    tall = shorter > _STEEP_PX
    if np.count_nonzero(tall) < 5:
        return False
    return float(np.median(overlap[tall] / shorter[tall])) > _SIDEWAYS


def _own_ends(lo: list[float], hi: list[float], c: int) -> tuple[float, ...]:
    """The ends of column ``c``'s span that no neighbour's span covers: those the path must
    visit in this column (an end well inside a neighbour's span is ink spread from it)."""
    def covered(v):
        return any(0 <= k < len(lo) and lo[k] + _INSIDE_PX < v < hi[k] - _INSIDE_PX for k in (c - 1, c + 1))
    ends = tuple(v for v in (lo[c], hi[c]) if not covered(v))
    return ends[:1] if len(ends) == 2 and ends[0] == ends[1] else ends


def _chain(lo: list[float], hi: list[float], tol: float) -> tuple[list[float], list[float]]:
    """Points (x in columns from the chain's first, y) of one unbroken run of columns.

    A column's span is the trace's min..max inside it, so the value at the edge between
    two columns lies in both spans. Of the values the spans allow, the path of least
    vertical travel (total variation) is taken, by dynamic programming over the two ends
    of each overlap: a smooth trace goes no further than its ink shows.
    """
    n = len(lo)
    sideways = _spread_sideways(lo, hi)
    ends = [_own_ends(lo, hi, c) if sideways else (lo[c], hi[c]) for c in range(n)]
    cands, costs = [], []
    for c in range(n - 1):
        a, b = max(lo[c], lo[c + 1]), min(hi[c], hi[c + 1])
        if a > b:
            cands.append(((a + b) / 2.0,))
            costs.append((0.0,))
        elif sideways:      # a monotonic stroke crosses between spread columns mid-overlap
            m = (a + b) / 2.0
            cands.append((a, m, b))
            costs.append((_MIDDLE_COST * (m - a), 0.0, _MIDDLE_COST * (b - m)))
        else:
            cands.append((a, b))
            costs.append((0.0, 0.0))
    entry = (lo[0], hi[0])
    exit_ = (lo[-1], hi[-1])
    bounds = [entry] + cands + [exit_]
    bound_costs = [(0.0, 0.0)] + costs + [(0.0, 0.0)]
    cost = [0.0] * len(entry)
    back = []
    for c in range(n):
        prev, nxt = bounds[c], bounds[c + 1]
        new_cost, arg = [], []
        for k, x in enumerate(nxt):
            best, bi = None, 0
            for i, e in enumerate(prev):
                v = cost[i] + _travel(e, x, ends[c])
                if best is None or v < best:
                    best, bi = v, i
            new_cost.append(best + bound_costs[c + 1][k])
            arg.append(bi)
        back.append(arg)
        cost = new_cost
    # walk back: the chosen value at each boundary
    j = min(range(len(cost)), key=cost.__getitem__)
    chosen = [0.0] * (n + 1)
    for c in range(n, 0, -1):
        chosen[c] = bounds[c][j]
        j = back[c - 1][j]
    chosen[0] = bounds[0][j]
    xs, ys = [], []
    for c in range(n):
        e, x = chosen[c], chosen[c + 1]
        if c > 0:
            xs.append(float(c))
            ys.append(e)
        inner = _column_path(e, x, ends[c], tol)
        if c == 0 or c == n - 1:   # the chain's ends: its first and last values
            inner = inner or [(lo[c] + hi[c]) / 2.0]
        if len(inner) == 1:
            d_l, d_r = abs(inner[0] - e), abs(inner[0] - x)
            frac = d_l / (d_l + d_r) if d_l + d_r > 0 else 0.5
            xs.append(c + frac)
            ys.append(inner[0])
        else:
            for k, v in enumerate(inner):
                xs.append(c + (k + 1) / (len(inner) + 1))
                ys.append(v)
    return xs, ys


def _outline_filled(lo: np.ndarray, hi: np.ndarray, ok: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Spans of a blur-filled spike reduced to its outline.

    Blur fills the narrow inside of a QRS spike: every column across it then spans from
    the spike's outline to its foot, and a path visiting both ends of each column draws a
    zigzag as tall as the spike. Such columns overlap their neighbours' spans almost
    wholly, where a steep stroke's columns meet end to end. In a run of them the trace is
    the end farther from the level around the run (the spike's tip, up or down), eroded by
    ``_ERODE`` columns: blur spreads the spike sideways as it thickens the line.
    """
    n = lo.size
    tall = ok & (hi - lo > _FILLED_TALL * max(width, 1.0))
    filled = np.zeros(n, bool)
    for c in np.flatnonzero(tall[1:-1]) + 1:
        if not (ok[c - 1] and ok[c + 1]):
            continue
        span = hi[c] - lo[c]
        over = [min(hi[c], hi[k]) - max(lo[c], lo[k]) for k in (c - 1, c + 1)]
        filled[c] = min(over) > _FILLED_OVERLAP * span
    if not filled.any():
        return lo, hi
    out_lo, out_hi = lo.copy(), hi.copy()
    mid = (lo + hi) / 2.0
    starts = np.flatnonzero(filled & ~np.r_[False, filled[:-1]])
    ends = np.flatnonzero(filled & ~np.r_[filled[1:], False]) + 1
    for a, b in zip(starts, ends):
        around = np.r_[np.arange(max(a - _FILLED_AROUND, 0), a), np.arange(b, min(b + _FILLED_AROUND, n))]
        around = around[ok[around] & ~filled[around]]
        if around.size == 0:
            continue
        level = float(np.median(mid[around]))
        for c in range(a, b):
            k0, k1 = max(c - _ERODE, 0), min(c + _ERODE + 1, n)
            sel = ok[k0:k1]
            if level - lo[c] >= hi[c] - level:      # the tip points up
                v = min(float(lo[k0:k1][sel].max()), level)
            else:
                v = max(float(hi[k0:k1][sel].min()), level)
            out_lo[c] = out_hi[c] = v
    return out_lo, out_hi


def line_width(top: np.ndarray, bottom: np.ndarray) -> float:
    """The trace's line width in px: the 20th percentile of the columns' spans (most
    columns are nearly flat); NaN for fewer than two columns with ink."""
    ok = np.isfinite(top) & np.isfinite(bottom)
    return float(np.percentile((bottom - top)[ok], 20)) if np.count_nonzero(ok) >= 2 else float("nan")


def centreline(top: np.ndarray, bottom: np.ndarray, c0: int, tol: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Points (continuous x, y) of the trace's centre line from each column's ink edges.

    A column's ink spans the trace's lowest to highest value inside it, widened by the
    line width (taken as the 20th percentile of the spans: most columns are nearly flat).
    The values at the edges between columns and the peaks inside columns come from
    :func:`_chain`; a peak is placed nearer the edge whose value is nearer its own. This
    keeps the QRS peaks that a per-column mean blunts when a column holds several samples.
    """
    ok = np.isfinite(top) & np.isfinite(bottom)
    if np.count_nonzero(ok) < 2:
        return np.zeros(0), np.zeros(0)
    width = line_width(top, bottom)
    lo = top + width / 2.0
    hi = bottom - width / 2.0
    mid = (lo + hi) / 2.0
    lo, hi = np.minimum(lo, mid), np.maximum(hi, mid)
    lo, hi = _outline_filled(lo, hi, ok, width)
    xs, ys = [], []
    idx = np.flatnonzero(ok)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    for a, b in zip(np.r_[0, breaks + 1], np.r_[breaks + 1, idx.size]):
        cols = idx[a:b]
        cx, cy = _chain(lo[cols].tolist(), hi[cols].tolist(), tol)
        xs.append(np.asarray(cx) + cols[0] + c0)
        ys.append(np.asarray(cy))
    return np.concatenate(xs), np.concatenate(ys)


def to_samples(x: np.ndarray, v: np.ndarray, x0: float, px_per_s: float,
               x_from: float, x_to: float, fs: float, n: int, edge_px: float = 0.0,
               max_gap_s: float = 0.25) -> np.ndarray:
    """Points (continuous x, value) → ``n`` samples at ``fs`` (time 0 at ``x0``), NaN off the window.

    ``edge_px``: points this close to the window's ends are dropped (the column on a panel
    edge holds two leads at once); the samples there take the nearest kept value.
    """
    out = np.full(n, np.nan, np.float32)
    inside = (x >= x_from + edge_px) & (x <= x_to - edge_px) & np.isfinite(v)
    if np.count_nonzero(inside) < 2:
        return out
    t = (x[inside] - x0) / px_per_s
    v = v[inside]
    tk = np.arange(n) / fs
    lo = max((x_from - x0) / px_per_s, t[0] - (edge_px + 1.0) / px_per_s)
    hi = min((x_to - x0) / px_per_s, t[-1] + (edge_px + 1.0) / px_per_s)
    want = (tk >= lo) & (tk < hi)
    if not want.any():
        return out
    est = np.interp(tk[want], t, v)
    # a short gap in the ink (a faint stroke) is bridged: a missing sample costs the
    # score more than an interpolated one; a long one (no trace there) is not
    j = np.clip(np.searchsorted(t, tk[want]), 1, t.size - 1)
    gap = t[j] - t[j - 1]
    est[(gap > max_gap_s) & (tk[want] > t[0]) & (tk[want] < t[-1])] = np.nan
    out[want] = est
    return out
