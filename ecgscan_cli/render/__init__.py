"""ECG printout rendering: page layout, numpy page rasteriser, torch batch renderer, augmentations.

>>> from ecgscan_cli.render import render_batch, letterbox, render_page
>>> images = render_batch(signals, size=224, augment="paper")   # [B,3,224,224] in [0,1]
>>> page, meta = render_page(signal)                           # uint8 1700×2200×3 + layout

See docs/render.md.
"""

from __future__ import annotations

import importlib

# imported on first use (PEP 562): `import ecgscan_cli.render.layout` must not pull in torch
# through the batch renderer and the augmentations
_WHERE = {
    "AUGMENTS": "augment", "PRESETS": "augment", "AugmentConfig": "augment", "AugSpec": "augment",
    "augment_with_targets": "augment", "resolve_augment": "augment", "warp_targets": "augment",
    "letterbox": "batch", "render_batch": "batch",
    "LayoutOptions": "layout", "layout_metadata": "layout", "page_geometry": "layout", "GRID_STYLES": "layout",
    "render_page": "page",
}
__all__ = ["render_batch", "letterbox", "render_page", "AugmentConfig", "AugSpec", "AUGMENTS", "PRESETS",
           "LayoutOptions", "GRID_STYLES", "page_geometry", "layout_metadata", "resolve_augment",
           "augment_with_targets", "warp_targets"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"ecgscan_cli.render.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ecgscan_cli.render' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
