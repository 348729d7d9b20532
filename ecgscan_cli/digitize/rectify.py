"""Page rectification: the trace rows' lines and ends as a quadrilateral, mapped to a rectangle.

A phone held at an angle sees the printout in perspective: rows slant by different angles
and shrink towards the far edge, which no single rotation undoes. Straight lines stay
straight, though, and a printout's rows are parallel baselines whose 10 s start and end
on two vertical lines. So TraceNet's trace map is cut into vertical strips; in each, the
rows are the peaks of the ink profile; peaks linked across strips give each row's line
(least squares); each row's first and last ink along its line give its ends, and lines
through the ends give the left and right sides. The first and last rows' lines and the two
sides meet in four corners, and the homography from them to a rectangle (the rows' mean
length wide, their spacing kept) undoes the perspective; a curl stays for the pipeline's
grid following. The page's own outline is not needed (a photo may cut it off).

Nothing is done (None) where the rows are close to parallel, level and even (a scan, or a
keystone small enough for the pipeline's grid following), or where fewer than two rows
with clear ends are found.
"""

from __future__ import annotations

import numpy as np

_INK = 0.3
_STRIPS = 24
_MIN_SKEW = 0.06             # corner-angle (rad) or side-ratio (log) departure below which nothing is done:
                             # baseline wander alone tilts a straight page's rows (28 of 30 synthetic
                             # straight pages read below 0.06, median 0.015)
_MAX_SKEW = 0.6              # beyond this the lines are not a page's rows


class _Frame:
    """Ink pixels in a frame turned by the page's overall rotation: u along the rows, v across."""

    def __init__(self, trace: np.ndarray):
        from ecgscan_cli.digitize.geometry import estimate_rotation

        h, w = trace.shape
        ys, xs = np.nonzero(trace > _INK)
        self.centre = np.array([w / 2.0, h / 2.0])
        th = np.deg2rad(estimate_rotation(trace) or 0.0)
        self.c, self.s = float(np.cos(th)), float(np.sin(th))
        dx, dy = xs + 0.5 - self.centre[0], ys + 0.5 - self.centre[1]
        self.u = dx * self.c + dy * self.s
        self.v = -dx * self.s + dy * self.c
        self.size = float(max(h, w))

    def to_xy(self, u: float, v: float) -> np.ndarray:
        return self.centre + np.array([u * self.c - v * self.s, u * self.s + v * self.c])


def _strip_peaks(f: _Frame, strips: int) -> list[tuple[float, np.ndarray]]:
    """Per strip across the rows: (u centre, v of the ink profile's peaks, at least a row apart)."""
    from scipy import ndimage

    if f.u.size == 0:
        return []
    edges = np.linspace(f.u.min(), f.u.max() + 1e-6, strips + 1)
    v0 = int(np.floor(f.v.min()))
    nv = int(np.ceil(f.v.max())) - v0 + 1
    sigma = max(f.size / 120.0, 1.0)
    sep = f.size / 25.0                      # rows are further apart than this (12×1: ~1/15 of a page)
    out = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (f.u >= a) & (f.u < b)
        prof = ndimage.gaussian_filter1d(np.bincount((f.v[sel] - v0).astype(int), minlength=nv).astype(np.float64), sigma)
        if prof.max() <= 0:
            out.append(((a + b) / 2.0, np.zeros(0)))
            continue
        cand = np.flatnonzero((prof > np.roll(prof, 1)) & (prof >= np.roll(prof, -1)) & (prof > 0.3 * prof.max()))
        keep = []
        for k in cand[np.argsort(-prof[cand])]:            # strongest first, a row apart
            if all(abs(k - j) >= sep for j in keep):
                keep.append(k)
        out.append(((a + b) / 2.0, np.sort(np.asarray(keep, np.float64)) + v0 + 0.5))
    return out


def row_lines(f: _Frame, strips: int = _STRIPS) -> list[tuple[float, float]]:
    """(a, b) of each row's line v = a + b·u, top to bottom.

    Found from the strips showing the page's row count, then refitted to each strip's
    baseline: the median over its columns of where the row's ink sits in each column (the
    ink profile's peak leans towards tall waves, which would tilt the line)."""
    peaks = _strip_peaks(f, strips)
    counts = [p.size for _, p in peaks if p.size > 0]
    if not counts:
        return []
    n = int(np.bincount(counts).argmax())
    us = np.array([u for u, p in peaks if p.size == n])
    vs = np.array([p for _, p in peaks if p.size == n])
    if n < 2 or us.size < max(3, strips // 4):
        return []
    lines = [tuple(np.polyfit(us, vs[:, r], 1)[::-1]) for r in range(n)]
    spacing = float(np.median(np.diff([a for a, _ in lines])))
    edges = np.linspace(f.u.min(), f.u.max() + 1e-6, strips + 1)
    col = np.floor(f.u).astype(np.int64)
    col -= col.min()
    refined = []
    for a, b in lines:
        near = np.abs(f.v - (a + b * f.u)) < 0.4 * spacing
        cnt = np.bincount(col[near], minlength=col.max() + 1)
        centre = np.bincount(col[near], weights=f.v[near] - b * f.u[near], minlength=col.max() + 1)
        has = cnt > 0
        cu = np.flatnonzero(has) + f.u.min() + 0.5          # the columns' u (approximately)
        cv = centre[has] / cnt[has]                          # the ink's level, the line's slope removed
        su, sv = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (cu >= lo) & (cu < hi)
            if np.count_nonzero(sel) >= 5:
                su.append((lo + hi) / 2.0)
                sv.append(float(np.median(cv[sel])))
        if len(su) >= 3:
            db, da = np.polyfit(su, sv, 1)
            refined.append((float(da), float(b + db)))
        else:
            refined.append((float(a), float(b)))
    if len(refined) >= 3:
        # in perspective the rows' lines meet in one point, so the slope is linear in the
        # offset; fitting that line spreads one row's baseline wander over all of them
        a_r = np.array([a for a, _ in refined])
        beta, alpha = np.polyfit(a_r, [b for _, b in refined], 1)
        refined = [(float(a), float(alpha + beta * a)) for a in a_r]
    return refined


def _row_ends(f: _Frame, line: tuple[float, float], half: float) -> tuple[float, float] | None:
    """(first, last) u of the ink within ``half`` of the row's line: its longest run, gaps
    under 3 % of the page bridged."""
    a, b = line
    u = np.sort(f.u[np.abs(f.v - (a + b * f.u)) < half])
    if u.size < 20:
        return None
    runs = np.split(u, np.flatnonzero(np.diff(u) > 0.03 * f.size) + 1)
    longest = max(runs, key=lambda r: r[-1] - r[0])
    if longest[-1] - longest[0] < 0.2 * f.size:
        return None
    return float(longest[0]), float(longest[-1])


def _side(vs: np.ndarray, us: np.ndarray) -> tuple[float, float]:
    """(c, d) of u = c + d·v through the rows' ends; with a row off the line (a rhythm strip
    longer or shorter, a label) the line through the others."""
    if vs.size < 3:
        return float(np.median(us)), 0.0
    d, c = np.polyfit(vs, us, 1)
    res = np.abs(us - (c + d * vs))
    if res.max() > 3 * max(np.median(res), 1.0) and vs.size >= 4:
        keep = res < res.max()
        d, c = np.polyfit(vs[keep], us[keep], 1)
    return float(c), float(d)


def _meet(row: tuple[float, float], side: tuple[float, float]) -> tuple[float, float]:
    """Where v = a + b·u meets u = c + d·v."""
    a, b = row
    c, d = side
    v = (a + b * c) / (1.0 - b * d)
    return c + d * v, v


def page_quad(trace: np.ndarray) -> np.ndarray | None:
    """Corners (4×2, x y in map pixels; top-left, top-right, bottom-right, bottom-left) of the
    rows' quadrilateral: the first and last rows' lines cut by the lines through the rows' ends."""
    f = _Frame(trace)
    lines = row_lines(f)
    if len(lines) < 2:
        return None
    spacing = float(np.median(np.diff([a for a, _ in lines])))
    ends = [(line, _row_ends(f, line, 0.35 * spacing)) for line in lines]
    ends = [(line, e) for line, e in ends if e is not None]
    if len(ends) < 2:
        return None
    v0 = np.array([l[0] + l[1] * e[0] for l, e in ends])
    v1 = np.array([l[0] + l[1] * e[1] for l, e in ends])
    left = _side(v0, np.array([e[0] for _, e in ends]))
    right = _side(v1, np.array([e[1] for _, e in ends]))
    top, bottom = ends[0][0], ends[-1][0]
    return np.array([f.to_xy(*_meet(top, left)), f.to_xy(*_meet(top, right)),
                     f.to_xy(*_meet(bottom, right)), f.to_xy(*_meet(bottom, left))])


def quad_skew(corners: np.ndarray) -> float:
    """How far a quadrilateral is from a rectangle: the largest relative difference of
    opposite sides' lengths or departure of a corner from 90° (in radians)."""
    sides = np.roll(corners, -1, axis=0) - corners
    length = np.linalg.norm(sides, axis=1)
    ratio = max(abs(np.log(length[0] / length[2])), abs(np.log(length[1] / length[3])))
    cos = [abs(np.dot(sides[i], sides[i - 1])) / (length[i] * length[i - 1]) for i in range(4)]
    return float(max(ratio, np.arcsin(min(max(cos), 1.0))))


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3×3 H with dst ~ H · src for four point pairs (x, y)."""
    a = []
    for (x, y), (u, v) in zip(src, dst):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    sol = np.linalg.solve(np.asarray(a, np.float64), np.asarray(dst, np.float64).ravel())
    return np.append(sol, 1.0).reshape(3, 3)


def rectangle_for(corners: np.ndarray) -> np.ndarray:
    """The rectangle (4×2) a quad maps to: its sides' mean lengths, its top-left corner kept."""
    sides = np.linalg.norm(np.roll(corners, -1, axis=0) - corners, axis=1)
    width, height = (sides[0] + sides[2]) / 2.0, (sides[1] + sides[3]) / 2.0
    x0, y0 = corners[0]
    return np.array([[x0, y0], [x0 + width, y0], [x0 + width, y0 + height], [x0, y0 + height]])


def warp(a: np.ndarray, to_source: np.ndarray, shape: tuple[int, int], cubic: bool = False,
         fill: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """``a`` (H×W float map or H×W×3 uint8 image) resampled onto ``shape``, where output
    pixel (x, y) shows ``a`` at ``to_source`` · (x, y, 1) (bilinear, or bicubic with
    ``cubic``; outside: 0, or for an image ``fill``)."""
    from PIL import Image

    h, w = shape
    coeffs = tuple((to_source / to_source[2, 2]).ravel()[:8])
    if a.ndim == 2:
        img = Image.fromarray(np.asarray(a, np.float32), mode="F")
        resample = Image.Resampling.BICUBIC if cubic else Image.Resampling.BILINEAR
        out = img.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, resample, fillcolor=0.0)
        return np.asarray(out, np.float32)
    img = Image.fromarray(np.ascontiguousarray(a, np.uint8))
    resample = Image.Resampling.BICUBIC if cubic else Image.Resampling.BILINEAR
    out = img.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, resample, fillcolor=tuple(fill))
    return np.asarray(out)


def rectified_maps(trace: np.ndarray, grid: np.ndarray):
    """(trace, grid, H) with the page's perspective undone, or None where there is nothing to
    undo or no rows to go by. The output keeps the maps' size, the rows' quadrilateral
    centred in it; H maps its pixels (x, y, 1) to the input maps'."""
    corners = page_quad(trace)
    if corners is None or not np.isfinite(corners).all():
        return None
    skew = quad_skew(corners)
    if not _MIN_SKEW <= skew <= _MAX_SKEW:
        return None
    rect = rectangle_for(corners)
    h, w = trace.shape
    rect = rect - rect.mean(axis=0) + corners.mean(axis=0)
    to_source = homography(rect, corners)
    return warp(trace, to_source, (h, w)), warp(grid, to_source, (h, w)), to_source
