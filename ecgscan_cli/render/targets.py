"""Exact per-pixel targets of a rendered page, for training and testing the digitiser.

``page_targets`` draws, on the pixel grid of :func:`render_page` at the same dpi, what
the page is made of as coverage maps in [0, 1]:

- ``trace``: the ECG ink (the twelve panel traces, the rhythm strip and the four
  calibration pulses), with the printed line width (at least ``min_width_px``);
- ``grid``: the grid lines (zero for ``grid="none"``).

Traces are drawn by the page's own rasteriser with the page's sub-columns
(:func:`ecgscan_cli.render.raster.trace_sampling`): the same spans, rows and columns as
the page's trace ink (wider only where ``min_width_px`` asks; at and above 200 dpi the
same values). Below 200 dpi the page draws a steep stroke as grey as the 200-dpi page
would look shrunk; its target stays a full pixel column. Grid lines and calibration pulses are
drawn directly at ``dpi``; below 200 dpi the page shows them as the 200-dpi page
box-filtered down, the same lines within the rounding of the page size (≤ 0.5 px).

Geometric augmentations move targets and image together
(:func:`ecgscan_cli.render.augment.warp_targets`), so a photo-like training image and
its targets stay aligned to the pixel.
"""

from __future__ import annotations

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.render.layout import GRID_STYLES, LayoutOptions, page_geometry, page_pixel_map
from ecgscan_cli.render.page import _grid, calibration_pulse_mm, check_signal, draw_polylines, trace_lines
from ecgscan_cli.render.raster import trace_sampling

TARGET_CHANNELS = ("trace", "grid")
_WHITE = (255, 255, 255)


def page_targets(signal: np.ndarray, fs: float = canonical.FS, options: LayoutOptions | None = None,
                 dpi: float = 200.0, min_width_px: float = 1.0) -> np.ndarray:
    """Targets ``[2, H, W]`` float32 (``TARGET_CHANNELS``) of ``render_page(signal, fs, options, dpi)``."""
    options = (options or LayoutOptions()).check()
    s = check_signal(signal)
    geo = page_geometry(options)
    pm = page_pixel_map(geo, dpi)
    lw = max(options.line_width_mm * (pm.sx + pm.sy) / 2, min_width_px)
    lines = trace_lines(geo, pm, s, fs)
    lines += [(pm.x(x), pm.y(y)) for x, y in (calibration_pulse_mm(geo, r) for r in range(len(geo.baselines_mm)))]
    ink = np.zeros((pm.height, pm.width, 3), np.uint8)
    # the page's rasteriser, spans and sub-columns; but a target marks where the line is, so a
    # steep stroke fills its pixel column even where the page (below 200 dpi) draws it as grey
    # as a 200-dpi page shrunk to this size would be (a pen of one reference pixel)
    k, pen = trace_sampling(pm.sx)
    draw_polylines(ink, lines, lw, _WHITE, k, max(pen, 1.0))
    grid = np.zeros_like(ink)
    style = GRID_STYLES[options.grid]
    if style is not None:
        minor, major, minor_w, major_w = style
        _grid(grid, geo, pm, (None if minor is None else _WHITE, _WHITE, minor_w, major_w))
    return np.stack([ink[..., 0], grid[..., 0]]).astype(np.float32) / 255.0
