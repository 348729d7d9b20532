"""The complete registry: importing this module registers every augmentation.

``AUGMENTATIONS`` (name → class) is in draw order (``base.DRAW_ORDER``); one instance of
each class is kept in ``INSTANCES`` (they hold no state)."""

from __future__ import annotations

from ecgscan_cli.render.augmentations import (  # noqa: F401 (register)
    camera, geometry, paper, photo, photometric, strokes,
)
from ecgscan_cli.render.augmentations.base import AUGMENTATIONS, DRAW_ORDER, STAGES, Augmentation

assert tuple(AUGMENTATIONS) == DRAW_ORDER, "an augmentation in DRAW_ORDER is not registered"

INSTANCES: dict[str, Augmentation] = {name: cls() for name, cls in AUGMENTATIONS.items()}
BASE_AUGMENTS = tuple(n for n, c in AUGMENTATIONS.items() if c.stage == "base")
PHOTO_AUGMENTS = tuple(n for n, c in AUGMENTATIONS.items() if c.stage == "photo")
CAMERA_AUGMENTS = tuple(n for n, c in AUGMENTATIONS.items() if c.stage == "camera")
AUGMENTS = BASE_AUGMENTS + PHOTO_AUGMENTS + CAMERA_AUGMENTS
MAX_STRENGTH = {n: c.max_strength for n, c in AUGMENTATIONS.items()}


def by_stage(stage: str) -> list[Augmentation]:
    assert stage in STAGES
    return [a for a in INSTANCES.values() if a.stage == stage]


def describe_all() -> dict:
    """The registry as one JSON-able document (``ecgscan render --list-augmentations``)."""
    from ecgscan_cli.render.augmentations.config import PRESETS

    return {
        "draw_order": list(AUGMENTATIONS),
        "presets": {name: {k: {"p": v.p, "strength": v.strength} for k, v in specs.items() if v.p > 0}
                    for name, specs in PRESETS.items()},
        "augmentations": [cls.describe() for cls in AUGMENTATIONS.values()],
    }
