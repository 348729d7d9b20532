"""Applying a draw: the documented order of steps, the one sampling grid, targets that follow.

Steps (:data:`APPLY_STEPS`), each on only the images it changes: tint → strokes →
speckles (on the paper, so they move with it) → warp (every geometric augmentation, one
grid) → shading (wrinkles, creases, lighting: one smooth field) → glare → colour cast →
tone (contrast then brightness, clamped once) → gamma → blur → motion blur → noise →
JPEG → binarize or grayscale. Ink and grid are drawn by the renderers. The order is part
of the result: the pipeline draws speckles and noise from the generator as it goes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.render.augmentations.catalogue import AUGMENTATIONS, INSTANCES
from ecgscan_cli.render.augmentations.config import resolve_augment
from ecgscan_cli.render.augmentations.draw import AugmentDraw, draw_params
from ecgscan_cli.render.augmentations.geometry import Pose, coords, lowres

RENDERER_DRAWN = ("ink", "grid")   # used by render_batch / render_page, not by the pipeline
GEOMETRIC = [a for a in INSTANCES.values() if a.geometric]
SHADING = [a for a in INSTANCES.values() if hasattr(a, "shade")]


def _on_subset(img, mask, draw: AugmentDraw, fn):
    """``fn(img_subset, draw_subset)`` on only the images where ``mask`` is set (in place:
    the pipeline owns its input)."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return img
    if idx.numel() == img.shape[0]:
        return fn(img, draw)
    img[idx] = fn(img[idx], draw.subset(idx))
    return img


class Apply:
    """One augmentation's own ``apply``."""

    def __init__(self, name):
        self.names = (name,)
        self.aug = INSTANCES[name]

    def __call__(self, img, draw):
        name = self.aug.name
        return _on_subset(img, self.aug.active(draw.params[name]), draw,
                          lambda x, d: self.aug.apply(x, d.params[name], d.rng))


class Warp:
    """Every geometric augmentation through one sampling grid (:func:`warp_grid`)."""
    names = tuple(a.name for a in GEOMETRIC)

    def __call__(self, img, draw):
        return _on_subset(img, geometric_mask(draw), draw, _warp_image)


class Shading:
    """One multiplicative shading field (half resolution, upsampled) from every ``shade``."""
    names = tuple(a.name for a in SHADING)

    def __call__(self, img, draw):
        mask = torch.zeros(img.shape[0], dtype=torch.bool, device=img.device)
        for a in SHADING:
            mask = mask | a.shading_active(draw.params[a.name])
        return _on_subset(img, mask, draw, _shade)


class Tone:
    """Pointwise ``tone`` maps in the given order, clamped to 0..1 once at the end."""

    def __init__(self, *names):
        self.names = names

    def __call__(self, img, draw):
        mask = torch.zeros(img.shape[0], dtype=torch.bool, device=img.device)
        for n in self.names:
            mask = mask | INSTANCES[n].active(draw.params[n])

        def fn(x, d):
            for n in self.names:
                x = INSTANCES[n].tone(x, d.params[n])
            return x.clamp_(0, 1)
        return _on_subset(img, mask, draw, fn)


class FirstOf:
    """Alternatives: an image drawn for several gets only the first (binarize over grayscale)."""

    def __init__(self, *names):
        self.names = names

    def __call__(self, img, draw):
        taken = torch.zeros(img.shape[0], dtype=torch.bool, device=img.device)
        for n in self.names:
            aug = INSTANCES[n]
            on = aug.active(draw.params[n])
            img = _on_subset(img, on & ~taken, draw, lambda x, d, a=aug, n=n: a.apply(x, d.params[n], d.rng))
            taken = taken | on
        return img


APPLY_STEPS = (Apply("tint"), Apply("strokes"), Apply("speckles"), Warp(), Shading(), Apply("glare"),
               Apply("colour_cast"), Tone("contrast", "brightness"), Apply("gamma"), Apply("blur"),
               Apply("motion_blur"), Apply("noise"), Apply("jpeg"), FirstOf("binarize", "grayscale"))
assert {n for s in APPLY_STEPS for n in s.names} | set(RENDERER_DRAWN) == set(AUGMENTATIONS), \
    "an augmentation that no step applies"


def apply_augment(img: torch.Tensor, P: AugmentDraw) -> torch.Tensor:
    """Apply the drawn augmentations to ``img`` [B,3,H,W] in [0,1] (modified in place and returned)."""
    for step in APPLY_STEPS:
        img = step(img, P)
    return img.clamp_(0, 1)


def geometric_mask(draw: AugmentDraw) -> torch.Tensor:
    """[B] bool: the images that a geometric augmentation moves (the others are not resampled)."""
    mask = None
    for a in GEOMETRIC:
        on = a.active(draw.params[a.name])
        mask = on if mask is None else mask | on
    return mask


def warp_grid(P: AugmentDraw, h: int, w: int, device) -> torch.Tensor:
    """The sampling grid [B,H,W,2] (``grid_sample`` convention) of the geometric augmentations.

    One grid moves the image and anything that must stay aligned with it (the digitiser's
    trace and grid targets, see :func:`warp_targets`). The map is smooth: it is computed at
    1/4 resolution and upsampled (align_corners=False keeps pixel centres). In order: the
    similarity (``pose``: rotation, scale, crop, background), the projective division
    (``project``: perspective), then displacements of the page (``displace``: wrinkles, curl)."""
    lh, lw = lowres(h, w)
    ar = w / max(h, w), h / max(h, w)          # aspect: normalised → isotropic units
    yy, xx = coords(lh, lw, device)
    u = xx[None] * ar[0]
    v = yy[None] * ar[1]
    pose = Pose()
    for a in GEOMETRIC:
        a.pose(pose, P.params[a.name])
    n = P["scale"].shape[0]
    th = pose.angle if pose.angle is not None else torch.zeros(n, device=device)
    z = pose.zoom if pose.zoom is not None else torch.ones(n, device=device)
    shift = pose.shift if pose.shift is not None else torch.zeros(n, 2, device=device)
    c, s = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    zi = (1.0 / z)[:, None, None]
    su = (c * u + s * v) * zi + shift[:, 0, None, None] * ar[0]
    sv = (-s * u + c * v) * zi + shift[:, 1, None, None] * ar[1]
    for a in GEOMETRIC:
        su, sv = a.project(su, sv, u, v, P.params[a.name])
    gx, gy = su / ar[0], sv / ar[1]
    for a in GEOMETRIC:
        gx, gy = a.displace(gx, gy, P.params[a.name])
    grid = torch.stack([gx, gy], dim=1)
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def _warp_image(img, draw):
    grid = warp_grid(draw, img.shape[-2], img.shape[-1], img.device)
    # resample the ink (1 − image) so that outside the page is white
    out = 1.0 - F.grid_sample(1.0 - img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    for a in GEOMETRIC:
        if hasattr(a, "after_warp"):
            out = a.after_warp(out, grid, draw.params[a.name])
    return out


def _shade(img, draw):
    b, _, h, w = img.shape
    lh, lw = lowres(h, w, 2)
    shade = torch.ones(b, lh, lw, device=img.device)
    yy, xx = coords(lh, lw, img.device)
    for a in SHADING:
        shade = a.shade(shade, yy, xx, draw.params[a.name])
    shade = F.interpolate(shade[:, None], size=(h, w), mode="bilinear", align_corners=False)
    return img * shade


def warp_targets(targets: torch.Tensor, P: AugmentDraw) -> torch.Tensor:
    """``targets`` [B,C,H,W] (0 = nothing) moved exactly as :func:`apply_augment` moves the image.

    Only the images a geometric augmentation moved are resampled, as in :func:`apply_augment`
    (the sampling grid is upsampled from 1/4 resolution and is not the identity at the
    border, so resampling the others would shift their edge pixels). Returns a new tensor."""
    def fn(t, d):
        grid = warp_grid(d, t.shape[-2], t.shape[-1], t.device)
        return F.grid_sample(t, grid.to(t.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)

    return _on_subset(targets.clone(), geometric_mask(P), P, fn)


def augment_with_targets(images: torch.Tensor, targets: torch.Tensor, cfg, generator=None,
                         base_grid: str = "red") -> tuple[torch.Tensor, torch.Tensor]:
    """Augment ``images`` [B,3,H,W] (float, 0..1) and move ``targets`` [B,C,h,w] with them.

    One draw of parameters (``cfg``: preset name, config file or :class:`AugmentConfig`,
    seeded by ``generator``) is applied to the images (:func:`apply_augment`) and its
    geometric part to the targets (:func:`warp_targets`), so a pixel of a target channel
    stays on the ink it marks. Targets may have another resolution than the images (same
    aspect ratio): the warp is defined in normalised coordinates. Neither input is modified.
    The ``grid`` augmentation restyles the page only when rendering (``render_batch``); here
    it has no effect."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise EcgscanError(f"augment_with_targets: expected images [B,3,H,W], got {tuple(images.shape)}")
    if targets.dim() != 4 or targets.shape[0] != images.shape[0]:
        raise EcgscanError(f"augment_with_targets: expected targets [B,C,H,W] with B={images.shape[0]}, "
                           f"got {tuple(targets.shape)}")
    cfg = resolve_augment(cfg)
    params = draw_params(cfg, images.shape[0], tuple(images.shape[-2:]), base_grid, generator, images.device)
    out = apply_augment(images.float().clone(), params)
    return out, warp_targets(targets.float(), params)
