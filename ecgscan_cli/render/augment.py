"""Augmentations of rendered printouts, vectorised over the batch (torch, any device).

Each augmentation has a probability ``p`` (drawn per image) and a ``strength`` (0..2, rotation
0..5 and perspective 0..3; 1 = the documented maximum below, values drawn uniformly up to it).
Presets: ``none``, ``light``, ``paper``, ``heavy``, ``photo`` (a phone picture of a printout);
or a YAML/JSON file::

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

Geometry (rotation, perspective, scale, crop, wrinkles, background, curl) is one sampling
grid (:func:`warp_grid`) that :func:`warp_targets` applies to targets as well;
:func:`augment_with_targets` does both for a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ecgscan_cli.configfile import read_config_file
from ecgscan_cli.errors import EcgscanError

BASE_AUGMENTS = ("rotation", "perspective", "scale", "crop", "wrinkles", "creases", "lighting", "tint", "ink",
                 "brightness", "contrast", "gamma", "grayscale", "binarize", "noise", "blur", "jpeg", "speckles",
                 "grid")
# drawn after everything in BASE_AUGMENTS and only when a config switches one on, so the
# older presets (and any config that leaves these off) draw exactly what they drew before
PHOTO_AUGMENTS = ("background", "curl", "colour_cast", "strokes")
AUGMENTS = BASE_AUGMENTS + PHOTO_AUGMENTS
# the largest strength a config may ask for (2 unless listed): the photo preset tilts the
# page by up to ±15° (rotation strength 5) and photographs it at a steep angle
MAX_STRENGTH = {"rotation": 5.0, "perspective": 3.0}
BACKGROUND_KINDS = ("none", "wood", "cloth", "desk")
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
    # a phone picture of a printout: the page on a desk, tilted, curled, unevenly lit, written on
    "photo": _specs(rotation=(0.8, 5.0), perspective=(0.8, 2.5), scale=(0.3, 1.0), crop=(0.1, 0.5),
                    wrinkles=(0.5, 1.0), creases=(0.5, 1.5), lighting=(0.9, 0.6), tint=(0.7, 1.0),
                    ink=(0.6, 1.0), brightness=(0.6, 1.0), contrast=(0.5, 1.0), gamma=(0.5, 1.0),
                    grayscale=(0.05, 1.0), noise=(0.7, 0.7), blur=(0.6, 1.0), jpeg=(0.7, 1.0),
                    speckles=(0.3, 1.0), grid=(0.6, 1.0), background=(0.85, 1.0), curl=(0.5, 1.0),
                    colour_cast=(0.7, 1.0), strokes=(0.5, 1.0)),
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
            top = MAX_STRENGTH.get(key, 2.0)
            if not (0.0 <= p <= 1.0) or not (0.0 <= s <= top):
                raise EcgscanError(f"augment config {key!r}: p must be in [0, 1] and strength in [0, {top:g}]")
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
    if str(augment) not in PRESETS and Path(str(augment)).is_file():  # a YAML/JSON file, as `render` reads
        return AugmentConfig.from_file(augment)
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
    for name in BASE_AUGMENTS:  # fixed order → same seed, same draws
        spec = cfg.specs[name]
        draw = rng.rand(b)
        on[name] = (draw < spec.p) & torch.tensor(spec.strength > 0, device=rng.device)
    s = {name: cfg.specs[name].strength * on[name].float() for name in BASE_AUGMENTS}
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
    _draw_photo_params(P, cfg, b, rng)
    P["_rng"] = rng
    return P


STROKE_LINES = 4     # handwriting lines per image (each on with probability 0.6)
STAMP_BLOBS = 6      # "words" inside a stamp
_PEN_COLOURS = ((0.1, 0.15, 0.6), (0.08, 0.08, 0.1), (0.15, 0.2, 0.45))          # blue, black, navy ballpoint
_STAMP_COLOURS = ((0.75, 0.1, 0.15), (0.15, 0.25, 0.7), (0.45, 0.15, 0.55), (0.1, 0.45, 0.25))


def _pick(rng, b, palette):
    table = torch.tensor(palette, device=rng.device)
    return table[(rng.rand(b) * len(table)).long().clamp_(max=len(table) - 1)]


def _draw_photo_params(P: dict, cfg: AugmentConfig, b: int, rng: _Rng) -> None:
    """The photo augmentations' parameters, drawn after all the others (see PHOTO_AUGMENTS).

    Nothing is drawn when the config leaves them all off: identity values are filled in
    so that the rest of the pipeline need not ask."""
    dev = rng.device
    P.update({"background": torch.zeros(b, device=dev), "background_kind": torch.zeros(b, dtype=torch.long, device=dev),
              "background_shift": torch.zeros(b, 2, device=dev), "curl": torch.zeros(b, device=dev),
              "colour_gain": torch.ones(b, 3, device=dev), "colour_offset": torch.zeros(b, 3, device=dev),
              "strokes": torch.zeros(b, device=dev)})
    specs = {name: cfg.specs.get(name, AugSpec()) for name in PHOTO_AUGMENTS}
    if not any(v.p > 0 and v.strength > 0 for v in specs.values()):
        return
    on = {name: (rng.rand(b) < specs[name].p) & torch.tensor(specs[name].strength > 0, device=dev)
          for name in PHOTO_AUGMENTS}
    s = {name: specs[name].strength * on[name].float() for name in PHOTO_AUGMENTS}
    # background: the page shrunk by up to 25 % (and moved off centre) so that the desk shows
    shrink = s["background"] * rng.u(b, 0.2, 1.0) * 0.25
    P["background"] = shrink
    kind = 1 + (rng.rand(b) * 3).long().clamp_(max=2)
    P["background_kind"] = torch.where(on["background"], kind, torch.zeros_like(kind))
    slack = (1.0 / (1.0 - shrink.clamp(max=0.9)) - 1.0)[:, None]     # source units the page can move
    P["background_shift"] = slack * 0.6 * rng.u(b, -1, 1, 2)
    P["_bg_field"] = rng.randn(b, 2, 6, 8)                            # low-frequency warp / mottling
    P["_bg_geo"] = rng.rand(b, 4)                                     # angle, frequency, fine period, sharpness
    wood = torch.tensor([0.55, 0.36, 0.2], device=dev) * rng.u(b, 0.55, 1.35)[:, None]
    cloth = rng.u(b, 0.08, 0.85, 3)
    desk = rng.u(b, 0.12, 0.95)[:, None] * (1.0 + 0.08 * rng.u(b, -1, 1, 3))
    P["_bg_colour"] = torch.stack([wood, cloth, desk], dim=1).clamp_(0, 1)   # [B, 3 kinds, 3]
    # curl: one edge of the page lifts and bends (part of the sampling grid, so targets follow)
    P["curl"] = s["curl"] * rng.u(b, 0.3, 1.0) * 0.25
    edge = (rng.rand(b) * 4).floor().clamp_(max=3)
    P["_curl"] = torch.stack([edge * (math.pi / 2) + rng.u(b, -0.15, 0.15), rng.u(b, 0.2, 0.6)], dim=-1)
    # colour cast: warm or cool light (red against blue) plus a little of every channel
    temp = rng.sym(b)
    P["colour_gain"] = 1.0 + s["colour_cast"][:, None] * (
        temp[:, None] * torch.tensor([0.12, 0.0, -0.12], device=dev) + 0.04 * rng.u(b, -1, 1, 3))
    P["colour_offset"] = s["colour_cast"][:, None] * 0.04 * rng.u(b, -1, 1, 3)
    # strokes: ballpoint handwriting (trochoid loops along a line), one curve, maybe a stamp
    P["strokes"] = s["strokes"].clamp(max=1.0) * rng.u(b, 0.6, 1.0)
    P["_stroke_lines"] = rng.rand(b, STROKE_LINES, 8)
    P["_stroke_lines"][:, 0, 0] = 0.0                                 # the first line is always there
    P["_stroke_curve"] = rng.rand(b, 9)                               # on, 4 control points
    P["_stroke_pen"] = _pick(rng, b, _PEN_COLOURS)
    P["_stamp"] = rng.rand(b, 8)                                      # on, kind, centre, size, aspect, angle
    P["_stamp_blobs"] = rng.rand(b, STAMP_BLOBS, 4)
    P["_stamp_colour"] = _pick(rng, b, _STAMP_COLOURS)


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
                if any(abs(x) > 1e-9 for x in _flat(val)) and k not in _GAINS:
                    d[k] = val
                elif k in _GAINS and any(abs(x - 1) > 1e-9 for x in val):
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
        if "background_kind" in d:
            d["background_kind"] = BACKGROUND_KINDS[int(d["background_kind"])]
        out.append(d)
    return out


_GAINS = ("tint", "colour_gain")     # lists whose identity is 1, not 0


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
    shift = P["crop_shift"]
    if "background" in P and bool((P["background"] > 0).any()):   # the desk around the page
        z = z * (1.0 - P["background"])
        shift = shift + P["background_shift"]
    c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    zi = (1.0 / z)[:, None, None]
    su = (c * u + s * v) * zi + shift[:, 0, None, None] * ar[0]
    sv = (-s * u + c * v) * zi + shift[:, 1, None, None] * ar[1]
    den = 1.0 + P["perspective"][:, 0, None, None] * u + P["perspective"][:, 1, None, None] * v
    su, sv = su / den, sv / den
    gx, gy = su / ar[0], sv / ar[1]
    amp = P["wrinkles"]
    field = F.interpolate(P["_wrinkle_field"][:, :2], size=(lh, lw), mode="bicubic", align_corners=False)
    gx = gx + amp[:, None, None] * 0.008 * field[:, 0]
    gy = gy + amp[:, None, None] * 0.008 * field[:, 1]
    if "curl" in P and bool((P["curl"] > 0).any()):
        gx, gy = _curl(gx, gy, P)
    grid = torch.stack([gx, gy], dim=1)
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def _curl(gx, gy, P):
    """Paper curl: beyond a line parallel to one edge the page bends away from the camera.

    Seen from above, the bent band is foreshortened more and more towards the edge
    (quadratic in the distance past the bend, so the map stays smooth) and more at the
    corners than in the middle of the edge, which bows the edge."""
    amp = P["curl"][:, None, None]
    ang = P["_curl"][:, 0, None, None]
    t0 = P["_curl"][:, 1, None, None]
    ca, sa = torch.cos(ang), torch.sin(ang)
    t = gx * ca + gy * sa                      # towards the curled edge (page units, edge at 1)
    q = -gx * sa + gy * ca                     # along the edge
    k = ((t - t0) / (1.0 - t0)).clamp(min=0)
    d = amp * k * k * (0.5 + 0.6 * q * q)
    return gx + d * ca, gy + d * sa


def _warp_fn(img, P):
    grid = warp_grid(P, img.shape[-2], img.shape[-1], img.device)
    out = 1.0 - F.grid_sample(1.0 - img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "background" in P and bool((P["background"] > 0).any()):
        # outside the page the warp gave white; put the desk there instead. The page mask is a
        # ones-image moved by the same grid, so the page edge is antialiased like the page
        b, _, h, w = img.shape
        inside = F.grid_sample(torch.ones(b, 1, h, w, device=img.device, dtype=img.dtype), grid,
                               mode="bilinear", padding_mode="zeros", align_corners=False)
        desk = _on_subset(torch.ones_like(out), P["background_kind"] > 0, P, _background_texture)
        out = out + (1.0 - inside) * (desk - 1.0)
    return out


def _geo_on(P) -> torch.Tensor:
    """[B] bool: the images that a geometric augmentation moves (the others are not resampled)."""
    on = ((P["rotation_deg"] != 0) | (P["perspective"].abs().sum(-1) > 0) | (P["scale"] != 1)
          | (P["crop_zoom"] != 1) | (P["wrinkles"] > 0))
    if "curl" in P:
        on = on | (P["curl"] > 0) | (P["background"] > 0)
    return on


def warp_targets(targets: torch.Tensor, P: dict) -> torch.Tensor:
    """``targets`` [B,C,H,W] (0 = nothing) moved exactly as :func:`apply_augment` moves the image.

    Only the images a geometric augmentation moved are resampled, as in :func:`apply_augment`
    (the sampling grid is upsampled from 1/4 resolution and is not the identity at the
    border, so resampling the others would shift their edge pixels). Returns a new tensor."""
    def fn(t, q):
        grid = warp_grid(q, t.shape[-2], t.shape[-1], t.device)
        return F.grid_sample(t, grid.to(t.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)

    return _on_subset(targets.clone(), _geo_on(P), P, fn)


def _background_texture(x, P):
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
    lh, lw = _lowres(th, tw)
    noise = F.interpolate(P["_bg_field"], size=(lh, lw), mode="bicubic", align_corners=False)
    noise = F.interpolate(noise, size=(th, tw), mode="bilinear", align_corners=False)    # [B,2,h',w']
    yy, xx = _coords(th, tw, dev)
    side = max(h, w)
    u, v = xx[None] * (w / side), yy[None] * (h / side)   # isotropic, ±1 along the long side
    geo = P["_bg_geo"]
    ang = (geo[:, 0] * math.pi)[:, None, None]
    value = torch.empty(b, th, tw, device=dev, dtype=x.dtype)
    colour = torch.empty(b, 3, device=dev, dtype=x.dtype)
    kinds = P["background_kind"]
    for kind in (1, 2, 3):
        idx = (kinds == kind).nonzero().squeeze(1)
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
        colour[idx] = P["_bg_colour"][idx, kind - 1]
    value = value[:, None]
    if f > 1:
        value = F.interpolate(value, size=(h, w), mode="bilinear", align_corners=False)
    return (colour[:, :, None, None] * value).clamp_(0, 1)


def _warp(img, P):
    return _on_subset(img, _geo_on(P), P, _warp_fn)


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


def _strokes(img, P):
    """Ballpoint handwriting, a curve and sometimes a stamp drawn over the page (image only: the
    targets are the ECG trace and the grid, which these cover but do not change)."""
    b, _, h, w = img.shape
    dev, dt = img.device, img.dtype
    side = max(h, w)
    # handwriting lines
    L = P["_stroke_lines"]                                             # [B,K,8]
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
    C = P["_stroke_curve"]
    p0 = torch.stack([C[:, 1] * w, C[:, 2] * h], dim=-1)
    ctrl = [p0] + [p0 + (torch.stack([C[:, 2 * j + 1], C[:, 2 * j + 2]], dim=-1) - 0.5) * 0.4 * side
                   for j in (1, 2, 3)]
    tc = t[:, None]
    curve = ((1 - tc) ** 3 * ctrl[0][:, None] + 3 * (1 - tc) ** 2 * tc * ctrl[1][:, None]
             + 3 * (1 - tc) * tc ** 2 * ctrl[2][:, None] + tc ** 3 * ctrl[3][:, None])   # [B,N,2]
    cink = _ink_along(curve, pen_w) * (C[:, :1] < 0.5)
    pts = torch.cat([lines.reshape(b, -1, 2), curve], dim=1)
    pen = _splat(pts, torch.cat([ink.reshape(b, -1), cink], dim=1), h, w)
    alpha = P["strokes"][:, None, None, None]
    img = img * (pen * (alpha * (P["_stroke_pen"][:, :, None, None] - 1.0))).add_(1.0)
    # a stamp: double circle or rectangle with a few "words" inside, patchy ink
    S = P["_stamp"]
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
    B_ = P["_stamp_blobs"]                                             # [B,S,4]: row, start, length, phase
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
    return img.mul_((stamp * (0.85 * alpha * (P["_stamp_colour"][:, :, None, None] - 1.0))).add_(1.0))


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
    img = _on_subset(img, P["strokes"] > 0, P, _strokes)      # on the paper: moved with it below
    img = _on_subset(img, P["speckles"] > 0, P, _speckles)
    img = _warp(img, P)
    img = _shading(img, P)
    img = _on_subset(img, (P["colour_gain"] != 1).any(-1) | (P["colour_offset"] != 0).any(-1), P, lambda x, q: (
        x * q["colour_gain"][:, :, None, None] + q["colour_offset"][:, :, None, None]).clamp_(0, 1))
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


def augment_with_targets(images: torch.Tensor, targets: torch.Tensor, cfg, generator=None,
                         base_grid: str = "red") -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``images`` [B,3,H,W] (float, 0..1) and move ``targets`` [B,C,h,w] with them.

    One draw of parameters (``cfg``: preset name or :class:`AugmentConfig`, seeded by
    ``generator``) is applied to the images (:func:`apply_augment`) and its geometric part
    to the targets (:func:`warp_targets`), so a pixel of a target channel stays on the ink
    it marks. Targets may have another resolution than the images (same aspect ratio):
    the warp is defined in normalised coordinates. Neither input is modified. The ``grid``
    augmentation restyles the page only when rendering (``render_batch``); here it has no effect.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise EcgscanError(f"augment_with_targets: expected images [B,3,H,W], got {tuple(images.shape)}")
    if targets.dim() != 4 or targets.shape[0] != images.shape[0]:
        raise EcgscanError(f"augment_with_targets: expected targets [B,C,H,W] with B={images.shape[0]}, "
                           f"got {tuple(targets.shape)}")
    cfg = resolve_augment(cfg)
    params = draw_params(cfg, images.shape[0], tuple(images.shape[-2:]), base_grid, generator, images.device)
    out = apply_augment(images.float().clone(), params)
    return out, warp_targets(targets.float(), params)
