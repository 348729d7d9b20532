"""Page geometry from the probability maps: deskew angle and grid pitch (pixels per mm).

Deskew: the ink of a printout (grid lines, trace baselines) runs along the page's axes,
so the projection of the ink onto the page's vertical axis is sharpest (largest sum of
squares of its histogram) when the angle is right. The sharpness is searched over
±15° coarse-to-fine on a subsample of the ink pixels, in bins scaled to the map's size
so that the same steps work at any resolution.

Grid pitch: the column (row) profile of the grid map is periodic in the 1 mm minor and
5 mm major line spacing. The strongest spectral peak, and the lowest frequency whose
harmonics up to it are all present, give the fundamental period; a 5th harmonic standing
above the 4th and 6th means minor lines between major ones, otherwise how many periods
the page spans tells 1 mm lines from 5 mm ones (a coarse-only grid). The period is then
refined on the highest clear harmonic, to a few hundredths of a percent: a 0.5 % error
in the time axis already costs decibels at the end of a 10 s strip.
"""

from __future__ import annotations


import numpy as np

MAX_ROTATION_DEG = 15.0
_INK = 0.3                 # map probability counted as ink
_MIN_INK_PIXELS = 200
_COARSE_POINTS = 12000
_FINE_POINTS = 60000
MM_PER_MAJOR = 5.0
_SIDEWAYS_RATIO = 1.5


# ---------------------------------------------------------------- rotation

def _ink_points(m: np.ndarray, n: int):
    ys, xs = np.nonzero(m > _INK)
    if ys.size < _MIN_INK_PIXELS:
        return None
    if ys.size > n:  # a deterministic, evenly spread subsample
        keep = np.linspace(0, ys.size - 1, n).astype(np.int64)
        ys, xs = ys[keep], xs[keep]
    w = m[ys, xs].astype(np.float64)
    h, wd = m.shape
    return xs - wd / 2.0, ys - h / 2.0, w


def _sharpness(xs, ys, w, angles_deg: np.ndarray, bin_px: float, chunk: int = 32) -> np.ndarray:
    """Sum of squared histogram counts of the ink projected on the axis at each angle."""
    out = np.empty(angles_deg.size)
    for a0 in range(0, angles_deg.size, chunk):
        th = np.deg2rad(angles_deg[a0:a0 + chunk])[:, None]
        # the y coordinate of each point in a frame rotated by th (image coordinates, y down)
        yr = (ys[None, :] * np.cos(th) - xs[None, :] * np.sin(th)) / bin_px
        b = np.floor(yr).astype(np.int64)
        b -= b.min(axis=1, keepdims=True)
        nb = int(b.max()) + 1
        flat = (b + np.arange(th.shape[0])[:, None] * nb).ravel()
        hist = np.bincount(flat, weights=np.broadcast_to(w, yr.shape).ravel(), minlength=th.shape[0] * nb)
        out[a0:a0 + chunk] = (hist.reshape(th.shape[0], nb) ** 2).sum(axis=1)
    return out


def estimate_rotation(m: np.ndarray, max_deg: float = MAX_ROTATION_DEG) -> float | None:
    """Angle (degrees) by which the page's horizontal lines are tilted, None if too little ink.

    Positive means the lines fall to the right in image coordinates (y down);
    :func:`deskew` rotates by the opposite amount.
    """
    extent = float(max(m.shape))
    pts = _ink_points(m, _COARSE_POINTS)
    if pts is None:
        return None
    # coarse: 0.1° steps, bins of 1/640 of the map (a line smears by < 1 bin over ±0.05°)
    angles = np.arange(-max_deg, max_deg + 1e-9, 0.1)
    s = _sharpness(*pts, angles, extent / 640.0)
    best = float(angles[int(np.argmax(s))])
    # fine: 0.01° steps within ±0.15°, bins of 1/2560 of the map (about half a pixel)
    pts = _ink_points(m, _FINE_POINTS)
    angles = best + np.arange(-0.15, 0.15 + 1e-9, 0.01)
    s = _sharpness(*pts, angles, max(extent / 2560.0, 0.35))
    k = int(np.argmax(s))
    best = float(angles[k])
    if 0 < k < angles.size - 1:  # parabola through the top three
        den = s[k - 1] - 2 * s[k] + s[k + 1]
        if den < 0:
            best += 0.01 * 0.5 * (s[k - 1] - s[k + 1]) / den
    return best


def rows_run_sideways(trace: np.ndarray) -> bool:
    """Whether the trace rows run up and down the map (a landscape printout photographed
    in portrait, or scanned turned): the ink's projection is sharper across the image's
    x axis (±15°) than across its y axis. Measured on TraceNet's maps of 24 pages in four
    conditions: ratio ≤ 0.46 upright, ≥ 4.2 turned by 90°."""
    pts = _ink_points(trace, _COARSE_POINTS)
    if pts is None:
        return False
    bin_px = float(max(trace.shape)) / 640.0
    level = _sharpness(*pts, np.arange(-MAX_ROTATION_DEG, MAX_ROTATION_DEG + 1e-9, 0.5), bin_px).max()
    turned = _sharpness(*pts, np.arange(90 - MAX_ROTATION_DEG, 90 + MAX_ROTATION_DEG + 1e-9, 0.5), bin_px).max()
    return bool(turned > _SIDEWAYS_RATIO * level)


_STEEP_TILT_DEG = 45.0      # beyond this the rows run closer to up and down (rows_run_sideways)
_STEEP_CLEAR = 1.3          # the steep angle's sharpness over the best within the deskew's reach


def steep_tilt(trace: np.ndarray) -> float:
    """Degrees (within ±45°, to 0.05°) by which the trace rows tilt beyond what :func:`deskew`
    searches (±15°), or 0.0: a photo taken with the phone turned 20-45° (or a page placed
    askew), where the rows' angle, searched in 1° steps, is clearly sharper than any
    within deskew's reach. Positive: the rows fall to the right, as :func:`estimate_rotation`."""
    pts = _ink_points(trace, _COARSE_POINTS)
    if pts is None:
        return 0.0
    angles = np.arange(-_STEEP_TILT_DEG, _STEEP_TILT_DEG + 1e-9, 1.0)
    s = _sharpness(*pts, angles, float(max(trace.shape)) / 640.0)
    k = int(np.argmax(s))
    within = np.abs(angles) <= MAX_ROTATION_DEG
    if abs(angles[k]) <= MAX_ROTATION_DEG or s[k] < _STEEP_CLEAR * s[within].max():
        return 0.0
    # to 0.05° (bins of half a pixel's scale): a page levelled to that needs no deskew
    # of its maps after, one resampling fewer
    pts = _ink_points(trace, _FINE_POINTS)
    fine = angles[k] + np.arange(-1.0, 1.0 + 1e-9, 0.05)
    return float(fine[int(np.argmax(_sharpness(*pts, fine, max(float(max(trace.shape)) / 2560.0, 0.35))))])


def rotate_map(m: np.ndarray, angle_deg: float, order: int = 1) -> np.ndarray:
    """``m`` rotated so that lines tilted by ``angle_deg`` become horizontal (canvas grown to
    fit, as :func:`rotation_to_source` says; outside the map: 0).

    ``order=3`` (bicubic) keeps a thin trace sharp, which the sub-pixel vectoriser needs;
    the grid only has to keep its period, and bilinear is faster. PIL resamples 3-4× faster
    than scipy's cubic spline did; its bicubic moves a smooth stroke by up to 0.09 px with
    the sub-pixel phase (0.025 mm at the working resolution), and fold 7's pages read the
    same to ±0.03 dB (docs/digitize.md). Its bilinear is scipy's to 1e-6.
    """
    from ecgscan_cli.digitize.rectify import warp

    if abs(angle_deg) < 1e-6:
        return m
    to_source, shape = rotation_to_source(angle_deg, m.shape)
    return np.clip(warp(m, centred(to_source), shape, cubic=order > 1), 0.0, 1.0)


def centred(to_source: np.ndarray) -> np.ndarray:
    """``to_source`` (3×3, between pixel indices, as :func:`rotation_to_source` gives it)
    for :func:`~.rectify.warp`: PIL samples the source at (x + 0.5, y + 0.5) → H → less
    0.5, so that pixel centres map to pixel centres, not corners to corners."""
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return half @ to_source @ np.linalg.inv(half)


def rotation_to_source(angle_deg: float, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """(3×3 H, (h, w)): :func:`rotate_map`'s output canvas for a map of ``shape``, and the
    homography from its pixels (x, y, 1) to the input map's.

    Output pixels map to input ones as (x, y) = R · (x', y') + offset about the two
    canvases' centres, R = [[c, −s], [s, c]] (scipy's ``ndimage.rotate`` convention)."""
    h, w = shape
    if abs(angle_deg) < 1e-6:
        return np.eye(3), (h, w)
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    rot = np.array([[c, -s], [s, c]])
    in_shape = np.array([w, h], float)
    bounds = rot @ np.array([[0, 0, in_shape[0], in_shape[0]], [0, in_shape[1], 0, in_shape[1]]])
    out_w, out_h = (np.ptp(bounds, axis=1) + 0.5).astype(int)
    offset = (in_shape - 1) / 2 - rot @ ((np.array([out_w, out_h]) - 1) / 2)
    return np.array([[c, -s, offset[0]], [s, c, offset[1]], [0.0, 0.0, 1.0]]), (int(out_h), int(out_w))


def deskew(trace: np.ndarray, grid: np.ndarray | None, *, min_deg: float = 0.03,
           max_deg: float = MAX_ROTATION_DEG) -> tuple[np.ndarray, np.ndarray | None, float]:
    """(trace, grid, angle): both maps straightened; the angle comes from the grid when it has ink."""
    angle = estimate_rotation(grid, max_deg) if grid is not None and has_grid(grid) else None
    # the grid's angle is the more precise; but where its fine lines blur into a carpet (a
    # photo at ~90 dpi, a textured background) the image's own frame wins its search (its
    # edges, a network's padding, a letterbox): a grid level to 0.05° while the rows tilt
    # by more than 0.3° is that frame, and the rows' own angle is taken. (The rows' search
    # costs as much as the grid's: it runs only where its answer can count.)
    if angle is None or abs(angle) < 0.05:
        own = estimate_rotation(trace, max_deg)
        if angle is None or (own is not None and abs(own) > 0.3):
            angle = own
    if angle is None or abs(angle) < min_deg:
        return trace, grid, 0.0
    return rotate_map(trace, angle, order=3), (None if grid is None else rotate_map(grid, angle)), float(angle)


def has_grid(grid: np.ndarray | None) -> bool:
    """Whether the grid map holds enough ink to be a grid: even a coarse-only grid of thin
    lines covers several percent of the page; stray marks and a trace's fringe cover less."""
    return grid is not None and int(np.count_nonzero(grid > _INK)) >= max(_MIN_INK_PIXELS, grid.size // 100)


# ---------------------------------------------------------------- grid pitch

def _detrended(profile: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """``profile`` less its running mean (over a quarter of it, 9-129 samples), weighted by
    ``weight`` where given (samples of weight 0 do not count)."""
    from scipy.ndimage import uniform_filter1d

    p = np.asarray(profile, np.float64)
    size = max(9, min(p.size // 4, 129))
    if weight is None:
        return p - uniform_filter1d(p, size=size, mode="nearest")
    return p - uniform_filter1d(p * weight, size=size, mode="nearest") / np.maximum(
        uniform_filter1d(np.asarray(weight, np.float64), size=size, mode="nearest"), 1e-9)


def _spectrum_peak(p: np.ndarray, period: float, span: float = 0.04) -> tuple[float, float]:
    """(period, magnitude) of the Fourier peak nearest ``period`` (searched within ±span)."""
    x = np.arange(p.size, dtype=np.float64)
    freqs = (1.0 / period) * (1.0 + np.linspace(-span, span, 81))
    mags = np.abs(np.exp(-2j * np.pi * np.outer(freqs, x)) @ p)
    k = int(np.argmax(mags))
    f = freqs[k]
    if 0 < k < freqs.size - 1:
        den = mags[k - 1] - 2 * mags[k] + mags[k + 1]
        if den < 0:
            f += (freqs[1] - freqs[0]) * 0.5 * (mags[k - 1] - mags[k + 1]) / den
    return 1.0 / f, float(mags[k])


def grid_pitch(profile: np.ndarray, min_period: float = 2.0) -> tuple[float, bool] | None:
    """(pixels per mm, whether 1 mm lines were seen) from a grid profile, None if not periodic.

    ``profile``: the grid map summed across the lines' direction (columns for x).
    """
    prof = np.asarray(profile, np.float64)
    on = np.flatnonzero(prof > 0.05 * (prof.max() if prof.size else 0))
    if on.size < 16:
        return None
    p = _detrended(prof[on[0]:on[-1] + 1])
    n = p.size
    if n / 6.0 <= min_period * 1.5:
        return None
    pad = 8
    mag = np.abs(np.fft.rfft(p * np.hanning(n), n=pad * n))
    freqs = np.fft.rfftfreq(pad * n)
    band = (freqs >= 6.0 / n) & (freqs <= 1.0 / min_period)
    if not band.any():
        return None
    floor = float(np.median(mag[band]))
    k_peak = int(np.flatnonzero(band)[np.argmax(mag[band])])
    top = float(mag[k_peak])
    if top < 8.0 * floor:
        return None
    f_peak = freqs[k_peak]

    def strength(f):  # the local maximum within a bin of the transform's resolution
        i = int(round(f * pad * n))
        return float(mag[max(i - pad // 2, 0):i + pad // 2 + 1].max()) if i < mag.size else 0.0

    def present(f):
        return strength(f) > max(5.0 * floor, 0.08 * top)

    # the fundamental: the lowest frequency f_peak/m whose harmonics 1..m are all present
    m = 1
    for cand in range(2, 11):
        f0 = f_peak / cand
        if f0 < 6.0 / n:
            break
        if all(present(j * f0) for j in range(1, cand)):
            m = cand
    # refine on the highest harmonic that stands clear: a finer ruler over the same span
    j = max((j for j in range(1, 11) if j / (m / f_peak) <= 1.0 / min_period and present(j * f_peak / m)),
            default=m)
    period = _refine_period(p * np.hanning(n), m / f_peak / j) * j
    # 1 mm lines show as a 5th harmonic that stands above the 4th and 6th
    if m >= 5 and m % 5 == 0:
        f5 = 5.0 / period
        if strength(f5) > 1.5 * max(strength(4.0 / period), strength(6.0 / period)):
            return period / MM_PER_MAJOR, True
    # a single kind of line: 1 mm or 5 mm apart? a page spans ~280 mm
    if n / period > 125.0:
        return period, True
    return period / MM_PER_MAJOR, False


def grid_pitch_near(profile: np.ndarray, ppm_guess: float, tol: float = 0.15) -> float | None:
    """Pixels per mm of a grid profile whose 5 mm lines lie within ±``tol`` of ``5 × ppm_guess``
    px apart, or None where no line stands there.

    A second opinion for :func:`grid_pitch` once the rows' length says roughly what the
    scale is: on a blurred photo the shading raises the low end of the spectrum, and the
    search for the fundamental can take a sub-harmonic of the 5 mm lines for them."""
    prof = np.asarray(profile, np.float64)
    on = np.flatnonzero(prof > 0.05 * (prof.max() if prof.size else 0))
    period = MM_PER_MAJOR * ppm_guess
    if on.size < 16 or on[-1] + 1 - on[0] < 6 * period:
        return None
    p = _detrended(prof[on[0]:on[-1] + 1])
    n = p.size
    pad = 8
    mag = np.abs(np.fft.rfft(p * np.hanning(n), n=pad * n))
    freqs = np.fft.rfftfreq(pad * n)
    band = (freqs >= 6.0 / n) & (freqs <= 0.5)
    near = band & (np.abs(freqs * period - 1.0) <= tol)
    if not near.any():
        return None
    k = int(np.flatnonzero(near)[np.argmax(mag[near])])
    # a line, not the spectrum's slope: a local maximum standing well above the floor
    if not (0 < k < mag.size - 1 and mag[k] >= mag[k - 1] and mag[k] >= mag[k + 1]
            and mag[k] > 5.0 * float(np.median(mag[band]))):
        return None
    return _refine_period(p * np.hanning(n), 1.0 / freqs[k]) / MM_PER_MAJOR


def _refine_period(p: np.ndarray, period: float) -> float:
    per, _ = _spectrum_peak(p, period, span=0.01)
    return per


def grid_px_per_mm(grid: np.ndarray | None) -> tuple[float | None, float | None]:
    """(x, y) pixels per mm of a (deskewed) grid map; None on an axis without a periodic grid."""
    if not has_grid(grid):
        return None, None
    gx = grid_pitch(grid.sum(axis=0))
    gy = grid_pitch(grid.sum(axis=1))
    return (None if gx is None else gx[0]), (None if gy is None else gy[0])


# ---------------------------------------------------------------- local x scale

def grid_shift(grid: np.ndarray | None, top: int, bottom: int, ppm_x: float,
               seen: np.ndarray | None = None) -> np.ndarray | None:
    """Per column, how far (px) the grid's vertical lines in rows top..bottom lie right of
    where an even pitch of ``ppm_x`` puts them; None where the grid is too faint to say.

    A page photographed at an angle, curled or warped is stretched unevenly along a row, so
    a single px/mm misplaces the samples by up to a few mm. The 5 mm lines' phase, read by
    complex demodulation of the band's grid profile at their global period, follows the
    stretch: ``x - (shift(x) - shift(x0))`` is where ``x`` would lie on an even grid.

    ``seen`` (bool, the grid's shape): where the grid can show, not under the trace. Each
    column then counts by the share of its pixels seen (normalised convolution), so the
    grid hidden under a QRS does not read as a gap between lines; unmasked, that moved a
    blurred page's phase by up to 2 mm along a row and set off the band's warp field.
    """

    if not has_grid(grid):
        return None
    band, _, weight = _seen_band(grid, top, bottom, seen)
    p = band.sum(axis=0) / np.maximum(weight, 1e-9) * (weight > 0)      # as if the whole column were seen
    p = _detrended(p, weight) * weight
    period = MM_PER_MAJOR * ppm_x
    x = np.arange(p.size, dtype=np.float64)
    found = _line_phase(p * np.exp(-2j * np.pi * x / period), period, weight)
    if found is None:
        return None
    ok, phase = found
    return np.interp(x, x[ok], -phase * period / (2 * np.pi))


_MIN_SEEN = 0.3     # of a column's pixels in the band: less seen tells nothing of the grid there


def _seen_band(grid: np.ndarray, top: int, bottom: int, seen: np.ndarray | None):
    """(the band's grid, unseen pixels zeroed; the band's mask of pixels seen; per column
    the share of its pixels seen, 0 below :data:`_MIN_SEEN`): everything seen without ``seen``."""
    band = grid[max(top, 0):max(bottom, top + 1)].astype(np.float64)
    if seen is None:
        return band, np.ones(band.shape, bool), np.ones(band.shape[1])
    s = seen[max(top, 0):max(bottom, top + 1)]
    share = s.mean(axis=0)
    return np.where(s, band, 0.0), s, np.where(share >= _MIN_SEEN, share, 0.0)


def _line_phase(z: np.ndarray, period: float, weight: np.ndarray):
    """Complex demodulation of the grid lines: ``z`` (signal × e^(−2πi·t/period), each sample
    already multiplied by its ``weight``) smoothed over two periods, divided by the smoothed
    weight; (where the lines are clear enough, their unwrapped phase there) or None."""
    from scipy.ndimage import gaussian_filter1d

    sigma = 2.0 * period
    ws = gaussian_filter1d(np.asarray(weight, np.float64), sigma)
    known = ws > 0.2
    zs = gaussian_filter1d(z.real, sigma) + 1j * gaussian_filter1d(z.imag, sigma)
    zs = np.where(known, zs / np.maximum(ws, 1e-9), 0.0)
    mag = np.abs(zs)
    ok = (mag > 0.25 * np.median(mag[mag > 0])) & known if np.any(mag > 0) else np.zeros(z.size, bool)
    if np.count_nonzero(ok) < 0.5 * z.size:
        return None
    return ok, np.unwrap(np.angle(zs[ok]))


def grid_lift(grid: np.ndarray | None, top: int, bottom: int, ppm_y: float,
              seen: np.ndarray | None = None) -> np.ndarray | None:
    """Per column, how far (px, down) the grid's horizontal lines in rows top..bottom lie
    from where they lie on average; None where the grid is too faint to say.

    The vertical counterpart of :func:`grid_shift` (``seen`` as there): a row of a tilted,
    keystoned or curled page has a slanted or bent baseline, which this follows (the 5 mm
    lines' phase per column, smoothed along the row).
    """

    if not has_grid(grid):
        return None
    band, shown, weight = _seen_band(grid, top, bottom, seen)
    if band.shape[0] < 8:
        return None
    mean = band.sum(axis=0) / np.maximum(shown.sum(axis=0), 1)
    band = np.where(shown, band - mean[None, :], 0.0)
    period = MM_PER_MAJOR * ppm_y
    y = np.arange(band.shape[0], dtype=np.float64)
    w = np.exp(-2j * np.pi * y / period)
    z = (w @ band) * (weight > 0)                  # per column
    found = _line_phase(z, period, weight)
    if found is None:
        return None
    ok, phase = found
    x = np.arange(z.size, dtype=np.float64)
    lift = -phase * period / (2 * np.pi)
    return np.interp(x, x[ok], lift - np.median(lift))
