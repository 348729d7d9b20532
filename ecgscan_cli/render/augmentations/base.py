"""The augmentation base class, its typed parameters, the registry and the random draws.

An augmentation is a small class: ``sample`` draws its parameters for a batch (a
:class:`Params` dataclass of tensors with a leading batch dimension), and either ``apply``
changes the images or, for a geometric one, its hooks (``pose``, ``project``, ``displace``)
contribute to the one sampling grid (``pipeline.warp_grid``). ``describe`` says what it does.

The registry (:data:`AUGMENTATIONS`) is in :data:`DRAW_ORDER`, the order in which
parameters are drawn from the generator: that order is what makes a seed reproduce an
image, so a new augmentation goes at the end of its stage, never in the middle.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

# The draw order. "base" augmentations always draw (even with p = 0); the "photo" stage
# draws after all of them and only when a config switches one of its augmentations on, so
# the older presets draw exactly what they drew before the photo augmentations existed;
# the "camera" stage (shake, glare) likewise after the photo stage.
DRAW_ORDER = ("rotation", "perspective", "scale", "crop", "wrinkles", "creases", "lighting", "tint", "ink",
              "brightness", "contrast", "gamma", "grayscale", "binarize", "noise", "blur", "jpeg", "speckles",
              "grid",
              "background", "curl", "colour_cast", "strokes",
              "motion_blur", "glare")
STAGES = ("base", "photo", "camera")

AUGMENTATIONS: dict[str, type["Augmentation"]] = {}


def register(cls: type["Augmentation"]) -> type["Augmentation"]:
    """Class decorator: add ``cls`` to :data:`AUGMENTATIONS` (kept in :data:`DRAW_ORDER`)."""
    if cls.name not in DRAW_ORDER:
        raise ValueError(f"augmentation {cls.name!r} has no place in DRAW_ORDER")
    AUGMENTATIONS[cls.name] = cls
    ordered = sorted(AUGMENTATIONS.items(), key=lambda kv: DRAW_ORDER.index(kv[0]))
    AUGMENTATIONS.clear()
    AUGMENTATIONS.update(ordered)
    return cls


class Rng:
    """Uniform/normal draws from ``generator`` (on its own device), moved to ``device``."""

    def __init__(self, generator, device):
        self.g = generator
        self.device = torch.device(device)
        self.gdev = generator.device if generator is not None else self.device

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.g, device=self.gdev).to(self.device)

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g, device=self.gdev).to(self.device)

    def u(self, b, lo=-1.0, hi=1.0, *extra):
        return lo + (hi - lo) * self.rand(b, *extra)

    def sym(self, b, *extra):
        """±U(0.25, 1): a signed magnitude that is never negligible."""
        sign = torch.where(self.rand(b, *extra) < 0.5, -1.0, 1.0)
        return sign * self.u(b, 0.25, 1.0, *extra)

    def pick(self, b, palette):
        """One row of ``palette`` per image, uniformly."""
        table = torch.tensor(palette, device=self.device)
        return table[(self.rand(b) * len(table)).long().clamp_(max=len(table) - 1)]


def param(key: str | None = None, unit: str = "", meaning: str = "", identity=0.0, report: bool = True):
    """A :class:`Params` field. ``key``: its name in the flat parameter view and the render
    sidecars (None: internal, e.g. a noise field); ``identity``: the value that means "not
    applied" (not reported); ``report=False``: never written to sidecars."""
    return dataclasses.field(default=None, metadata={"key": key, "unit": unit, "meaning": meaning,
                                                     "identity": identity, "report": report})


@dataclasses.dataclass
class Params:
    """Parameters of one augmentation for a batch: tensors with a leading batch dimension."""

    def subset(self, idx: torch.Tensor) -> "Params":
        return dataclasses.replace(self, **{
            f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor) and getattr(self, f.name).dim()})

    @classmethod
    def public_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.metadata.get("key")]


@dataclasses.dataclass
class Sampling:
    """What ``sample`` needs: the draws, the batch, and this augmentation's switches."""
    rng: Rng
    b: int
    size: tuple[int, int]
    on: torch.Tensor          # [B] bool: drawn on for this image (p) and strength > 0
    s: torch.Tensor           # [B] strength where on, else 0
    p: float                  # the config's probability (grid uses it: p = 0 keeps one style)
    base_grid: str

    @property
    def device(self):
        return self.rng.device

    @property
    def px(self) -> float:
        """Pixel sizes are given for a 224-px image and scale with it."""
        return min(self.size) / 224.0


class Augmentation:
    """One augmentation. Subclasses set the class attributes and implement ``sample`` and
    ``active`` (and ``identity`` in a stage that may draw nothing). How it is applied is up to
    the step of ``pipeline.APPLY_STEPS`` that names it: ``apply`` for image ones; for geometric
    ones (``geometry.Geometric``) some of ``pose``/``project``/``displace`` and ``after_warp``;
    ``shade`` + ``shading_active`` for the shading field; ``tone`` for a pointwise map that
    shares one clamp with others."""

    name: ClassVar[str]
    group: ClassVar[str]                 # geometry, paper, photometric or photo (for docs and --list)
    stage: ClassVar[str] = "base"        # draw stage, see DRAW_ORDER
    geometric: ClassVar[bool] = False    # moves the page: part of the sampling grid, targets follow
    description: ClassVar[str]
    strength: ClassVar[str]              # what strength 1 means
    max_strength: ClassVar[float] = 2.0
    Params: ClassVar[type[Params]]

    def sample(self, d: Sampling) -> Params:
        raise NotImplementedError

    def identity(self, b: int, device) -> Params:
        """Parameters that change nothing (a stage that draws nothing)."""
        raise NotImplementedError

    def active(self, q: Params) -> torch.Tensor:
        """[B] bool: the images this augmentation changes."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, q: Params, rng: Rng) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is applied by the pipeline's {self.group} step")

    @classmethod
    def describe(cls) -> dict:
        """A JSON-able description: name, group, what it does, p/strength, parameters."""
        return {
            "name": cls.name, "group": cls.group, "stage": cls.stage, "geometric": cls.geometric,
            "description": cls.description,
            "p": "probability that an image gets it (0..1)",
            "strength": f"at strength 1: {cls.strength}; values are drawn up to the given strength "
                        f"(0..{cls.max_strength:g})",
            "max_strength": cls.max_strength,
            "parameters": [{"name": f.metadata["key"], "unit": f.metadata["unit"], "meaning": f.metadata["meaning"]}
                           for f in cls.Params.public_fields()],
        }
