"""The photo augmentations (a phone picture of a printout): desk background, curl, colour
cast; the handwriting and stamps are in ``strokes``. They form the "photo" draw stage:
drawn after every other augmentation and only when a config switches one of them on."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ecgscan_cli.render.augmentations.base import Augmentation, Params, Sampling, param, register
from ecgscan_cli.render.augmentations.geometry import Geometric, coords, lowres

BACKGROUND_KINDS = ("none", "wood", "cloth", "desk")


@dataclasses.dataclass
class BackgroundParams(Params):
    shrink: torch.Tensor = param("background", "fraction", "page shrunk by this much so the surface shows")
    kind: torch.Tensor = param("background_kind", "index", "surface: " + ", ".join(BACKGROUND_KINDS))
    shift: torch.Tensor = param("background_shift", "page half-widths", "page moved off centre (x, y)")
    field: torch.Tensor = param()     # [B, 2, 6, 8] normal: low-frequency warp / mottling of the texture
    geo: torch.Tensor = param()       # [B, 4] uniform: angle, frequency, fine period, sharpness
    colour: torch.Tensor = param()    # [B, 3 kinds, 3] surface colour per kind


@register
class Background(Geometric):
    name = "background"
    group = "photo"
    stage = "photo"
    description = "the page shrunk and moved, on a generated wood, cloth or desk surface"
    strength = "page shrunk by up to 25 %"
    Params = BackgroundParams

    def sample(self, d: Sampling):
        rng, b, dev = d.rng, d.b, d.device
        shrink = d.s * rng.u(b, 0.2, 1.0) * 0.25
        kind = 1 + (rng.rand(b) * 3).long().clamp_(max=2)
        kind = torch.where(d.on, kind, torch.zeros_like(kind))
        slack = (1.0 / (1.0 - shrink.clamp(max=0.9)) - 1.0)[:, None]     # source units the page can move
        shift = slack * 0.6 * rng.u(b, -1, 1, 2)
        field = rng.randn(b, 2, 6, 8)
        geo = rng.rand(b, 4)
        wood = torch.tensor([0.55, 0.36, 0.2], device=dev) * rng.u(b, 0.55, 1.35)[:, None]
        cloth = rng.u(b, 0.08, 0.85, 3)
        desk = rng.u(b, 0.12, 0.95)[:, None] * (1.0 + 0.08 * rng.u(b, -1, 1, 3))
        colour = torch.stack([wood, cloth, desk], dim=1).clamp_(0, 1)
        return BackgroundParams(shrink, kind, shift, field, geo, colour)

    def identity(self, b, device):
        return BackgroundParams(torch.zeros(b, device=device), torch.zeros(b, dtype=torch.long, device=device),
                                torch.zeros(b, 2, device=device))

    def active(self, q):
        return q.shrink > 0

    def pose(self, pose, q):
        if bool((q.shrink > 0).any()):
            pose.zoom_by(1.0 - q.shrink)
            pose.move_by(q.shift)

    def after_warp(self, out, grid, q):
        """Outside the warped page the warp gave white: put the surface there. The page mask is
        a ones-image moved by the same grid, so the page edge is antialiased like the page."""
        if not bool((q.shrink > 0).any()):
            return out
        b, _, h, w = out.shape
        inside = F.grid_sample(torch.ones(b, 1, h, w, device=out.device, dtype=out.dtype), grid,
                               mode="bilinear", padding_mode="zeros", align_corners=False)
        desk = torch.ones_like(out)
        idx = (q.kind > 0).nonzero().squeeze(1)
        if idx.numel() == b:
            desk = surface_texture(desk, q)
        elif idx.numel():
            desk[idx] = surface_texture(desk[idx], q.subset(idx))
        return out + (1.0 - inside) * (desk - 1.0)


def surface_texture(x, q: BackgroundParams):
    """Generated surfaces under the page, ``x``-shaped [B,3,H,W]: wood, cloth or a plain desk.

    Wood: rings (sinusoids across the grain) warped by low-frequency noise, with fine grain;
    cloth: two crossed fine stripe patterns (a weave) with mottling; desk: smooth noise.
    One colour per image (browns for wood, anything for cloth, greys for a desk). The
    pattern is computed at half resolution on large images (it is the costly part) and
    upsampled; its finest stripes are 5 or more pixels apart, so nothing aliases."""
    b, _, h, w = x.shape
    dev = x.device
    f = 2 if min(h, w) >= 400 else 1
    th, tw = -(-h // f), -(-w // f)
    lh, lw = lowres(th, tw)
    noise = F.interpolate(q.field, size=(lh, lw), mode="bicubic", align_corners=False)
    noise = F.interpolate(noise, size=(th, tw), mode="bilinear", align_corners=False)    # [B,2,h',w']
    yy, xx = coords(th, tw, dev)
    side = max(h, w)
    u, v = xx[None] * (w / side), yy[None] * (h / side)   # isotropic, ±1 along the long side
    geo = q.geo
    ang = (geo[:, 0] * math.pi)[:, None, None]
    value = torch.empty(b, th, tw, device=dev, dtype=x.dtype)
    colour = torch.empty(b, 3, device=dev, dtype=x.dtype)
    for kind in (1, 2, 3):
        idx = (q.kind == kind).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        g, n, a = geo[idx], noise[idx], ang[idx]
        if kind == 1:   # wood
            along = u * torch.cos(a) + v * torch.sin(a)
            across = -u * torch.sin(a) + v * torch.cos(a)
            rings = (4 + 10 * g[:, 1, None, None]) * (across + 0.12 * n[:, 0] + 0.02 * along)
            ring = (0.5 + 0.5 * torch.sin(2 * math.pi * rings)) ** (1 + 3 * g[:, 3, None, None])
            fine = torch.sin(2 * math.pi * (40 + 40 * g[:, 2, None, None]) * (across + 0.05 * n[:, 1]))
            val = 1.0 - 0.3 * ring - 0.05 * fine + 0.08 * n[:, 1].clamp(-2, 2)
        elif kind == 2:  # cloth: stripes 5–10 pixels apart, crossed at right angles
            period = (5.0 + 5.0 * g[:, 2, None, None]) / side * 2      # in u/v units
            a1 = u * torch.cos(a) + v * torch.sin(a)
            a2 = -u * torch.sin(a) + v * torch.cos(a)
            weave = torch.sin(2 * math.pi * a1 / period) * torch.sin(2 * math.pi * a2 / period)
            val = 0.88 + 0.1 * weave + 0.06 * n[:, 0].clamp(-2, 2)
        else:           # plain desk: smooth mottling
            val = 0.92 + 0.05 * n[:, 0].clamp(-2, 2) + 0.03 * n[:, 1].clamp(-2, 2)
        value[idx] = val
        colour[idx] = q.colour[idx, kind - 1]
    value = value[:, None]
    if f > 1:
        value = F.interpolate(value, size=(h, w), mode="bilinear", align_corners=False)
    return (colour[:, :, None, None] * value).clamp_(0, 1)


@dataclasses.dataclass
class CurlParams(Params):
    amount: torch.Tensor = param("curl", "page half-widths", "foreshortening at the curled edge")
    bend: torch.Tensor = param()      # [B, 2]: direction of the curled edge (radians), where the bend starts


@register
class Curl(Geometric):
    name = "curl"
    group = "photo"
    stage = "photo"
    description = "one edge of the page bends away: quadratic foreshortening past a line"
    strength = "up to 25 % at the edge"
    Params = CurlParams

    def sample(self, d):
        rng, b = d.rng, d.b
        amount = d.s * rng.u(b, 0.3, 1.0) * 0.25
        edge = (rng.rand(b) * 4).floor().clamp_(max=3)
        return CurlParams(amount, torch.stack([edge * (math.pi / 2) + rng.u(b, -0.15, 0.15), rng.u(b, 0.2, 0.6)],
                                              dim=-1))

    def identity(self, b, device):
        return CurlParams(torch.zeros(b, device=device))

    def active(self, q):
        return q.amount > 0

    def displace(self, gx, gy, q):
        """Beyond a line parallel to one edge the page bends away from the camera. Seen from
        above, the bent band is foreshortened more and more towards the edge (quadratic in the
        distance past the bend, so the map stays smooth) and more at the corners than in the
        middle of the edge, which bows the edge."""
        if not bool((q.amount > 0).any()):
            return gx, gy
        amp = q.amount[:, None, None]
        ang = q.bend[:, 0, None, None]
        t0 = q.bend[:, 1, None, None]
        ca, sa = torch.cos(ang), torch.sin(ang)
        t = gx * ca + gy * sa                      # towards the curled edge (page units, edge at 1)
        s = -gx * sa + gy * ca                     # along the edge
        k = ((t - t0) / (1.0 - t0)).clamp(min=0)
        d = amp * k * k * (0.5 + 0.6 * s * s)
        return gx + d * ca, gy + d * sa


@dataclasses.dataclass
class ColourCastParams(Params):
    gain: torch.Tensor = param("colour_gain", "×", "gain of each channel (R, G, B)", identity=1.0)
    offset: torch.Tensor = param("colour_offset", "0..1", "offset of each channel (R, G, B)")


@register
class ColourCast(Augmentation):
    name = "colour_cast"
    group = "photo"
    stage = "photo"
    description = "warm or cool light: red against blue gain, small channel gains and offsets"
    strength = "red vs blue gain ±0.12, channel gains ±4 %, offsets ±0.04"
    Params = ColourCastParams

    def sample(self, d):
        rng, b = d.rng, d.b
        temp = rng.sym(b)
        gain = 1.0 + d.s[:, None] * (temp[:, None] * torch.tensor([0.12, 0.0, -0.12], device=d.device)
                                     + 0.04 * rng.u(b, -1, 1, 3))
        return ColourCastParams(gain, d.s[:, None] * 0.04 * rng.u(b, -1, 1, 3))

    def identity(self, b, device):
        return ColourCastParams(torch.ones(b, 3, device=device), torch.zeros(b, 3, device=device))

    def active(self, q):
        return (q.gain != 1).any(-1) | (q.offset != 0).any(-1)

    def apply(self, images, q, rng):
        return (images * q.gain[:, :, None, None] + q.offset[:, :, None, None]).clamp_(0, 1)
