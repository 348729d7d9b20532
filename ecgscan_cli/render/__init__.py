"""ECG printout rendering: page layout, numpy page rasteriser, torch batch renderer, augmentations.

>>> from ecgscan_cli.render import render_batch, letterbox, render_page
>>> images = render_batch(signals, size=224, augment="paper")   # [B,3,224,224] in [0,1]
>>> page, meta = render_page(signal)                           # uint8 1700×2200×3 + layout

See docs/render.md.
"""

from ecgscan_cli.render.augment import (
    AUGMENTS, PRESETS, AugmentConfig, AugSpec, augment_with_targets, resolve_augment, warp_targets,
)
from ecgscan_cli.render.batch import letterbox, render_batch
from ecgscan_cli.render.layout import LayoutOptions, layout_metadata, page_geometry
from ecgscan_cli.render.page import GRID_STYLES, render_page

__all__ = ["render_batch", "letterbox", "render_page", "AugmentConfig", "AugSpec", "AUGMENTS", "PRESETS",
           "LayoutOptions", "GRID_STYLES", "page_geometry", "layout_metadata", "resolve_augment",
           "augment_with_targets", "warp_targets"]
