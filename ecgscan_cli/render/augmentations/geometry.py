"""Geometric augmentations of the page: rotation, perspective, scale, crop, wrinkles.

They do not resample the image themselves: each contributes to the one sampling grid
(``pipeline.warp_grid``) through ``pose`` (the similarity part: angle, zoom, shift),
``project`` (the projective denominator) or ``displace`` (a smooth displacement of the
page coordinates), so the image and its targets move by exactly the same map.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ecgscan_cli.render.augmentations.base import Augmentation, Params, Sampling, param, register


@dataclasses.dataclass
class Pose:
    """The similarity part of the warp, accumulated over the geometric augmentations in
    registry order. None until someone contributes (then the first value is taken as is,
    so no multiplication by 1 changes a rounding)."""
    angle: torch.Tensor | None = None   # radians, [B]
    zoom: torch.Tensor | None = None    # >1 zooms in, <1 shrinks, [B]
    shift: torch.Tensor | None = None   # source units, [B, 2]

    def zoom_by(self, factor):
        self.zoom = factor if self.zoom is None else self.zoom * factor

    def move_by(self, shift):
        self.shift = shift if self.shift is None else self.shift + shift


def lowres(h, w, f=4):
    """A smooth field's resolution: 1/f of the image, at least 8×8."""
    return max(h // f, 8), max(w // f, 8)


def coords(h, w, device):
    """Pixel centres in normalised coordinates (−1..1), [H, W] each (y, x)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    return ys[:, None].expand(h, w), xs[None, :].expand(h, w)


class Geometric(Augmentation):
    group = "geometry"
    geometric = True

    def pose(self, pose: Pose, q) -> None:
        """Contribute to the similarity part of the warp (default: nothing)."""

    def project(self, su, sv, u, v, q):
        """Contribute the projective division (default: none)."""
        return su, sv

    def displace(self, gx, gy, q):
        """Displace the source coordinates (page units, ±1) smoothly (default: none)."""
        return gx, gy


@dataclasses.dataclass
class RotationParams(Params):
    degrees: torch.Tensor = param("rotation_deg", "degrees", "rotation of the page about its centre")


@register
class Rotation(Geometric):
    name = "rotation"
    description = "rotates the page about its centre"
    strength = "±3° (the photo preset uses strength 5: ±15°)"
    max_strength = 5.0
    Params = RotationParams

    def sample(self, d: Sampling) -> RotationParams:
        return RotationParams(d.s * d.rng.sym(d.b) * 3.0)

    def active(self, q):
        return q.degrees != 0

    def pose(self, pose, q):
        pose.angle = q.degrees * math.pi / 180


@dataclasses.dataclass
class PerspectiveParams(Params):
    terms: torch.Tensor = param("perspective", "1/page half-width", "projective terms (x, y) of the keystone")


@register
class Perspective(Geometric):
    name = "perspective"
    description = "keystone: the page seen at an angle (a projective map)"
    strength = "projective terms up to ±0.06"
    max_strength = 3.0
    Params = PerspectiveParams

    def sample(self, d):
        return PerspectiveParams(d.s[:, None] * d.rng.sym(d.b, 2) * 0.06)

    def active(self, q):
        return q.terms.abs().sum(-1) > 0

    def project(self, su, sv, u, v, q):
        den = 1.0 + q.terms[:, 0, None, None] * u + q.terms[:, 1, None, None] * v
        return su / den, sv / den


@dataclasses.dataclass
class ScaleParams(Params):
    factor: torch.Tensor = param("scale", "×", "page size (1 = fills the image; smaller leaves a white margin)",
                                 identity=1.0)


@register
class Scale(Geometric):
    name = "scale"
    description = "shrinks the page inside the image (white margin)"
    strength = "page shrunk by up to 12 %"
    Params = ScaleParams

    def sample(self, d):
        return ScaleParams(1.0 - d.s * d.rng.u(d.b, 0.2, 1) * 0.12)

    def active(self, q):
        return q.factor != 1

    def pose(self, pose, q):
        pose.zoom_by(q.factor)


@dataclasses.dataclass
class CropParams(Params):
    zoom: torch.Tensor = param("crop_zoom", "×", "zoom into the page", identity=1.0)
    shift: torch.Tensor = param("crop_shift", "page half-widths", "shift of the crop (x, y)")


@register
class Crop(Geometric):
    name = "crop"
    description = "zooms in with a random shift (the edges of the page may be cut)"
    strength = "zoom in up to 6 %"
    Params = CropParams

    def sample(self, d):
        zoom = 1.0 + d.s * d.rng.u(d.b, 0.2, 1) * 0.06
        return CropParams(zoom, (zoom - 1.0)[:, None] * d.rng.u(d.b, -1, 1, 2))

    def active(self, q):
        return q.zoom != 1

    def pose(self, pose, q):
        pose.zoom_by(q.zoom)
        pose.move_by(q.shift)


@dataclasses.dataclass
class WrinklesParams(Params):
    amount: torch.Tensor = param("wrinkles", "", "displacement (× 0.8 % of the page) and shading (× ±10 %)")
    field: torch.Tensor = param()      # [B, 3, 5, 7] normal noise: x and y displacement, shading


@register
class Wrinkles(Geometric):
    name = "wrinkles"
    description = "crumpled paper: a smooth displacement of the page and matching shading"
    strength = "displacement up to ~0.8 % of the page, shading up to ±10 %"
    Params = WrinklesParams

    def sample(self, d):
        amount = d.s * d.rng.u(d.b, 0.3, 1.0)
        return WrinklesParams(amount, d.rng.randn(d.b, 3, 5, 7))

    def active(self, q):
        return q.amount > 0

    def displace(self, gx, gy, q):
        field = F.interpolate(q.field[:, :2], size=gx.shape[-2:], mode="bicubic", align_corners=False)
        amp = q.amount
        return gx + amp[:, None, None] * 0.008 * field[:, 0], gy + amp[:, None, None] * 0.008 * field[:, 1]

    def shading_active(self, q):
        return q.amount > 0

    def shade(self, shade, yy, xx, q):
        f = F.interpolate(q.field[:, 2:3], size=shade.shape[-2:], mode="bicubic", align_corners=False)[:, 0]
        return shade * (1.0 + q.amount[:, None, None] * 0.1 * f.clamp(-2, 2) / 2)
