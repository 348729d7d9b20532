"""The ``strokes`` photo augmentation: ballpoint handwriting, a free curve and a stamp drawn
on the paper (image only: the targets are the ECG trace and the grid, which these cover
but do not change). Lines are splatted as antialiased points, ink ∝ segment length."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ecgscan_cli.render.augmentations.base import Augmentation, Params, Sampling, param, register

STROKE_LINES = 4     # handwriting lines per image (each on with probability 0.6)
STAMP_BLOBS = 6      # "words" inside a stamp
PEN_COLOURS = ((0.1, 0.15, 0.6), (0.08, 0.08, 0.1), (0.15, 0.2, 0.45))          # blue, black, navy ballpoint
STAMP_COLOURS = ((0.75, 0.1, 0.15), (0.15, 0.25, 0.7), (0.45, 0.15, 0.55), (0.1, 0.45, 0.25))


@dataclasses.dataclass
class StrokesParams(Params):
    opacity: torch.Tensor = param("strokes", "0..1", "opacity of the pen (and 0.85× of the stamp)")
    lines: torch.Tensor = param()         # [B, K, 8]: on, origin x, y, angle, length, loop radius, phase, height
    curve: torch.Tensor = param()         # [B, 9]: on, 4 control points
    pen: torch.Tensor = param()           # [B, 3] pen colour
    stamp: torch.Tensor = param()         # [B, 8]: on, kind, centre x, y, size, aspect, angle, patchiness
    stamp_blobs: torch.Tensor = param()   # [B, S, 4]: row, start, length, phase
    stamp_colour: torch.Tensor = param()  # [B, 3]


@register
class Strokes(Augmentation):
    name = "strokes"
    group = "photo"
    stage = "photo"
    description = "ballpoint handwriting, a Bézier curve and sometimes a stamp drawn on the paper"
    strength = "full pen opacity 0.6–1 (strength is capped at 1)"
    Params = StrokesParams

    def sample(self, d: Sampling):
        rng, b = d.rng, d.b
        opacity = d.s.clamp(max=1.0) * rng.u(b, 0.6, 1.0)
        lines = rng.rand(b, STROKE_LINES, 8)
        lines[:, 0, 0] = 0.0                                 # the first line is always there
        curve = rng.rand(b, 9)
        pen = rng.pick(b, PEN_COLOURS)
        stamp = rng.rand(b, 8)
        blobs = rng.rand(b, STAMP_BLOBS, 4)
        return StrokesParams(opacity, lines, curve, pen, stamp, blobs, rng.pick(b, STAMP_COLOURS))

    def identity(self, b, device):
        return StrokesParams(torch.zeros(b, device=device))

    def active(self, q):
        return q.opacity > 0

    def apply(self, images, q, rng):
        return draw_strokes(images, q)


def _splat(pts, weight, h, w):
    """Coverage [B,1,H,W] of points ``pts`` [B,N,2] (x, y in pixels) carrying ``weight`` [B,N] ink,
    each spread bilinearly over its four nearest pixels (so lines come out antialiased)."""
    b = pts.shape[0]
    x = pts[..., 0] - 0.5                      # pixel i covers [i, i+1): its centre is i + 0.5
    y = pts[..., 1] - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    canvas = torch.zeros(b, h * w, device=pts.device, dtype=pts.dtype)
    for dx, dy, share in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
        canvas.scatter_add_(1, idx, torch.where(ok, share * weight, torch.zeros((), device=pts.device)))
    return canvas.view(b, 1, h, w).clamp_(max=1.0)


def _ink_along(pts, width):
    """Ink carried by each point of polylines ``pts`` [..., N, 2]: its segment's length × the line
    width, so coverage does not depend on how densely the curve was sampled."""
    seg = (pts[..., 1:, :] - pts[..., :-1, :]).norm(dim=-1)
    return F.pad(seg, (0, 1)) * width


def _cursive(t, length, radius, phase, height):
    """Handwriting-like loops (a prolate trochoid) along a baseline: [..., N, 2] in pixels, local
    frame (x along the line). ``t`` [N] in 0..1; the others broadcast as [..., 1]."""
    theta = 2 * math.pi * t * length / (2.2 * radius) + phase
    env = 1.0 + height * torch.relu(torch.sin(2 * math.pi * 3.7 * t + 3 * phase))   # ascenders
    x = t * length - radius * torch.sin(theta)
    y = -radius * 1.3 * env * (1 - torch.cos(theta)) / 2
    return torch.stack([x, y], dim=-1)


def _rotate(pts, ang, origin):
    c, s = torch.cos(ang)[..., None], torch.sin(ang)[..., None]
    x, y = pts[..., 0], pts[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], dim=-1) + origin[..., None, :]


def draw_strokes(img, q: StrokesParams):
    """Handwriting lines, a curve and (on about half the images) a stamp over ``img`` [B,3,H,W]."""
    b, _, h, w = img.shape
    dev, dt = img.device, img.dtype
    side = max(h, w)
    # handwriting lines
    L = q.lines                                                        # [B,K,8]
    length = (0.12 + 0.3 * L[..., 4:5]) * w
    radius = (0.004 + 0.006 * L[..., 5:6]) * side
    n = int(min(6.5 * 0.42 * w, 8000)) + 16   # the loops are ~3.2× the line: ≥ 2 points per pixel
    t = torch.linspace(0, 1, n, device=dev, dtype=dt)
    local = _cursive(t, length, radius, 2 * math.pi * L[..., 6:7], 0.8 * L[..., 7:8])     # [B,K,N,2]
    origin = torch.stack([(0.05 + 0.6 * L[..., 1]) * w, (0.05 + 0.9 * L[..., 2]) * h], dim=-1)
    lines = _rotate(local, (L[..., 3] - 0.5) * 0.5, origin)
    words = length / (10 * radius)                                     # gaps between "words"
    gap = torch.sin(2 * math.pi * t * words + 6 * L[..., 6:7]) < 0.85
    pen_w = 0.0014 * side
    ink = _ink_along(lines, pen_w) * gap * (L[..., 0:1] < 0.6)
    # one free curve (an underline, a circled finding): a cubic Bezier
    C = q.curve
    p0 = torch.stack([C[:, 1] * w, C[:, 2] * h], dim=-1)
    ctrl = [p0] + [p0 + (torch.stack([C[:, 2 * j + 1], C[:, 2 * j + 2]], dim=-1) - 0.5) * 0.4 * side
                   for j in (1, 2, 3)]
    tc = t[:, None]
    curve = ((1 - tc) ** 3 * ctrl[0][:, None] + 3 * (1 - tc) ** 2 * tc * ctrl[1][:, None]
             + 3 * (1 - tc) * tc ** 2 * ctrl[2][:, None] + tc ** 3 * ctrl[3][:, None])   # [B,N,2]
    cink = _ink_along(curve, pen_w) * (C[:, :1] < 0.5)
    pts = torch.cat([lines.reshape(b, -1, 2), curve], dim=1)
    pen = _splat(pts, torch.cat([ink.reshape(b, -1), cink], dim=1), h, w)
    alpha = q.opacity[:, None, None, None]
    img = img * (pen * (alpha * (q.pen[:, :, None, None] - 1.0))).add_(1.0)
    # a stamp: double circle or rectangle with a few "words" inside, patchy ink
    S = q.stamp
    stamp_on = S[:, 0] < 0.5
    if not bool(stamp_on.any()):
        return img
    centre = torch.stack([(0.15 + 0.7 * S[:, 2]) * w, (0.15 + 0.7 * S[:, 3]) * h], dim=-1)
    R = (0.05 + 0.05 * S[:, 4]) * side
    aspect = 0.45 + 0.4 * S[:, 5]
    ang = (S[:, 6] - 0.5) * 0.8
    u = torch.linspace(0, 1, max(int(2 * math.pi * 0.1 * side * 2), 64), device=dev, dtype=dt)
    circle = S[:, 1] < 0.5
    th = 2 * math.pi * u
    ring = torch.stack([torch.cos(th), torch.sin(th)], dim=-1)        # unit circle [M,2]
    # the rectangle's perimeter as the same parameter: the circle pushed out to the square
    box = ring / ring.abs().amax(-1, keepdim=True)
    rx = torch.where(circle, R, 1.5 * R)[:, None, None]
    ry = torch.where(circle, R, 1.5 * R * aspect)[:, None, None]
    shape = torch.where(circle[:, None, None], ring[None], box[None])  # [B,M,2]
    outline = torch.stack([shape * torch.cat([rx, ry], -1), shape * torch.cat([rx, ry], -1) * 0.84], dim=1)
    outline = _rotate(outline, ang[:, None], centre[:, None])          # [B,2,M,2]
    B_ = q.stamp_blobs                                                 # [B,S,4]: row, start, length, phase
    blen = (0.25 + 0.35 * B_[..., 2:3]) * R[:, None, None]
    local = _cursive(u, blen, 0.08 * R[:, None, None], 2 * math.pi * B_[..., 3:4], 0.3)
    start = torch.stack([(B_[..., 1] - 0.5) * 0.8 * R[:, None] - blen[..., 0] / 2,
                         (B_[..., 0] - 0.5) * 0.9 * R[:, None] * torch.where(circle, 1.0, aspect)[:, None]], dim=-1)
    blobs = _rotate(local + start[..., None, :], ang[:, None], centre[:, None])   # [B,S,M,2]
    st_w = 0.0025 * side
    patchy = 0.55 + 0.45 * torch.sin(7 * th + 6 * S[:, 7:8, None]) ** 2          # [B,1,M]
    st_pts = torch.cat([outline.reshape(b, -1, 2), blobs.reshape(b, -1, 2)], dim=1)
    st_ink = torch.cat([(_ink_along(outline, st_w) * patchy).reshape(b, -1),
                        (_ink_along(blobs, 0.7 * st_w) * patchy).reshape(b, -1)], dim=1)
    stamp = _splat(st_pts, st_ink * stamp_on[:, None], h, w)
    return img.mul_((stamp * (0.85 * alpha * (q.stamp_colour[:, :, None, None] - 1.0))).add_(1.0))
