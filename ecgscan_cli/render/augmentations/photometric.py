"""Photometric augmentations (the camera or scanner): brightness, contrast, gamma,
grayscale, binarize, noise, blur, JPEG. Pixel values only; targets never move."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from ecgscan_cli.render.augmentations.base import Augmentation, Params, Sampling, param, register


class Photometric(Augmentation):
    group = "photometric"


@dataclasses.dataclass
class BrightnessParams(Params):
    offset: torch.Tensor = param("brightness", "0..1", "added to every channel")


@register
class Brightness(Photometric):
    name = "brightness"
    description = "brighter or darker image"
    strength = "±0.15"
    Params = BrightnessParams

    def sample(self, d: Sampling):
        return BrightnessParams(d.s * d.rng.sym(d.b) * 0.15)

    def active(self, q):
        return q.offset != 0

    def tone(self, x, q):
        """Unclamped: the pipeline's tone step applies contrast, then brightness, then clamps once."""
        return x + q.offset[:, None, None, None]


@dataclasses.dataclass
class ContrastParams(Params):
    factor: torch.Tensor = param("contrast", "×", "contrast about mid-grey", identity=1.0)


@register
class Contrast(Photometric):
    name = "contrast"
    description = "more or less contrast (about mid-grey)"
    strength = "×(1 ± 0.25)"
    Params = ContrastParams

    def sample(self, d):
        return ContrastParams(1.0 + d.s * d.rng.sym(d.b) * 0.25)

    def active(self, q):
        return q.factor != 1

    def tone(self, x, q):
        return (x - 0.5) * q.factor[:, None, None, None] + 0.5


@dataclasses.dataclass
class GammaParams(Params):
    gamma: torch.Tensor = param("gamma", "exponent", "x ** gamma", identity=1.0)


@register
class Gamma(Photometric):
    name = "gamma"
    description = "gamma curve"
    strength = "exponent exp(±0.4)"
    Params = GammaParams

    def sample(self, d):
        return GammaParams(torch.exp(d.s * d.rng.sym(d.b) * 0.4))

    def active(self, q):
        return q.gamma != 1

    def apply(self, images, q, rng):
        return images.clamp(0, 1) ** q.gamma[:, None, None, None]


def _luminance(x):
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]


@dataclasses.dataclass
class GrayscaleParams(Params):
    on: torch.Tensor = param("grayscale", "bool", "luminance only", identity=False)


@register
class Grayscale(Photometric):
    name = "grayscale"
    description = "luminance only (binarize wins where both are drawn)"
    strength = "on (strength only switches it on)"
    Params = GrayscaleParams

    def sample(self, d):
        return GrayscaleParams(d.on)

    def active(self, q):
        return q.on

    def apply(self, images, q, rng):
        return _luminance(images).expand_as(images).contiguous()


@dataclasses.dataclass
class BinarizeParams(Params):
    on: torch.Tensor = param("binarize", "bool", "black and white", identity=False)
    threshold: torch.Tensor = param("binarize_threshold", "0..1", "luminance threshold", report=False)


@register
class Binarize(Photometric):
    name = "binarize"
    description = "black and white at a luminance threshold of 0.45–0.65 (fax, photocopy)"
    strength = "on (strength only switches it on)"
    Params = BinarizeParams

    def sample(self, d):
        return BinarizeParams(d.on, d.rng.u(d.b, 0.45, 0.65))

    def active(self, q):
        return q.on

    def apply(self, images, q, rng):
        binar = (_luminance(images) > q.threshold[:, None, None, None]).to(images.dtype)
        return binar.expand_as(images).contiguous()


@dataclasses.dataclass
class NoiseParams(Params):
    sigma: torch.Tensor = param("noise_sigma", "0..1", "σ of Gaussian noise (the same on all channels)")


@register
class Noise(Photometric):
    name = "noise"
    description = "Gaussian noise"
    strength = "σ up to 0.06"
    Params = NoiseParams

    def sample(self, d):
        return NoiseParams(d.s * d.rng.u(d.b, 0.2, 1) * 0.06)

    def active(self, q):
        return q.sigma > 0

    def apply(self, images, q, rng):
        b, _, h, w = images.shape
        return (images + q.sigma[:, None, None, None] * rng.randn(b, 1, h, w)).clamp_(0, 1)


@dataclasses.dataclass
class BlurParams(Params):
    sigma: torch.Tensor = param("blur_sigma", "pixels", "σ of the Gaussian blur")


@register
class Blur(Photometric):
    name = "blur"
    description = "Gaussian blur (out of focus, low-resolution scan)"
    strength = "σ up to 1.2 px at 224 px (scales with the image)"
    Params = BlurParams

    def sample(self, d):
        return BlurParams(d.s * d.rng.u(d.b, 0.2, 1.0) * 1.2 * d.px)

    def active(self, q):
        return q.sigma > 0.05

    def apply(self, images, q, rng):
        return gaussian_blur(images, q.sigma)


def gaussian_blur(img, sigma):
    """Separable Gaussian blur, one sigma per image (depthwise convolution)."""
    if not bool((sigma > 0.05).any()):
        return img
    b, c, h, w = img.shape
    rad = int(math.ceil(3 * float(sigma.max())))
    rad = max(1, min(rad, min(h, w) // 2 - 1))
    t = torch.arange(-rad, rad + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = (k / k.sum(-1, keepdim=True)).repeat_interleave(c, 0)              # [B*C, K]
    x = img.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (rad, rad, 0, 0), mode="replicate"), k[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, rad, rad), mode="replicate"), k[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


@dataclasses.dataclass
class JpegParams(Params):
    step: torch.Tensor = param("jpeg_step", "0..1", "quantisation step of the 8×8 DCT coefficients")


@register
class Jpeg(Photometric):
    name = "jpeg"
    description = "JPEG-like blocking: 8×8 DCT blocks quantised, coarser at high frequency"
    strength = "quantisation step up to 0.25"
    Params = JpegParams

    def sample(self, d):
        return JpegParams(d.s * d.rng.u(d.b, 0.2, 1.0) * 0.25)

    def active(self, q):
        return q.step > 0

    def apply(self, images, q, rng):
        return jpeg_blocks(images, q.step)


_DCT_CACHE: dict = {}


def _dct64(device, dtype):
    """The 2-D 8×8 DCT-II as one 64×64 matrix (kron of the 1-D DCT with itself)."""
    key = (str(device), dtype)
    if key not in _DCT_CACHE:
        n = torch.arange(8, dtype=torch.float64)
        d = torch.cos(math.pi * (2 * n[None] + 1) * n[:, None] / 16) * math.sqrt(2 / 8)
        d[0] /= math.sqrt(2)
        _DCT_CACHE[key] = torch.kron(d, d).to(device=device, dtype=dtype)
    return _DCT_CACHE[key]


def jpeg_blocks(img, step):
    """JPEG-like blocking: 8×8 DCT blocks quantised (coarser at high frequency), per-image step."""
    if not bool((step > 0).any()):
        return img
    b, c, h, w = img.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = F.pad(img, (0, pw, 0, ph), mode="replicate") if (ph or pw) else img
    H, W = x.shape[-2:]
    k = _dct64(img.device, img.dtype)
    blocks = x.reshape(b, c, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, -1, 64)
    coef = blocks @ k.T
    uv = torch.arange(8, device=img.device, dtype=img.dtype)
    q = (1.0 + 0.6 * (uv[:, None] + uv[None, :])).reshape(64)
    q = step.clamp(min=1e-6)[:, None, None] * q
    coef = torch.round(coef / q) * q
    out = (coef @ k).reshape(b, c, H // 8, W // 8, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, c, H, W)
    out = out[..., :h, :w]
    return torch.where((step > 0)[:, None, None, None], out, img)
