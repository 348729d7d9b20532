"""Augmentations of rendered printouts, vectorised over the batch (torch, any device).

Each augmentation has a probability ``p`` (drawn per image) and a ``strength`` (0..2,
1 = the documented maximum below, values drawn uniformly up to it). Presets:
``none``, ``light``, ``paper``, ``heavy``; or a YAML/JSON file::

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ecgscan_cli.configfile import read_config_file
from ecgscan_cli.errors import EcgscanError

AUGMENTS = ("rotation", "perspective", "scale", "crop", "wrinkles", "creases", "lighting", "tint", "ink",
            "brightness", "contrast", "gamma", "grayscale", "binarize", "noise", "blur", "jpeg", "speckles",
            "grid")
GRID_CHOICES = ("red", "pink", "bold", "coarse", "gray", "blue", "green", "none")


@dataclass(frozen=True)
class AugSpec:
    p: float = 0.0
    strength: float = 1.0


def _specs(**kw) -> dict:
    return {name: AugSpec(*kw[name]) if name in kw else AugSpec() for name in AUGMENTS}


PRESETS: dict[str, dict] = {
    "none": _specs(),
    "light": _specs(rotation=(0.5, 0.3), scale=(0.3, 0.3), brightness=(0.4, 0.4), contrast=(0.3, 0.3),
                    tint=(0.3, 0.4), noise=(0.3, 0.3), blur=(0.2, 0.4), grid=(0.2, 1.0)),
    "paper": _specs(rotation=(0.7, 0.6), perspective=(0.4, 0.5), scale=(0.4, 0.6), crop=(0.2, 0.5),
                    wrinkles=(0.3, 0.7), creases=(0.3, 0.7), lighting=(0.5, 0.7), tint=(0.7, 0.8),
                    ink=(0.4, 1.0), brightness=(0.5, 0.6), contrast=(0.4, 0.6), gamma=(0.3, 0.6),
                    grayscale=(0.1, 1.0), binarize=(0.05, 1.0), noise=(0.5, 0.6), blur=(0.4, 0.6),
                    jpeg=(0.3, 0.6), speckles=(0.4, 0.7), grid=(0.4, 1.0)),
    "heavy": _specs(rotation=(0.9, 1.0), perspective=(0.7, 1.0), scale=(0.6, 1.0), crop=(0.4, 1.0),
                    wrinkles=(0.6, 1.0), creases=(0.6, 1.0), lighting=(0.8, 1.0), tint=(0.8, 1.0),
                    ink=(0.6, 1.0), brightness=(0.7, 1.0), contrast=(0.6, 1.0), gamma=(0.5, 1.0),
                    grayscale=(0.25, 1.0), binarize=(0.1, 1.0), noise=(0.8, 0.7), blur=(0.6, 0.8),
                    jpeg=(0.6, 0.7), speckles=(0.6, 1.0), grid=(0.6, 1.0)),
}


@dataclass(frozen=True)
class AugmentConfig:
    name: str = "none"
    specs: dict = field(default_factory=lambda: dict(PRESETS["none"]))

    def __hash__(self):
        return hash((self.name, tuple(sorted((k, v.p, v.strength) for k, v in self.specs.items()))))

    @classmethod
    def preset(cls, name: str) -> "AugmentConfig":
        if name not in PRESETS:
            raise EcgscanError(f"unknown augment preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(name, dict(PRESETS[name]))

    @classmethod
    def from_dict(cls, data: dict, name: str = "custom") -> "AugmentConfig":
        if not isinstance(data, dict):
            raise EcgscanError("augment config must be a mapping of augmentation name → {p, strength}")
        data = dict(data)
        base = cls.preset(str(data.pop("preset", "none")))
        specs = dict(base.specs)
        for key, value in data.items():
            if key not in AUGMENTS:
                raise EcgscanError(f"unknown augmentation {key!r} in augment config (known: {', '.join(AUGMENTS)})")
            if isinstance(value, (int, float)):
                value = {"p": value}
            if not isinstance(value, dict) or set(value) - {"p", "strength"}:
                raise EcgscanError(f"augment config {key!r}: expected {{p: 0..1, strength: 0..2}}")
            old = specs[key]
            try:
                p = float(value.get("p", old.p))
                s = float(value.get("strength", old.strength))
            except (TypeError, ValueError):
                raise EcgscanError(f"augment config {key!r}: p and strength must be numbers") from None
            if not (0.0 <= p <= 1.0) or not (0.0 <= s <= 2.0):
                raise EcgscanError(f"augment config {key!r}: p must be in [0, 1] and strength in [0, 2]")
            specs[key] = AugSpec(p, s)
        return cls(name, specs)

    @classmethod
    def from_file(cls, path) -> "AugmentConfig":
        path = Path(path)
        data = read_config_file(path, "augment config")
        return cls.from_dict(data or {}, name=path.stem)

    def to_dict(self) -> dict:
        return {k: {"p": v.p, "strength": v.strength} for k, v in self.specs.items()}

    @property
    def active(self) -> bool:
        return any(v.p > 0 and v.strength > 0 for v in self.specs.values())


def resolve_augment(augment) -> AugmentConfig:
    if isinstance(augment, AugmentConfig):
        return augment
    if augment is None:
        return AugmentConfig.preset("none")
    if isinstance(augment, dict):
        return AugmentConfig.from_dict(augment)
    return AugmentConfig.preset(str(augment))


# ---------------------------------------------------------------- random draws

class _Rng:
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


def draw_params(cfg: AugmentConfig, b: int, size, base_grid: str, generator, device) -> dict:
    """All random parameters of a batch (dict of tensors [B, ...]); zero/identity where off."""
    rng = _Rng(generator, device)
    h, w = size
    px = min(h, w) / 224.0
    P: dict = {}
    on = {}
    for name in AUGMENTS:  # fixed order → same seed, same draws
        spec = cfg.specs[name]
        draw = rng.rand(b)
        on[name] = (draw < spec.p) & torch.tensor(spec.strength > 0, device=rng.device)
    s = {name: cfg.specs[name].strength * on[name].float() for name in AUGMENTS}
    P["rotation_deg"] = s["rotation"] * rng.sym(b) * 3.0
    P["perspective"] = s["perspective"][:, None] * rng.sym(b, 2) * 0.06
    P["scale"] = 1.0 - s["scale"] * rng.u(b, 0.2, 1) * 0.12
    zoom = 1.0 + s["crop"] * rng.u(b, 0.2, 1) * 0.06
    P["crop_zoom"] = zoom
    P["crop_shift"] = (zoom - 1.0)[:, None] * rng.u(b, -1, 1, 2)
    P["wrinkles"] = s["wrinkles"] * rng.u(b, 0.3, 1.0)
    P["_wrinkle_field"] = rng.randn(b, 3, 5, 7)
    P["creases"] = s["creases"][:, None] * rng.u(b, 0.3, 1.0, 2) * 0.18 * (rng.rand(b, 2) < torch.tensor(
        [1.0, 0.5], device=rng.device)).float()
    P["crease_line"] = torch.stack([rng.u(b, -0.7, 0.7, 2), rng.u(b, 0, math.pi, 2)], dim=-1)   # offset, angle
    P["lighting"] = s["lighting"] * rng.u(b, 0.2, 1.0)
    P["lighting_dir"] = rng.u(b, 0, 2 * math.pi, 2)
    P["lighting_shadow"] = s["lighting"] * rng.u(b, 0.0, 1.0) * 0.30 * (rng.rand(b) < 0.5).float()
    P["lighting_shadow_pos"] = rng.u(b, -0.8, 0.8)
    P["tint"] = 1.0 - s["tint"][:, None] * rng.u(b, 0.2, 1, 3) * 0.14
    ink_palette = torch.tensor([[0.05, 0.1, 0.45], [0.3, 0.3, 0.3], [0.35, 0.2, 0.1], [0.0, 0.2, 0.1]],
                               device=rng.device)
    pick = (rng.rand(b) * len(ink_palette)).long().clamp_(max=len(ink_palette) - 1)
    P["ink"] = ink_palette[pick] * s["ink"].clamp(max=1.0)[:, None]
    P["brightness"] = s["brightness"] * rng.sym(b) * 0.15
    P["contrast"] = 1.0 + s["contrast"] * rng.sym(b) * 0.25
    P["gamma"] = torch.exp(s["gamma"] * rng.sym(b) * 0.4)
    P["grayscale"] = on["grayscale"]
    P["binarize"] = on["binarize"]
    P["binarize_threshold"] = rng.u(b, 0.45, 0.65)
    P["noise_sigma"] = s["noise"] * rng.u(b, 0.2, 1) * 0.06
    P["blur_sigma"] = s["blur"] * rng.u(b, 0.2, 1.0) * 1.2 * px
    P["jpeg_step"] = s["jpeg"] * rng.u(b, 0.2, 1.0) * 0.25
    P["speckles"] = s["speckles"] * rng.u(b, 0.2, 1) * 0.003
    grids = [base_grid] + [g for g in GRID_CHOICES if g != base_grid]
    other = 1 + (rng.rand(b) * (len(grids) - 1)).long().clamp_(max=len(grids) - 2)
    P["grid"] = torch.where(on["grid"], other, torch.zeros_like(other))
    P["_grids"] = grids if cfg.specs["grid"].p > 0 else [base_grid]
    if cfg.specs["grid"].p <= 0:
        P["grid"] = torch.zeros_like(other)
    P["_noise_seed"] = (rng.rand(1) * 2**31).long()
    P["_rng"] = rng
    return P


def params_to_dicts(params: dict) -> list[dict]:
    """Per-image JSON-friendly parameters: only the augmentations that were applied."""
    b = params["scale"].shape[0]
    out = []
    keys = [k for k in params if not k.startswith("_")]
    cpu = {k: params[k].detach().cpu() for k in keys}
    identity = {"rotation_deg": 0.0, "scale": 1.0, "crop_zoom": 1.0, "contrast": 1.0, "gamma": 1.0, "grid": 0}
    for i in range(b):
        d = {}
        for k in keys:
            v = cpu[k][i]
            val = v.tolist() if v.dim() else v.item()
            if k in ("binarize_threshold", "lighting_dir", "crease_line", "lighting_shadow_pos"):
                continue
            if isinstance(val, list):
                if any(abs(x) > 1e-9 for x in _flat(val)) and k not in ("tint",):
                    d[k] = val
                elif k == "tint" and any(abs(x - 1) > 1e-9 for x in val):
                    d[k] = val
            elif isinstance(val, bool):
                if val:
                    d[k] = True
            elif abs(float(val) - identity.get(k, 0.0)) > 1e-9:
                d[k] = val
        if d.get("binarize"):
            d["binarize_threshold"] = cpu["binarize_threshold"][i].item()
        if "grid" in d and "_grids" in params:
            d["grid"] = params["_grids"][int(d["grid"])]
        out.append(d)
    return out


def _flat(x):
    for v in x:
        if isinstance(v, list):
            yield from _flat(v)
        else:
            yield v


# ---------------------------------------------------------------- application

def _coords(h, w, device):
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 - 1
    return ys[:, None].expand(h, w), xs[None, :].expand(h, w)


def _sub(P: dict, idx) -> dict:
    return {k: (v[idx] if isinstance(v, torch.Tensor) and v.dim() and k != "_noise_seed" else v)
            for k, v in P.items()}


def _on_subset(img, mask, P, fn):
    """Apply ``fn(img_subset, P_subset)`` only to the images where ``mask`` is set."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return img
    if idx.numel() == img.shape[0]:
        return fn(img, P)
    img[idx] = fn(img[idx], _sub(P, idx))   # in place: apply_augment owns its input
    return img


def _lowres(h, w, f=4):
    return max(h // f, 8), max(w // f, 8)


def warp_grid(P: dict, h: int, w: int, device) -> torch.Tensor:
    """The sampling grid [B,H,W,2] (``grid_sample`` convention) of the geometric augmentations.

    One grid moves the image and anything that must stay aligned with it (the digitiser's
    trace and grid targets, see :func:`warp_targets`)."""
    lh, lw = _lowres(h, w)
    ar = w / max(h, w), h / max(h, w)          # aspect: normalised → isotropic units
    yy, xx = _coords(lh, lw, device)
    # the map is smooth: compute it at 1/4 resolution and upsample (align_corners=False keeps centres)
    u = xx[None] * ar[0]
    v = yy[None] * ar[1]
    th = P["rotation_deg"] * math.pi / 180
    z = P["scale"] * P["crop_zoom"]             # >1 zooms in, <1 shrinks
    c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    zi = (1.0 / z)[:, None, None]
    su = (c * u + s * v) * zi + P["crop_shift"][:, 0, None, None] * ar[0]
    sv = (-s * u + c * v) * zi + P["crop_shift"][:, 1, None, None] * ar[1]
    den = 1.0 + P["perspective"][:, 0, None, None] * u + P["perspective"][:, 1, None, None] * v
    su, sv = su / den, sv / den
    gx, gy = su / ar[0], sv / ar[1]
    amp = P["wrinkles"]
    field = F.interpolate(P["_wrinkle_field"][:, :2], size=(lh, lw), mode="bicubic", align_corners=False)
    gx = gx + amp[:, None, None] * 0.008 * field[:, 0]
    gy = gy + amp[:, None, None] * 0.008 * field[:, 1]
    grid = torch.stack([gx, gy], dim=1)
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def _warp_fn(img, P):
    grid = warp_grid(P, img.shape[-2], img.shape[-1], img.device)
    return 1.0 - F.grid_sample(1.0 - img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_targets(targets: torch.Tensor, P: dict) -> torch.Tensor:
    """``targets`` [B,C,H,W] (0 = nothing) moved exactly as :func:`apply_augment` moves the image."""
    grid = warp_grid(P, targets.shape[-2], targets.shape[-1], targets.device)
    return F.grid_sample(targets, grid.to(targets.dtype), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def _warp(img, P):
    geo_on = ((P["rotation_deg"] != 0) | (P["perspective"].abs().sum(-1) > 0) | (P["scale"] != 1)
              | (P["crop_zoom"] != 1) | (P["wrinkles"] > 0))
    return _on_subset(img, geo_on, P, _warp_fn)


def _shading_fn(img, P):
    b, _, h, w = img.shape
    dev = img.device
    lh, lw = _lowres(h, w, 2)
    shade = torch.ones(b, lh, lw, device=dev)
    yy, xx = _coords(lh, lw, dev)
    f = F.interpolate(P["_wrinkle_field"][:, 2:3], size=(lh, lw), mode="bicubic", align_corners=False)[:, 0]
    shade = shade * (1.0 + P["wrinkles"][:, None, None] * 0.1 * f.clamp(-2, 2) / 2)
    for j in range(P["creases"].shape[1]):
        amp = P["creases"][:, j, None, None]
        off = P["crease_line"][:, j, 0, None, None]
        ang = P["crease_line"][:, j, 1, None, None]
        d = (xx[None] * torch.sin(ang) - yy[None] * torch.cos(ang) - off) / 0.04
        fold = 1.2 * d * torch.exp(-0.5 * d * d) - 0.6 * torch.exp(-2.0 * d * d)
        shade = shade * (1.0 + amp * fold)
    a1, a2 = P["lighting_dir"][:, 0, None, None], P["lighting_dir"][:, 1, None, None]
    g = (xx[None] * torch.cos(a1) + yy[None] * torch.sin(a1)) * 0.5 + 0.5
    shade = shade * (1.0 - P["lighting"][:, None, None] * g)
    edge = torch.sigmoid((xx[None] * torch.cos(a2) + yy[None] * torch.sin(a2)
                          - P["lighting_shadow_pos"][:, None, None]) / 0.06)
    shade = shade * (1.0 - P["lighting_shadow"][:, None, None] * edge)
    shade = F.interpolate(shade[:, None], size=(h, w), mode="bilinear", align_corners=False)
    return img * shade


def _shading(img, P):
    on = (P["wrinkles"] > 0) | (P["creases"].sum(-1) > 0) | (P["lighting"] > 0)
    return _on_subset(img, on, P, _shading_fn)


def _blur(img, sigma):
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


def _jpeg(img, step):
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


def _speckles(img, P):
    rng: _Rng = P["_rng"]
    b, _, h, w = img.shape
    m = (rng.rand(b, 1, h, w) < P["speckles"][:, None, None, None]).float()
    if min(h, w) >= 448:  # dust grains span a few pixels on large images
        m = torch.maximum(m, F.max_pool2d(m, 3, stride=1, padding=1) * 0.6)
    return img * (1.0 - m * rng.u(b, 0.4, 0.9)[:, None, None, None])


def apply_augment(img: torch.Tensor, P: dict) -> torch.Tensor:
    """Apply the drawn augmentations to ``img`` [B,3,H,W] in [0,1] (modified in place and returned)."""
    rng: _Rng = P["_rng"]
    b, _, h, w = img.shape
    img = _on_subset(img, (P["tint"] != 1).any(-1), P, lambda x, q: x * q["tint"][:, :, None, None])
    img = _on_subset(img, P["speckles"] > 0, P, _speckles)
    img = _warp(img, P)
    img = _shading(img, P)
    img = _on_subset(img, (P["contrast"] != 1) | (P["brightness"] != 0), P, lambda x, q: (
        (x - 0.5) * q["contrast"][:, None, None, None] + 0.5 + q["brightness"][:, None, None, None]).clamp_(0, 1))
    img = _on_subset(img, P["gamma"] != 1, P, lambda x, q: x.clamp(0, 1) ** q["gamma"][:, None, None, None])
    img = _on_subset(img, P["blur_sigma"] > 0.05, P, lambda x, q: _blur(x, q["blur_sigma"]))
    img = _on_subset(img, P["noise_sigma"] > 0, P,
                     lambda x, q: (x + q["noise_sigma"][:, None, None, None] * rng.randn(x.shape[0], 1, h, w)
                                   ).clamp_(0, 1))
    img = _on_subset(img, P["jpeg_step"] > 0, P, lambda x, q: _jpeg(x, q["jpeg_step"]))
    img = _on_subset(img, P["grayscale"] | P["binarize"], P, _gray)
    return img.clamp_(0, 1)


def _gray(x, q):
    lum = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    binar = (lum > q["binarize_threshold"][:, None, None, None]).to(x.dtype)
    return torch.where(q["binarize"][:, None, None, None], binar, lum).expand_as(x).contiguous()
