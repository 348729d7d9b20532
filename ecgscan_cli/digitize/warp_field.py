"""Where each point of a row's band lies on an evenly pitched grid.

A photographed, curled or crumpled page is stretched unevenly, and differently at every
height: a crumpled page shears a row by ~10 % over a few centimetres, so a QRS peak 15 mm
above the baseline moves by another millimetre than the baseline does. The grid's 5 mm
lines are a carrier: demodulating the grid map at their global period, along x for the
vertical lines and along y for the horizontal ones, leaves a slowly varying phase whose
drift is the paper's displacement, read over the whole band rather than along one line.

Box filters exactly one period long remove every harmonic of the lines (the 1 mm minor
lines too), so the phase needs running means (on the map block-averaged to ~10 px a
period) and a Gaussian over one period on a lattice a quarter period apart. The phase is
unwrapped in two parts: the band's mean per column, along the row (a photo's stretch adds
up to many periods there), plus each point's wrapped departure from it (less than half a
period across a band), so a patch without grid (a label, the trace's densest ink) cannot
slip a whole period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgscan_cli.digitize.geometry import MM_PER_MAJOR, has_grid

_MIN_STRENGTH = 0.25    # × the median carrier magnitude: weaker is not grid
_MIN_MOVE_PX = 2.0      # a straight page's phase wobbles by about a pixel where the trace hides the grid


@dataclass
class BandWarp:
    """Displacement fields (px) of one band's grid on a lattice (``step`` px apart, first
    row at ``top``, first column at ``left``): ``shift`` (vertical lines right of an even
    pitch) and ``lift`` (horizontal lines below it); either may be None."""
    top: float
    step: float
    shift: np.ndarray | None
    lift: np.ndarray | None
    left: float = 0.0

    def _at(self, field: np.ndarray, x, y) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        rows = np.clip((np.asarray(y, np.float64) - self.top) / self.step, 0, field.shape[0] - 1)
        cols = np.clip((np.asarray(x, np.float64) - self.left) / self.step, 0, field.shape[1] - 1)
        return map_coordinates(field, [rows, cols], order=1, mode="nearest")

    def to_even(self, x: np.ndarray, y: np.ndarray, x_ref: float, y_ref: float) -> tuple[np.ndarray, np.ndarray]:
        """Page points (px) moved to where they lie on an even grid, ``(x_ref, y_ref)`` fixed.
        A correction that moves the points by less than 2 px end to end is left out: on a
        straight page it is the phase's wobble where the trace hides the grid."""
        out = []
        for field, v in ((self.shift, x), (self.lift, y)):
            if field is not None and np.size(v):
                move = self._at(field, x, y) - self._at(field, [x_ref], [y_ref])[0]
                if np.ptp(move) > _MIN_MOVE_PX:
                    v = np.asarray(v, np.float64) - move
            out.append(v)
        return out[0], out[1]


def band_warp(grid: np.ndarray | None, top: int, bottom: int, ppm: tuple[float, float],
              seen: np.ndarray | None = None) -> BandWarp | None:
    """The displacement fields of the grid in rows ``top..bottom`` (``ppm``: the page's
    global px/mm, x and y); None without a grid. The grid two periods above and below the
    band is read too, so the filters see lines, not an edge, at the band's ends.

    ``seen`` (bool, the grid's shape): where the grid can show, not under the trace. The
    lines are then demodulated there only (their local mean taken out first, each filter
    divided by the share seen): the trace runs exactly where the field is sampled, and a
    blurred trace hiding the grid there wobbled a straight band's field by 0.7-1 mm along
    the row and 4 mm across it."""
    if not has_grid(grid):
        return None
    px, py = MM_PER_MAJOR * ppm[0], MM_PER_MAJOR * ppm[1]
    pad = int(np.ceil(2 * max(px, py)))
    lo, hi = max(top - pad, 0), min(max(bottom, top + 1) + pad, grid.shape[0])
    band = grid[lo:hi].astype(np.float32)
    shown = None if seen is None else seen[lo:hi].astype(np.float32)
    # the field is smooth over many periods: ~10 px a period is resolution enough (8 where
    # the grid is read where seen: five filters more, as fast as the plain field at 10)
    f = max(1, int(min(px, py) // (10 if seen is None else 8)))
    if f > 1:
        band = _block_mean(band, f)
        shown = None if shown is None else _block_mean(shown, f)
    if band.shape[0] < 8:
        return None
    step = max(1, int(min(px, py) / f // 4))
    fields = []
    for period, axis in ((px / f, 1), (py / f, 0)):
        phase = _phase_field(band, period, axis, step, shown)
        fields.append(None if phase is None else -phase * period * f / (2 * np.pi))
    if fields[0] is None and fields[1] is None:
        return None
    return BandWarp(lo + (f - 1) / 2, float(step * f), *fields, left=(f - 1) / 2)


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """Means of ``a``'s f×f blocks (the last partial ones dropped). Strided sums: 13× faster
    than a mean over a 4-D view's axes 1 and 3."""
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    a = a[:h, :w]
    cols = a[:, 0::f].copy()
    for i in range(1, f):
        cols += a[:, i::f]
    out = cols[0::f].copy()
    for i in range(1, f):
        out += cols[i::f]
    return out / (f * f)


def _box(p: np.ndarray, size: int, step: int = 1) -> np.ndarray:
    """Two box filters of ``size`` along the rows, the lattice's columns kept, then two down
    them (separable: the same numbers, a quarter less filtering)."""
    from scipy.ndimage import uniform_filter1d

    p = uniform_filter1d(uniform_filter1d(p, size, axis=1, mode="nearest"), size, axis=1, mode="nearest")
    p = p[:, ::step]
    return uniform_filter1d(uniform_filter1d(p, size, axis=0, mode="nearest"), size, axis=0, mode="nearest")


def _box1(p: np.ndarray, size: int) -> np.ndarray:
    """One box filter of ``size`` along each axis."""
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(uniform_filter1d(p, size, axis=1, mode="nearest"), size, axis=0, mode="nearest")


_MIN_SHOWN = 0.3    # share of a lattice point's surroundings seen: less tells nothing of the grid there


def _phase_field(band: np.ndarray, period: float, axis: int, step: int,
                 shown: np.ndarray | None = None) -> np.ndarray | None:
    """Phase of the lines across ``axis`` (1: vertical lines, 0: horizontal) on the lattice
    ``[::step, ::step]``, or None where the grid is too faint. ``shown``: the share of each
    pixel where the grid can show (:func:`band_warp`)."""
    from scipy.ndimage import gaussian_filter

    t = np.arange(band.shape[axis], dtype=np.float64)
    carrier = np.exp(-2j * np.pi * t / period).astype(np.complex64)
    carrier = carrier[None, :] if axis == 1 else carrier[:, None]
    size = max(3, int(round(period)))
    if shown is None:
        z, weights = band * carrier, None
    else:
        # a box one period long nulls the lines' mean only where it sees all of a period
        local = _box1(band * shown, size) / np.maximum(_box1(shown, size), 1e-3)
        z, weights = (band - local) * shown * carrier, shown
    parts = [gaussian_filter(_box(p, size, step)[::step], period / step, mode="nearest")
             for p in ((z.real, z.imag) if weights is None else (z.real, z.imag, weights))]
    zs = parts[0] + 1j * parts[1]
    if weights is None:
        mean = zs.mean(axis=0)                                   # the band's, per column
    else:
        mean = zs.sum(axis=0) / np.maximum(parts[2].sum(axis=0), 1e-3)
        zs = np.where(parts[2] > _MIN_SHOWN, zs / np.maximum(parts[2], 1e-3), 0.0)
    mag = np.abs(mean)
    if not np.any(mag > 0):
        return None
    ok = mag > _MIN_STRENGTH * np.median(mag[mag > 0])
    if np.count_nonzero(ok) < 0.5 * ok.size:
        return None
    cols = np.arange(mean.size, dtype=np.float64)
    mean_phase = np.interp(cols, cols[ok], np.unwrap(np.angle(mean[ok])))
    return mean_phase[None, :] + np.angle(zs * np.conj(mean)[None, :])
