"""Augmentations of rendered printouts, vectorised over the batch (torch, any device).

Each augmentation has a probability ``p`` (drawn per image) and a ``strength`` (0..2, rotation
0..5 and perspective 0..3; 1 = the documented maximum below, values drawn uniformly up to it).
Presets: ``none``, ``light``, ``paper``, ``heavy``, ``photo`` (a phone picture of a printout),
``phone`` (``photo`` with camera shake and glare); or a YAML/JSON file::

    preset: paper            # optional starting point
    rotation: {p: 0.8, strength: 1.0}
    jpeg: {p: 0}

At strength 1 (sizes in pixels are for a 224-px image and scale with the image):

| name | effect |
|---|---|
| rotation | ±3° |
| perspective | keystone, projective terms up to ±0.06 |
| scale | page shrunk by up to 12 % (white margin) |
| crop | zoom in up to 6 % with a random shift (the edges of the page may be cut) |
| wrinkles | smooth displacement up to ~0.8 % of the page + shading up to ±10 % |
| creases | 1–2 straight folds: a dark line with a bright and a shaded side, up to 18 % |
| lighting | linear light gradient up to 35 % and a soft shadow edge up to 30 % (phone photos) |
| tint | paper colour: each channel darkened by up to 14 % (yellowed, grey, blue paper) |
| ink | trace colour: dark blue/grey/brown instead of black |
| brightness | ±0.15 |
| contrast | ×(1 ± 0.25) |
| gamma | exp(±0.4) |
| grayscale | luminance only |
| binarize | threshold at 0.45–0.65 (fax/photocopy scans) |
| noise | Gaussian, σ up to 0.06 |
| blur | Gaussian, σ up to 1.2 px |
| jpeg | 8×8 DCT blocks quantised (step up to 0.25, coarser at high frequency) |
| speckles | dark dust dots on up to 0.3 % of pixels |
| grid | another grid style (colour, weight, coarse or none) |
| background | page shrunk by up to 25 % and moved, on generated wood / cloth / desk |
| curl | one edge bends away: quadratic foreshortening past a line, up to 25 % at the edge |
| colour_cast | warm/cool light: red vs blue gain ±0.12, channel gains ±4 %, offsets ±0.04 |
| strokes | ballpoint handwriting, a Bézier curve and a stamp drawn on the paper |
| motion_blur | camera shake: a straight smear up to 1.2 px long, any direction |
| glare | a lamp's reflection on glossy paper: an elliptical patch washed out by up to 85 % |

Geometry (rotation, perspective, scale, crop, wrinkles, background, curl) is one sampling
grid (:func:`warp_grid`) that :func:`warp_targets` applies to targets as well;
:func:`augment_with_targets` does both for a batch.

Each augmentation is a small class in a registry (package ``ecgscan_cli.render.augmentations``;
``AUGMENTATIONS``, ``describe_all()``, ``ecgscan render --list-augmentations``). This module is
the public front: it re-exports what callers use.
"""

from __future__ import annotations

from ecgscan_cli.render.augmentations.base import AUGMENTATIONS, DRAW_ORDER, Augmentation, Params
from ecgscan_cli.render.augmentations.catalogue import (
    AUGMENTS, BASE_AUGMENTS, CAMERA_AUGMENTS, MAX_STRENGTH, PHOTO_AUGMENTS, describe_all,
)
from ecgscan_cli.render.augmentations.config import PRESETS, AugmentConfig, AugSpec, resolve_augment
from ecgscan_cli.render.augmentations.draw import AugmentDraw, draw_params, params_to_dicts
from ecgscan_cli.render.augmentations.paper import GRID_CHOICES
from ecgscan_cli.render.augmentations.photo import BACKGROUND_KINDS
from ecgscan_cli.render.augmentations.pipeline import (
    APPLY_STEPS, apply_augment, augment_with_targets, warp_grid, warp_targets,
)

__all__ = ["AUGMENTATIONS", "DRAW_ORDER", "Augmentation", "Params", "AUGMENTS", "BASE_AUGMENTS", "PHOTO_AUGMENTS",
           "CAMERA_AUGMENTS",
           "MAX_STRENGTH", "describe_all", "PRESETS", "AugmentConfig", "AugSpec", "resolve_augment", "AugmentDraw",
           "draw_params", "params_to_dicts", "GRID_CHOICES", "BACKGROUND_KINDS", "APPLY_STEPS", "apply_augment",
           "augment_with_targets", "warp_grid", "warp_targets"]
