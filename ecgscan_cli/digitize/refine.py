"""A sharper trace map at the image's own resolution, from its colours, where TraceNet points.

TraceNet runs at the working resolution (~90 dpi on a printed page) for speed; there a
QRS is a few pixels wide and the trace's centre is only known to a pixel, which costs
most of the error (measured: 96 % of it lies near the QRS complexes). The image itself
usually holds more: a 200–300 dpi scan resolves the stroke. So the network's map is
upsampled, widened by a couple of pixels and used as a gate, and inside it each pixel
scores by its colour:

* flat-fielded by the local paper colour (the brightest within a few mm), so shading and
  tinted paper read as paper;
* projected onto the direction from paper to ink, with the direction from paper to grid
  removed where the grid is coloured (red, pink, blue grid lines then score ~0 even where
  they cross the gate), plain darkness where grid and ink share a colour;
* squared, so that what blur spread around a stroke weighs less than the stroke.

The ink, grid and paper colours are read from the pixels the network is sure about, so
no colour is assumed. Blurred, noisy or low-resolution images gain nothing from this and
can lose; :func:`ecgscan_cli.digitize.image.digitize_image` drops this reading where it saw
a wider stroke than the working one (the image blurred beyond the working resolution),
keeps it where it saw a clearly thinner one (a sharp image) unless it breaks the lead
relations badly, and otherwise keeps whichever reading the lead relations agree with
better (:mod:`.consistency`; ``image._finer_standing``).
"""

from __future__ import annotations

import numpy as np

REFINE_LONG_SIDE = 2400       # at most this many pixels on the long side (a 200-dpi page is 2,200)
_GATE_PX = 2                  # how far past the network's ink the gate reaches (refined px)
_GATE_FROM, _GATE_TO = 0.1, 0.4
# the colour score is squared: a pixel that blur has half covered with ink scores a quarter,
# so a blurred stroke's flanks weigh less in its runs and edges (vectorize) and a stroke
# blurred into its neighbour parts from it sooner; measured on 44 fold-8 pages (aligned dB):
# power 1 / 1.5 / 2 / 3: paper 11.59 / 12.06 / 12.26 / 11.83, heavy 6.29 / 6.27 / 6.46 / —
_SCORE_POWER = 2.0


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = shape
    if a.shape[:2] == (h, w):
        return a.astype(np.float32)
    if a.ndim == 3:
        return np.stack([_resize(a[..., k], shape) for k in range(a.shape[-1])], -1)
    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))


def _paper(rgb: np.ndarray) -> np.ndarray:
    """The local paper colour at 1/4 scale (h/4 × w/4 × 3 in [0, 1]) of an H×W×3 uint8
    image: brightest within a few mm, smoothed. :func:`_at` reads it at full-scale pixels."""
    from scipy import ndimage

    from ecgscan_cli.digitize.filters import square_max

    h, w = rgb.shape[:2]
    small = rgb[::4, ::4].astype(np.float32) / 255.0
    size = max(3, int(round(max(h, w) / 440.0)) | 1)     # ~1 % of the long side, at 1/4 scale
    bright = square_max(small, size // 2)
    return ndimage.uniform_filter(bright, size=(5, 5, 1))


def _at(small: np.ndarray, shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``small`` (h×w×C) resized bilinearly to ``shape`` (pixel centres aligned, edges
    clamped, as PIL's upscaling does), at the pixels (ys, xs) only: the colour score is
    needed on the few percent of pixels near the trace, and a full-size copy of a smooth
    map costs more than the rest of the refinement (0.15 s on a 12-megapixel photo)."""
    h, w = small.shape[:2]

    def axis(i, n_in, n_out):
        u = np.clip((i + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
        i0 = np.minimum(u.astype(np.int64), n_in - 2) if n_in > 1 else np.zeros(u.shape, np.int64)
        return i0, np.minimum(i0 + 1, n_in - 1), (u - i0).astype(np.float32)[:, None]

    y0, y1, fy = axis(ys, h, shape[0])
    x0, x1, fx = axis(xs, w, shape[1])
    top = small[y0, x0] * (1 - fx) + small[y0, x1] * fx
    bottom = small[y1, x0] * (1 - fx) + small[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _ink_direction(dark: np.ndarray, trace: np.ndarray, grid: np.ndarray) -> np.ndarray | None:
    """Per-channel weights whose dot product with a pixel's darkness reads 1 for ink, ~0 for grid."""
    sure_ink = trace > 0.7
    if np.count_nonzero(sure_ink) < 50:
        return None
    ink = np.median(dark[sure_ink], axis=0).astype(np.float64)
    if ink @ ink < 0.01:
        return None
    v = ink
    sure_grid = (grid > 0.7) & (trace < 0.1)
    if np.count_nonzero(sure_grid) >= 50:
        g = np.median(dark[sure_grid], axis=0).astype(np.float64)
        if np.linalg.norm(g) > 0.05:
            u = g / np.linalg.norm(g)
            orth = v - (v @ u) * u
            if np.linalg.norm(orth) > 0.35 * np.linalg.norm(v):   # the colours differ enough
                v = orth
    return v / max(float(v @ ink), 1e-3)


def refine_maps(image: np.ndarray, trace: np.ndarray, grid: np.ndarray,
                long_side: int = REFINE_LONG_SIDE, to_maps: np.ndarray | None = None,
                maps_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(trace, grid) maps at the image's resolution (at most ``long_side``), or None when
    the image is no larger than the maps or the network found too little ink to learn its colour.

    ``to_maps``: for maps that were rectified (:func:`.rectify.rectified_maps`), the
    homography from their pixels to those of the network's maps (of ``maps_shape``, made
    from the whole image); the image is then rectified the same way at the finer scale.
    """
    from ecgscan_cli.digitize.image import to_working

    k = min(long_side, max(image.shape[:2])) / max(trace.shape)
    if k < 1.2:
        return None
    if to_maps is None:
        rgb = to_working(image, min(long_side, max(image.shape[:2])))
    else:
        from ecgscan_cli.digitize.rectify import warp

        mh, mw = maps_shape or trace.shape
        sx, sy = mw / image.shape[1], mh / image.shape[0]
        canvas = (int(round(trace.shape[0] * k)), int(round(trace.shape[1] * k)))
        to_image = np.diag([1.0 / sx, 1.0 / sy, 1.0]) @ to_maps @ np.diag([1.0 / k, 1.0 / k, 1.0])
        rgb = warp(image, to_image, canvas)
    h, w = rgb.shape[:2]
    trace_up, grid_up = _resize(trace, (h, w)), _resize(grid, (h, w))
    from ecgscan_cli.digitize.filters import square_max

    gate = square_max(trace_up, _GATE_PX)
    gate = np.clip((gate - _GATE_FROM) / (_GATE_TO - _GATE_FROM), 0.0, 1.0)
    # the colours are read only where they count: inside the gate (it holds the sure ink)
    # and on the sure grid
    sure_grid = (grid_up > 0.7) & (trace_up < 0.1)
    ys, xs = np.nonzero((gate > 0) | sure_grid)
    paper = np.clip(_at(_paper(rgb), (h, w), ys, xs), 0.05, 1.0)
    dark = 1.0 - np.clip((rgb[ys, xs].astype(np.float32) / 255.0) / paper, 0.0, 1.0)
    v = _ink_direction(dark, trace_up[ys, xs], grid_up[ys, xs])
    if v is None:
        return None
    score = np.clip(dark @ v.astype(np.float32), 0.0, 1.0) ** _SCORE_POWER
    out = np.zeros((h, w), np.float32)
    out[ys, xs] = score * gate[ys, xs]
    return out, grid_up.astype(np.float32)
