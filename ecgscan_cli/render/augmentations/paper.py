"""Augmentations of the paper and what is printed on it: creases, lighting, tint, ink,
speckles, grid style. (Wrinkles, which also move the page, are in ``geometry``.)

Creases and lighting (and wrinkles) multiply one smooth shading field computed at half
resolution (``pipeline`` step "shading"); ink and grid are used by the renderers, which
draw the traces in the ink colour on the background of the chosen grid style.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ecgscan_cli.render.augmentations.base import Augmentation, Params, Sampling, param, register

GRID_CHOICES = ("red", "pink", "bold", "coarse", "gray", "blue", "green", "none")
INK_PALETTE = ((0.05, 0.1, 0.45), (0.3, 0.3, 0.3), (0.35, 0.2, 0.1), (0.0, 0.2, 0.1))   # blue, grey, brown, green


class PaperAugmentation(Augmentation):
    group = "paper"


@dataclasses.dataclass
class CreasesParams(Params):
    depth: torch.Tensor = param("creases", "", "shading depth of each of two folds (0 = no fold)")
    line: torch.Tensor = param("crease_line", "page half-widths, radians",
                               "offset and angle of each fold line", report=False)


@register
class Creases(PaperAugmentation):
    name = "creases"
    description = "1–2 straight folds: a dark line with a bright and a shaded side"
    strength = "fold shading up to 18 %"
    Params = CreasesParams

    def sample(self, d: Sampling):
        rng = d.rng
        depth = d.s[:, None] * rng.u(d.b, 0.3, 1.0, 2) * 0.18 * (rng.rand(d.b, 2) < torch.tensor(
            [1.0, 0.5], device=d.device)).float()    # the second fold on half the images
        line = torch.stack([rng.u(d.b, -0.7, 0.7, 2), rng.u(d.b, 0, math.pi, 2)], dim=-1)
        return CreasesParams(depth, line)

    def active(self, q):
        return q.depth.sum(-1) > 0

    shading_active = active

    def shade(self, shade, yy, xx, q):
        for j in range(q.depth.shape[1]):
            amp = q.depth[:, j, None, None]
            off = q.line[:, j, 0, None, None]
            ang = q.line[:, j, 1, None, None]
            d = (xx[None] * torch.sin(ang) - yy[None] * torch.cos(ang) - off) / 0.04
            fold = 1.2 * d * torch.exp(-0.5 * d * d) - 0.6 * torch.exp(-2.0 * d * d)
            shade = shade * (1.0 + amp * fold)
        return shade


@dataclasses.dataclass
class LightingParams(Params):
    gradient: torch.Tensor = param("lighting", "", "darkening across the page by a linear light gradient")
    direction: torch.Tensor = param("lighting_dir", "radians", "directions of the gradient and of the shadow edge",
                                    report=False)
    shadow: torch.Tensor = param("lighting_shadow", "", "darkening beyond a soft shadow edge")
    shadow_pos: torch.Tensor = param("lighting_shadow_pos", "page half-widths", "position of the shadow edge",
                                     report=False)


@register
class Lighting(PaperAugmentation):
    name = "lighting"
    description = "uneven light: a linear gradient and a soft shadow edge (phone photos)"
    strength = "gradient up to 35 %, shadow up to 30 %"
    Params = LightingParams

    def sample(self, d):
        rng, b = d.rng, d.b
        gradient = d.s * rng.u(b, 0.2, 1.0)
        direction = rng.u(b, 0, 2 * math.pi, 2)
        shadow = d.s * rng.u(b, 0.0, 1.0) * 0.30 * (rng.rand(b) < 0.5).float()
        return LightingParams(gradient, direction, shadow, rng.u(b, -0.8, 0.8))

    def active(self, q):
        return q.gradient > 0

    shading_active = active

    def shade(self, shade, yy, xx, q):
        a1, a2 = q.direction[:, 0, None, None], q.direction[:, 1, None, None]
        g = (xx[None] * torch.cos(a1) + yy[None] * torch.sin(a1)) * 0.5 + 0.5
        shade = shade * (1.0 - q.gradient[:, None, None] * g)
        edge = torch.sigmoid((xx[None] * torch.cos(a2) + yy[None] * torch.sin(a2)
                              - q.shadow_pos[:, None, None]) / 0.06)
        return shade * (1.0 - q.shadow[:, None, None] * edge)


@dataclasses.dataclass
class TintParams(Params):
    gain: torch.Tensor = param("tint", "×", "paper colour: gain of each channel (R, G, B)", identity=1.0)


@register
class Tint(PaperAugmentation):
    name = "tint"
    description = "paper colour: yellowed, grey or bluish paper"
    strength = "each channel darkened by up to 14 %"
    Params = TintParams

    def sample(self, d):
        return TintParams(1.0 - d.s[:, None] * d.rng.u(d.b, 0.2, 1, 3) * 0.14)

    def active(self, q):
        return (q.gain != 1).any(-1)

    def apply(self, images, q, rng):
        return images * q.gain[:, :, None, None]


@dataclasses.dataclass
class InkParams(Params):
    colour: torch.Tensor = param("ink", "0..1 RGB", "trace colour (0 = black)")


@register
class Ink(PaperAugmentation):
    name = "ink"
    description = "trace colour: dark blue, grey, brown or green instead of black (drawn by the renderer)"
    strength = "the full colour (strength is capped at 1)"
    Params = InkParams

    def sample(self, d):
        palette = torch.tensor(INK_PALETTE, device=d.device)
        pick = (d.rng.rand(d.b) * len(palette)).long().clamp_(max=len(palette) - 1)
        return InkParams(palette[pick] * d.s.clamp(max=1.0)[:, None])

    def active(self, q):
        return (q.colour != 0).any(-1)


@dataclasses.dataclass
class SpecklesParams(Params):
    density: torch.Tensor = param("speckles", "fraction of pixels", "dust dots")


@register
class Speckles(PaperAugmentation):
    name = "speckles"
    description = "dark dust dots on the paper"
    strength = "dots on up to 0.3 % of pixels"
    Params = SpecklesParams

    def sample(self, d):
        return SpecklesParams(d.s * d.rng.u(d.b, 0.2, 1) * 0.003)

    def active(self, q):
        return q.density > 0

    def apply(self, images, q, rng):
        # the dots are drawn now, from the same generator, after all parameters
        b, _, h, w = images.shape
        m = (rng.rand(b, 1, h, w) < q.density[:, None, None, None]).float()
        if min(h, w) >= 448:  # dust grains span a few pixels on large images
            m = torch.maximum(m, F.max_pool2d(m, 3, stride=1, padding=1) * 0.6)
        return images * (1.0 - m * rng.u(b, 0.4, 0.9)[:, None, None, None])


@dataclasses.dataclass
class GridParams(Params):
    choice: torch.Tensor = param("grid", "index", "grid style: index into styles (0 = the page's own)", identity=0)
    styles: list = param()    # [the page's style, then the others]; only the page's when p = 0


@register
class Grid(PaperAugmentation):
    name = "grid"
    description = "another grid style (colour, weight, coarse or none), drawn by the renderer"
    strength = "any other style (strength only switches it on)"
    Params = GridParams

    def sample(self, d):
        styles = [d.base_grid] + [g for g in GRID_CHOICES if g != d.base_grid]
        other = 1 + (d.rng.rand(d.b) * (len(styles) - 1)).long().clamp_(max=len(styles) - 2)
        if d.p <= 0:
            return GridParams(torch.zeros_like(other), [d.base_grid])
        return GridParams(torch.where(d.on, other, torch.zeros_like(other)), styles)

    def active(self, q):
        return q.choice > 0
