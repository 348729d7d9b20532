"""The camera augmentations of a phone picture: camera shake (motion blur) and glare on
glossy paper. They form the "camera" draw stage, drawn after every other augmentation and
only when a config switches one of them on, so every older preset (``photo`` included)
draws and renders exactly what it did before. Pixel values only; targets never move: the
trace under a glare or a smear is still where the network must find it."""

from __future__ import annotations

import dataclasses
import math

import torch

from ecgscan_cli.render.augmentations.base import Augmentation, Params, Sampling, param, register
from ecgscan_cli.render.augmentations.geometry import coords


@dataclasses.dataclass
class MotionBlurParams(Params):
    length: torch.Tensor = param("motion_blur", "pixels", "length of the camera's movement during the exposure")
    angle: torch.Tensor = param("motion_angle", "degrees", "direction of the movement (0 = along the rows)")


@register
class MotionBlur(Augmentation):
    name = "motion_blur"
    group = "photo"
    stage = "camera"
    description = "camera shake: the image smeared along one straight direction"
    strength = "a smear up to 1.2 px long at 224 px (0.5 % of the short side; scales with the image)"
    Params = MotionBlurParams

    def sample(self, d: Sampling):
        rng, b = d.rng, d.b
        length = d.s * rng.u(b, 0.3, 1.0) * 1.2 * d.px
        return MotionBlurParams(length, torch.where(d.on, rng.u(b, 0.0, 180.0), torch.zeros_like(length)))

    def identity(self, b, device):
        return MotionBlurParams(torch.zeros(b, device=device), torch.zeros(b, device=device))

    def active(self, q):
        return q.length > 0.5

    def apply(self, images, q, rng):
        return convolve_each(images, line_kernels(q.length, q.angle))


def line_kernels(length: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """[B, K, K] normalised kernels: a straight segment of ``length`` pixels at ``angle_deg``.
    Points 1/8 px apart along it are splatted bilinearly, so every stretch of the segment
    weighs the same (a thin rasterised line would stripe a smeared trace with moiré)."""
    radius = int(math.ceil(float(length.max()) / 2)) + 1
    size = 2 * radius + 1
    b = length.shape[0]
    n = 8 * (2 * radius) + 1
    t = torch.linspace(-0.5, 0.5, n, device=length.device)[None] * length[:, None]          # [B, n]
    a = torch.deg2rad(angle_deg)[:, None]
    x, y = radius + t * torch.cos(a), radius + t * torch.sin(a)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    k = torch.zeros(b, size * size, device=length.device)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = ((y0 + dy).clamp(0, size - 1) * size + (x0 + dx).clamp(0, size - 1)).long()
        k.scatter_add_(1, idx, wgt)
    k = k.view(b, size, size)
    return k / k.sum(dim=(1, 2), keepdim=True)


def convolve_each(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each image [B,C,H,W] convolved with its own kernel [B,K,K] (K odd), edges replicated.
    Through the FFT: a 20-px smear of a 200-dpi page costs what a 3-px one does."""
    b, c, h, w = images.shape
    r = kernels.shape[-1] // 2
    x = torch.nn.functional.pad(images, (r, r, r, r), mode="replicate")
    hh, ww = h + 2 * r, w + 2 * r
    k = torch.zeros(b, hh, ww, device=images.device, dtype=torch.float32)
    k[:, :2 * r + 1, :2 * r + 1] = kernels
    k = torch.roll(k, shifts=(-r, -r), dims=(1, 2))          # the kernel's centre at (0, 0)
    out = torch.fft.irfft2(torch.fft.rfft2(x.float()) * torch.fft.rfft2(k)[:, None], s=(hh, ww))
    return out[..., r:r + h, r:r + w].to(images.dtype).clamp_(0, 1)


@dataclasses.dataclass
class GlareParams(Params):
    amount: torch.Tensor = param("glare", "0..1", "how far the glare's core is washed towards white")
    shape: torch.Tensor = param()     # [B, 6]: centre x, y (−1..1), half-axes (short side = 2), angle, core share


@register
class Glare(Augmentation):
    name = "glare"
    group = "photo"
    stage = "camera"
    description = "a lamp's reflection on glossy paper: an elliptical patch washed out towards white"
    strength = "the core washed out by up to 85 % (trace contrast down to 15 %), 10–35 % of the short side wide"
    Params = GlareParams

    def sample(self, d: Sampling):
        rng, b = d.rng, d.b
        amount = (d.s * rng.u(b, 0.5, 1.0) * 0.85).clamp(max=0.97)
        shape = torch.stack([rng.u(b, -0.8, 0.8), rng.u(b, -0.8, 0.8), rng.u(b, 0.1, 0.35), rng.u(b, 0.05, 0.2),
                             rng.u(b, 0.0, math.pi), rng.u(b, 0.2, 0.6)], dim=-1)
        return GlareParams(amount, shape)

    def identity(self, b, device):
        return GlareParams(torch.zeros(b, device=device))

    def active(self, q):
        return q.amount > 0

    def apply(self, images, q, rng):
        """Full washout inside the core, fading smoothly (smoothstep) to nothing at the edge."""
        b, _, h, w = images.shape
        yy, xx = coords(h, w, images.device)
        side = min(h, w)
        u, v = xx[None] * (w / side), yy[None] * (h / side)       # short-side units, isotropic
        s = q.shape
        cx, cy = (s[:, 0] * (w / side))[:, None, None], (s[:, 1] * (h / side))[:, None, None]
        ca, sa = torch.cos(s[:, 4])[:, None, None], torch.sin(s[:, 4])[:, None, None]
        du, dv = u - cx, v - cy
        dist = torch.sqrt(((du * ca + dv * sa) / s[:, 2, None, None]) ** 2
                          + ((-du * sa + dv * ca) / s[:, 3, None, None]) ** 2)
        core = s[:, 5, None, None]
        t = ((1 - dist) / (1 - core)).clamp(0, 1)
        wash = (q.amount[:, None, None] * t * t * (3 - 2 * t))[:, None]
        return images + wash * (1 - images)
