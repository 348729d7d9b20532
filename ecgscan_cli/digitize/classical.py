"""A training-free map maker: the "classical digitiser" baseline and a test aid.

Printed ECG ink is dark and grey (black or dark blue pen, low saturation); grid lines are
light and coloured (red, pink, blue, green) or light grey. So per pixel:

- ``trace``: darkness (the paper's brightest channel − the pixel's) above the darkest grid
  colours the renderer and most printers use, ramped to 1 over the antialiased edge (a
  one-pixel line split over two pixels at ~90 dpi still counts), only where the pixel is
  not strongly coloured;
- ``grid``: any visible tint (the paper's darkest channel − the pixel's) that is not trace.

"The paper" is the brightest colour within about 1 % of the image's long side (a few mm):
tinted paper, a shadow or a photo's uneven light then shift neither map.

Text (labels, header) is dark too and lands in ``trace``; the layout reader ignores it,
as it covers little of a row's width. The periodicity that makes a grid a grid is checked
downstream (:mod:`.geometry`), not here.
"""

from __future__ import annotations

import numpy as np

_DARK_FROM, _DARK_TO = 100.0, 160.0      # darkness ramp of the trace (0..255): past grey grids;
                                          # a thin line split over two pixels at ~90 dpi still counts
_MAX_SATURATION = 110.0                   # more colourful than this: grid, not ink
_TINT_FROM, _TINT_TO = 15.0, 60.0         # tint ramp of the grid


def classical_maps(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(trace, grid) float32 H×W maps in [0, 1] of an RGB (or grey) uint8 image."""
    from scipy.ndimage import maximum_filter

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"expected an H×W×3 image, got shape {img.shape}")
    rgb = img[..., :3].astype(np.float32)
    hi = rgb.max(axis=-1)
    lo = rgb.min(axis=-1)
    # darkness and tint are measured from the paper around each pixel, not from white: a
    # tinted paper, a shadow or a photo's uneven light shifts them all (the paper is the
    # brightest colour within a few mm, wider than any line and than the grid's pitch)
    size = max(5, int(round(max(img.shape[:2]) / 110.0)) | 1)
    paper_hi = np.minimum(maximum_filter(hi, size=size) + 10.0, 255.0)
    paper_lo = np.minimum(maximum_filter(lo, size=size) + 10.0, 255.0)
    darkness = paper_hi - hi
    saturation = hi - lo
    trace = np.clip((darkness - _DARK_FROM) / (_DARK_TO - _DARK_FROM), 0.0, 1.0)
    trace *= np.clip((_MAX_SATURATION + 30.0 - saturation) / 30.0, 0.0, 1.0)
    # the antialiased fringe of the ink is tinted too: it is not grid
    near_ink = maximum_filter(trace, size=3)
    grid = np.clip((paper_lo - lo - _TINT_FROM) / (_TINT_TO - _TINT_FROM), 0.0, 1.0) * (1.0 - near_ink)
    return trace.astype(np.float32), grid.astype(np.float32)
