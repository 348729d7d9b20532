"""Exact per-pixel targets of a rendered page, for training and testing the digitiser.

``page_targets`` draws, on the pixel grid of :func:`render_page` at the same dpi, what
the page is made of as coverage maps in [0, 1]:

- ``trace``: the ECG ink (the twelve panel traces, the rhythm strip and the four
  calibration pulses), with the printed line width (at least ``min_width_px``);
- ``grid``: the grid lines (zero for ``grid="none"``).

Geometric augmentations move targets and image together
(:func:`ecgscan_cli.render.augment.warp_targets`), so a photo-like training image and
its targets stay aligned to the pixel.
"""

from __future__ import annotations

import numpy as np

from ecgscan_cli.render.layout import LayoutOptions, page_geometry, page_pixel_map
from ecgscan_cli.render.page import (
    GRID_STYLES, _grid, calibration_pulse_mm, check_signal, draw_polylines, row_polylines,
)

TARGET_CHANNELS = ("trace", "grid")
_WHITE = (255, 255, 255)


def page_targets(signal: np.ndarray, fs: float = 500.0, options: LayoutOptions | None = None,
                 dpi: float = 200.0, min_width_px: float = 1.0) -> np.ndarray:
    """Targets ``[2, H, W]`` float32 (``TARGET_CHANNELS``) of ``render_page(signal, fs, options, dpi)``."""
    options = (options or LayoutOptions()).check()
    s = check_signal(signal)
    geo = page_geometry(options)
    pm = page_pixel_map(geo, dpi)
    lw = max(options.line_width_mm * (pm.sx + pm.sy) / 2, min_width_px)
    flat = np.r_[s.reshape(-1), np.nan]
    lines = [(pm.x(xmm), pm.y(geo.baselines_mm[r] - flat[idx] * options.gain))
             for r, (idx, xmm) in enumerate(row_polylines(geo, s, fs))]
    lines += [(pm.x(x), pm.y(y)) for x, y in (calibration_pulse_mm(geo, r) for r in range(4))]
    ink = np.zeros((pm.height, pm.width, 3), np.uint8)
    draw_polylines(ink, lines, lw, _WHITE)
    grid = np.zeros_like(ink)
    style = GRID_STYLES[options.grid]
    if style is not None:
        minor, major, minor_w, major_w = style
        _grid(grid, geo, pm, (None if minor is None else _WHITE, _WHITE, minor_w, major_w))
    return np.stack([ink[..., 0], grid[..., 0]]).astype(np.float32) / 255.0
