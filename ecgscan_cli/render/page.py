"""The numpy page rasteriser: a clean printout as uint8 ``H × W × 3``.

Traces are drawn by the one rasteriser of :mod:`ecgscan_cli.render.raster` (column spans,
ink density scaled to the stroke's true area), evaluated sparsely: only the pixels inside
each column's widened span are touched. Below the 200-dpi reference resolution a page is
drawn as the reference page would look area-downscaled (sub-columns, a one-reference-pixel
pen, and the static page drawn finer and box-filtered), which is also what the batch
renderer draws, so a page and a batch render of the same size agree within a grey level.

The page background (grid, calibration pulses, lead labels, speed/gain) is built once
per style and dpi and copied; text is rasterised once per string.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.render.layout import (
    GRID_STYLES, INK, LayoutOptions, PageGeometry, PixelMap, layout_metadata, page_geometry, page_pixel_map,
    page_size_px,
)
from ecgscan_cli.render.raster import REF_DPI, column_plan, coverage, ink_density, spans, trace_sampling

__all__ = ["GRID_STYLES", "INK", "render_page", "draw_polylines", "draw_polyline", "background",
           "scaled_background", "page_background", "static_dpi", "row_polylines", "trace_lines", "check_signal",
           "calibration_pulse_mm"]

_PIXEL = np.dtype((np.void, 3))  # one RGB pixel as a single item: gathers/scatters 3 bytes at once


def draw_polyline(page: np.ndarray, xs, ys, width: float, colour=INK, k: int = 1, pen: float = 1.0) -> None:
    """Composite an antialiased polyline (pixel coordinates, xs non-decreasing) onto uint8 ``page``."""
    draw_polylines(page, [(xs, ys)], width, colour, k, pen)


def draw_polylines(page: np.ndarray, lines, width: float, colour=INK, k: int = 1, pen: float = 1.0) -> None:
    """Composite several antialiased polylines ``[(xs, ys), ...]`` onto uint8 ``page``.

    ``k`` sub-columns per pixel column and a ``pen`` of that many pixels: see
    :func:`ecgscan_cli.render.raster.trace_sampling` (the defaults draw a full-resolution page).

    Lines whose columns all lie inside the page and whose rows overlap no other packed
    line are laid side by side on a virtual page several pages wide (line k shifted by
    k·W, a NaN gap between them) and drawn in one vectorised pass: a page's four trace
    rows cost one pass instead of four. The rest (lines leaving the page, or crossing
    another line's rows, whose pixels must be composited twice) are drawn one by one.
    """
    h, w = page.shape[:2]
    if not page.flags.c_contiguous:
        raise ValueError("draw_polylines needs a C-contiguous page")
    packed_x, packed_y, packed_rows, alone = [], [], [], []
    for xs, ys in lines:
        xs = np.asarray(xs, np.float64)
        ys = np.asarray(ys, np.float64)
        fin = np.isfinite(ys)
        if xs.size < 1 or not fin.any():
            continue
        if xs.size == 1:
            xs, ys = np.r_[xs, xs], np.r_[ys, ys]
        rows = (math.floor(ys[fin].min() - width), math.ceil(ys[fin].max() + width))  # pixel rows it may touch
        if xs[0] >= 0 and xs[-1] < w and all(rows[1] <= r[0] or rows[0] >= r[1] for r in packed_rows):
            n = len(packed_rows)
            packed_x += [xs + n * w, [(n + 1) * w]]
            packed_y += [ys, [np.nan]]
            packed_rows.append(rows)
        else:
            alone.append((xs, ys))
    if packed_x:
        _draw_columns(page, np.concatenate(packed_x), np.concatenate(packed_y), width, colour,
                      len(packed_rows), k, pen)
    for xs, ys in alone:
        _draw_columns(page, xs, ys, width, colour, 1, k, pen)


def _draw_columns(page, xs, ys, width, colour, bands: int, k: int, pen: float) -> None:
    """The rasteriser's pass for one polyline on a virtual page ``bands`` pages wide.

    Sparse: only the pixels inside each column's widened span are evaluated (a flat trace
    touches ~3 rows per column), so the cost is independent of the band's height.
    """
    h, w = page.shape[:2]
    fin = np.isfinite(ys)
    c0 = max(int(math.floor(xs[fin].min())), 0)
    c1 = min(int(math.ceil(xs[fin].max())) + 1, w * bands)
    if c1 <= c0:
        return
    plan = column_plan(xs, c0, c1 - c0, k)
    lo, hi = spans(ys, plan)
    density, inked = ink_density(lo, hi, width, pen, k)
    a = np.where(inked, lo - width / 2, 0.0).reshape(-1, k)
    b = np.where(inked, hi + width / 2, 0.0).reshape(-1, k)
    density = density.reshape(-1, k)
    any_ink = inked.reshape(-1, k).any(axis=1)
    if not any_ink.any():
        return
    cols = np.flatnonzero(any_ink)
    a, b, density = a[cols], b[cols], density[cols]
    inked = inked.reshape(-1, k)[cols]
    # rows of each column: the union of its sub-columns' spans (per-sub-column slices: numpy's
    # reductions over a short last axis are slow)
    top = functools.reduce(np.minimum, (np.where(inked[:, j], a[:, j], np.inf) for j in range(k)))
    bottom = functools.reduce(np.maximum, (np.where(inked[:, j], b[:, j], -np.inf) for j in range(k)))
    r_a = np.clip(np.floor(top), 0, h).astype(np.int64)
    r_b = np.clip(np.ceil(bottom), 0, h).astype(np.int64)
    m = r_b - r_a
    total = int(m.sum())
    if total <= 0:
        return
    rep = np.repeat(np.arange(cols.size), m)
    rows = r_a[rep] + (np.arange(total) - np.repeat(np.cumsum(m) - m, m))
    # the pixel's ink is the mean over its sub-columns
    alpha = coverage(rows, a[:, 0][rep], b[:, 0][rep]) * density[:, 0][rep]
    for j in range(1, k):
        alpha += coverage(rows, a[:, j][rep], b[:, j][rep]) * density[:, j][rep]
    if k > 1:
        alpha /= k
    keep = alpha > 0
    page_cols = (cols + c0) % w  # virtual column → page column (band n starts at n·W)
    fi = rows[keep] * w + page_cols[rep[keep]]
    alpha = alpha[keep].astype(np.float32)[:, None]
    pixels = page.reshape(-1).view(_PIXEL)  # a view: page is C-contiguous
    px = pixels[fi].view(np.uint8).reshape(-1, 3).astype(np.float32)
    px += (np.asarray(colour, np.float32) - px) * alpha
    px += 0.5
    pixels[fi] = px.astype(np.uint8).view(_PIXEL).reshape(-1)


def _composite(page: np.ndarray, alpha: np.ndarray, r0: int, c0: int, colour) -> None:
    r1, c1 = r0 + alpha.shape[0], c0 + alpha.shape[1]
    region = page[r0:r1, c0:c1].astype(np.float32)
    a = alpha[..., None]
    region += (np.asarray(colour, np.float32) - region) * a
    page[r0:r1, c0:c1] = (region + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- text (glyphs rasterised once)

@functools.lru_cache(maxsize=512)
def text_mask(text: str, size_px: int) -> np.ndarray:
    """Alpha mask (float32, [h, w]) of ``text`` at a font height of ``size_px`` pixels."""
    from PIL import Image, ImageDraw

    font = _font(max(int(size_px), 4))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (max(right - left, 1) + 2, max(bottom - top, 1) + 2), 0)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, fill=255, font=font)
    m = np.asarray(img, np.float32) / 255.0
    m.setflags(write=False)
    return m


@functools.lru_cache(maxsize=32)
def _font(size_px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size_px)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def draw_text(page: np.ndarray, text: str, x: float, y: float, size_px: float, colour=INK) -> None:
    """Paste ``text`` with its top-left corner at pixel (x, y), clipped to the page."""
    if not text:
        return
    m = text_mask(text, int(round(size_px)))
    h, w = page.shape[:2]
    x0, y0 = int(round(x)), int(round(y))
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + m.shape[1], w), min(y0 + m.shape[0], h)
    if xb <= xa or yb <= ya:
        return
    _composite(page, m[ya - y0:yb - y0, xa - x0:xb - x0], ya, xa, colour)


# ---------------------------------------------------------------- background

def _line_profile(n: int, positions: np.ndarray, width: float) -> np.ndarray:
    """Coverage of pixels 0..n-1 by lines of ``width`` px centred at ``positions``."""
    cov = np.zeros(n + 4, np.float64)
    a = positions - width / 2
    b = positions + width / 2
    first = np.floor(a).astype(np.int64)
    for d in range(int(math.ceil(width)) + 2):
        c = first + d
        ov = np.clip(np.minimum(c + 1, b) - np.maximum(c, a), 0, 1)
        ok = (c >= 0) & (c < n)
        np.add.at(cov, c[ok], ov[ok])
    return np.clip(cov[:n], 0, 1)


def _grid(page: np.ndarray, geo: PageGeometry, pm: PixelMap, style) -> None:
    if style is None:
        return
    minor_c, major_c, minor_w, major_w = style
    h, w = page.shape[:2]
    xs_mm = np.arange(0.0, geo.width_mm + 1e-6, 1.0)
    ys_mm = np.arange(0.0, geo.height_mm + 1e-6, 1.0)
    img = page.astype(np.float32)
    for colour, step, lw in ((minor_c, 1, minor_w), (major_c, 5, major_w)):
        if colour is None:
            continue
        px = pm.x(xs_mm[::step])
        py = pm.y(ys_mm[::step])
        ax = _line_profile(w, px, max(lw * pm.sx, 0.2))
        ay = _line_profile(h, py, max(lw * pm.sy, 0.2))
        alpha = np.maximum(ax[None, :], ay[:, None]).astype(np.float32)[..., None]
        img += (np.asarray(colour, np.float32) - img) * alpha
    page[:] = (img + 0.5).astype(np.uint8)


def calibration_pulse_mm(geo: PageGeometry, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Polyline (x mm, y mm) of the 1 mV × 200 ms pulse left of ``row``."""
    o = geo.options
    pw = 0.2 * o.speed
    xa = geo.trace_x0_mm - (4.0 + pw) - 1.0
    x = np.array([xa, xa + 2, xa + 2, xa + 2 + pw, xa + 2 + pw, xa + 4 + pw])
    v = np.array([0, 0, 1, 1, 0, 0], np.float64)
    return x, geo.baselines_mm[row] - v * o.gain


def draw_static(page: np.ndarray, geo: PageGeometry, pm: PixelMap) -> None:
    """Grid, calibration pulses, lead labels and the speed/gain line."""
    o = geo.options
    _grid(page, geo, pm, GRID_STYLES[o.grid])
    lw = o.line_width_mm * (pm.sx + pm.sy) / 2
    pulses = [calibration_pulse_mm(geo, row) for row in range(len(geo.baselines_mm))]
    draw_polylines(page, [(pm.x(x), pm.y(y)) for x, y in pulses], lw)
    size = 3.5 * pm.sy
    if o.labels:
        for p in geo.panels:
            draw_text(page, p.lead, pm.x(p.x0_mm + 1.0), pm.y(p.y_mm - 12.0), size)
    foot_y = min(geo.panels[-1].bottom_mm + 1.0, geo.height_mm - 5.0)
    draw_text(page, f"{o.speed:g} mm/s   {o.gain:g} mm/mV", pm.x(geo.trace_x0_mm), pm.y(foot_y), 3.0 * pm.sy)


@functools.lru_cache(maxsize=16)
def background(options: LayoutOptions, dpi: float) -> np.ndarray:
    """The static page (read-only uint8 H×W×3) for these options at ``dpi``; built once."""
    geo = page_geometry(options)
    pm = page_pixel_map(geo, dpi)
    page = np.full((pm.height, pm.width, 3), 255, np.uint8)
    draw_static(page, geo, pm)
    page.setflags(write=False)
    return page


def static_dpi(geo: PageGeometry, width_px: int) -> float:
    """The dpi a static page ``width_px`` wide is drawn at before box-filtering down to it:
    about 4 source pixels per output pixel (plenty for an area filter), at most 200 dpi."""
    return float(min(REF_DPI, max(60.0, math.ceil(4.0 * width_px / geo.width_mm * 25.4))))


@functools.lru_cache(maxsize=64)
def scaled_background(options: LayoutOptions, height: int, width: int) -> np.ndarray:
    """The static page area-downscaled to ``height × width`` (read-only uint8): how the
    batch renderer's background and a page below 200 dpi are made; built once."""
    from PIL import Image

    geo = page_geometry(options)
    page = background(options, static_dpi(geo, width))
    small = np.asarray(Image.fromarray(page).resize((width, height), Image.BOX))
    small.setflags(write=False)
    return small


def page_background(options: LayoutOptions, dpi: float) -> np.ndarray:
    """The static page of a ``dpi`` render (read-only uint8): below the 200-dpi reference it is
    the reference page area-downscaled (as the batch renderer draws it), drawn directly otherwise."""
    if dpi >= REF_DPI:
        return background(options, float(dpi))
    h, w = page_size_px(page_geometry(options), dpi)
    return scaled_background(options, h, w)


# ---------------------------------------------------------------- traces

def row_polylines(geo: PageGeometry, signal: np.ndarray, fs: float):
    """Per row: sample indices into ``signal.reshape(-1)`` (−1 = gap) and x in mm."""
    n = signal.shape[-1]
    rows = []
    for r in range(len(geo.baselines_mm)):
        idx, xmm = [], []
        for p in (q for q in geo.panels if q.row == r):
            k0 = int(math.ceil(p.t_start * fs - 1e-9))
            k1 = min(int(math.floor(p.t_end * fs + 1e-9)), n - 1)
            if k1 < k0:
                continue
            k = np.arange(k0, k1 + 1)
            if idx:
                idx.append(np.array([-1]))
                xmm.append(np.array([p.x0_mm + (k[0] / fs - p.t_start) * geo.options.speed]))
            idx.append(p.lead_index * n + k)
            xmm.append(p.x0_mm + (k / fs - p.t_start) * geo.options.speed)
        rows.append((np.concatenate(idx), np.concatenate(xmm)))
    return rows


def trace_lines(geo: PageGeometry, pm: PixelMap, signal: np.ndarray, fs: float) -> list:
    """The four trace rows of ``signal`` [12, T] as pixel polylines ``[(xs, ys), ...]``."""
    flat = np.r_[signal.reshape(-1), np.nan]  # idx -1 → the NaN at the end
    return [(pm.x(xmm), pm.y(geo.baselines_mm[r] - flat[idx] * geo.options.gain))
            for r, (idx, xmm) in enumerate(row_polylines(geo, signal, fs))]


def check_signal(signal: np.ndarray, record_id: str = "") -> np.ndarray:
    s = np.asarray(signal, np.float64)
    what = f"record {record_id!r}: " if record_id else ""
    if s.ndim != 2 or s.shape[0] != 12:
        raise EcgscanError(f"{what}signal shape {s.shape}, expected (12, T)")
    if s.shape[1] < 2:
        raise EcgscanError(f"{what}signal has {s.shape[1]} samples")
    if np.isinf(s).any():
        raise EcgscanError(f"{what}signal contains infinite values")
    return s


def render_page(signal: np.ndarray, fs: float = canonical.FS, options: LayoutOptions | None = None,
                dpi: float = 200.0, header: str | None = None, ink=INK,
                return_meta: bool = True):
    """A clean printout of ``signal`` [12, T] mV → (uint8 H×W×3, layout metadata).

    Below 200 dpi the page is the 200-dpi page as an area filter would shrink it, exactly
    what ``render_batch`` draws at that size (within a grey level, text labels aside).
    """
    options = (options or LayoutOptions()).check()
    s = check_signal(signal)
    geo = page_geometry(options)
    pm = page_pixel_map(geo, dpi)
    page = page_background(options, float(dpi)).copy()
    draw_polylines(page, trace_lines(geo, pm, s, fs), options.line_width_mm * (pm.sx + pm.sy) / 2, ink,
                   *trace_sampling(pm.sx))
    text = header if (options.header and header) else None
    if text:
        draw_text(page, text, pm.x(geo.trace_x0_mm), pm.y(6.0), 4.0 * pm.sy)
    if not return_meta:
        return page
    return page, layout_metadata(geo, pm, dpi, s.shape[1], fs, header=text)
