"""The torch batch renderer: ``[B, 12, T]`` mV → ``[B, 3, H, W]`` images at model size.

The whole page is letterboxed into the model input (never cropped) exactly where
:func:`letterbox` would put a downscaled full page. The background (grid, pulses,
labels) is an area-downscale of the full-resolution page, built once per style and
size. Traces are drawn straight at model size with the column-span method of
:mod:`ecgscan_cli.render.page`, on ``k`` sub-columns per pixel column (min/max of the
samples in each sub-column by ``scatter_reduce``), with the ink density scaled to the
stroke's true area: the result looks like an area-downscaled full-page render.

Everything is vectorised over the batch and runs on the signals' device; the only
Python loop is over the 4 rows of the page.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.render.layout import (
    LayoutOptions, PixelMap, letterbox_geometry, model_pixel_map, page_geometry, page_size_px,
)
from ecgscan_cli.render.page import background, row_polylines

REF_DPI = 200.0


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


# ---------------------------------------------------------------- letterbox

def letterbox(image, size):
    """Fit ``image`` inside ``size`` (int or (H, W)), centred, padded with white.

    numpy uint8 ``H×W×3`` → numpy uint8 (area filter, via Pillow); torch ``[3,H,W]`` or
    ``[B,3,H,W]`` float in [0, 1] → same type and device (antialiased bilinear).
    """
    oh, ow = _size_hw(size)
    if isinstance(image, torch.Tensor):
        x = image[None] if image.dim() == 3 else image
        if x.dim() != 4:
            raise EcgscanError(f"letterbox: expected [3,H,W] or [B,3,H,W], got {tuple(image.shape)}")
        nh, nw, top, left = letterbox_geometry(x.shape[-2], x.shape[-1], (oh, ow))
        as_uint8 = x.dtype == torch.uint8
        xf = x.float() / 255.0 if as_uint8 else x.float()
        y = F.interpolate(xf, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        out = torch.ones(x.shape[0], x.shape[1], oh, ow, dtype=y.dtype, device=x.device)
        out[..., top:top + nh, left:left + nw] = y.clamp(0, 1)
        if as_uint8:
            out = out.mul_(255).add_(0.5).to(torch.uint8)
        return out[0] if image.dim() == 3 else out
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise EcgscanError(f"letterbox: expected an H×W×3 image, got shape {arr.shape}")
    nh, nw, top, left = letterbox_geometry(arr.shape[0], arr.shape[1], (oh, ow))
    small = np.asarray(Image.fromarray(arr.astype(np.uint8)).resize((nw, nh), Image.BOX))
    out = np.full((oh, ow, 3), 255, np.uint8)
    out[top:top + nh, left:left + nw] = small
    return out


# ---------------------------------------------------------------- per-geometry plan

@dataclass
class _Row:
    idx: torch.Tensor        # [N] long, into flat signals (12*T is the NaN slot)
    x: torch.Tensor          # [N] output px
    baseline: float          # output px row of 0 mV
    c0: int                  # first output column of the strip
    ncol: int
    ia: torch.Tensor         # [E] edge interpolation: left sample
    ib: torch.Tensor
    t: torch.Tensor          # [E] weight of ib
    edge_ok: torch.Tensor    # [E] bool
    sub: torch.Tensor        # [N] sub-column of each sample (ncol*k = dump)


@dataclass
class _Plan:
    rows: list
    k: int
    pmap: PixelMap
    gain: float
    width: float             # line width, output px
    pen: float = 1.0         # one reference-page pixel, output px


@functools.lru_cache(maxsize=32)
def _plan_cpu(n_samples: int, fs: float, size: tuple[int, int], options: LayoutOptions) -> _Plan:
    geo = page_geometry(options)
    pm = model_pixel_map(geo, size, REF_DPI)
    ref_ppm = REF_DPI / 25.4
    k = int(min(8, max(1, math.ceil(ref_ppm / pm.sx / 2.5))))
    fake = np.zeros((12, n_samples))
    rows = []
    for r, (idx, xmm) in enumerate(row_polylines(geo, fake, fs)):
        idx = np.where(idx < 0, 12 * n_samples, idx)
        x = pm.x(xmm)
        c0 = max(int(math.floor(x.min())), 0)
        c1 = min(int(math.ceil(x.max())) + 1, pm.width)
        ncol = c1 - c0
        edges = c0 + np.arange(ncol * k + 1) / k
        n = x.size
        i = np.clip(np.searchsorted(x, edges, side="left"), 1, n - 1)  # left limits, as page._edge_values
        xa, xb = x[i - 1], x[i]
        dx = xb - xa
        t = np.clip(np.where(dx > 0, (edges - xa) / np.where(dx > 0, dx, 1.0), 1.0), 0, 1)
        ok = (edges > x[0]) & (edges <= x[-1])
        sub = np.floor((x - c0) * k).astype(np.int64)
        sub = np.where((sub >= 0) & (sub < ncol * k), sub, ncol * k)
        rows.append(_Row(torch.from_numpy(idx.astype(np.int64)), torch.from_numpy(x.astype(np.float32)),
                         float(pm.y(geo.baselines_mm[r])), c0, ncol,
                         torch.from_numpy(i - 1), torch.from_numpy(i), torch.from_numpy(t.astype(np.float32)),
                         torch.from_numpy(ok), torch.from_numpy(sub)))
    width = options.line_width_mm * (pm.sx + pm.sy) / 2
    return _Plan(rows, k, pm, float(options.gain) * pm.sy, width, pm.sx / ref_ppm)


_device_cache: dict = {}


def _plan(n_samples, fs, size, options, device) -> _Plan:
    key = (n_samples, float(fs), size, options, str(device))
    plan = _device_cache.get(key)
    if plan is None:
        cpu = _plan_cpu(n_samples, float(fs), size, options)
        rows = [_Row(*(getattr(r, f).to(device) if isinstance(getattr(r, f), torch.Tensor) else getattr(r, f)
                       for f in r.__dataclass_fields__)) for r in cpu.rows]
        plan = _Plan(rows, cpu.k, cpu.pmap, cpu.gain, cpu.width, cpu.pen)
        if len(_device_cache) > 64:
            _device_cache.clear()
        _device_cache[key] = plan
    return plan


@functools.lru_cache(maxsize=64)
def _background_cpu(options: LayoutOptions, size: tuple[int, int]) -> torch.Tensor:
    """The static page area-downscaled into its letterbox place (same geometry as ``letterbox``).

    Drawn at a dpi of about 4 source pixels per output pixel (at most 200), which is plenty
    for an area filter and much cheaper than a 200-dpi page for every grid style.
    """
    from PIL import Image

    geo = page_geometry(options)
    ph, pw = page_size_px(geo, REF_DPI)
    nh, nw, top, left = letterbox_geometry(ph, pw, size)
    dpi = float(min(REF_DPI, max(60.0, math.ceil(4.0 * nw / geo.width_mm * 25.4))))
    page = background(options, dpi)
    small = np.asarray(Image.fromarray(page).resize((nw, nh), Image.BOX))
    out = np.full((size[0], size[1], 3), 255, np.uint8)
    out[top:top + nh, left:left + nw] = small
    return torch.from_numpy(out).permute(2, 0, 1).float().div_(255.0)


def backgrounds(options: LayoutOptions, size, grids, device) -> torch.Tensor:
    """``[G, 3, H, W]`` backgrounds at model size, one per grid style in ``grids``."""
    size = _size_hw(size)
    key = ("bg", options, size, tuple(grids), str(device))
    bg = _device_cache.get(key)
    if bg is None:
        bg = torch.stack([_background_cpu(options.with_(grid=g), size) for g in grids]).to(device)
        _device_cache[key] = bg
    return bg


# ---------------------------------------------------------------- traces

def draw_traces(images: torch.Tensor, signals: torch.Tensor, plan: _Plan, ink: torch.Tensor) -> torch.Tensor:
    """Composite the traces of ``signals`` [B,12,T] onto ``images`` [B,3,H,W] in place."""
    b = signals.shape[0]
    dev = signals.device
    flat = torch.cat([signals.reshape(b, -1).float(), torch.full((b, 1), float("nan"), device=dev)], dim=1)
    k, w = plan.k, plan.width
    h = images.shape[-2]
    inf = torch.tensor(float("inf"), device=dev)
    for row in plan.rows:
        y = row.baseline - flat[:, row.idx] * plan.gain                     # [B, N] px
        ya, yb = y[:, row.ia], y[:, row.ib]
        e = ya + row.t * (yb - ya)
        e = torch.where(row.edge_ok, e, torch.nan)
        lo = torch.fmin(e[:, :-1], e[:, 1:])
        hi = torch.fmax(e[:, :-1], e[:, 1:])
        nsub = row.ncol * k
        sub = row.sub.expand(b, -1)
        smin = torch.full((b, nsub + 1), float("inf"), device=dev).scatter_reduce(
            1, sub, torch.nan_to_num(y, nan=float("inf")), "amin", include_self=True)
        smax = torch.full((b, nsub + 1), float("-inf"), device=dev).scatter_reduce(
            1, sub, torch.nan_to_num(y, nan=float("-inf")), "amax", include_self=True)
        lo = torch.fmin(lo, smin[:, :nsub])
        hi = torch.fmax(hi, smax[:, :nsub])
        finite = torch.isfinite(lo) & torch.isfinite(hi) & (lo <= hi)
        if not bool(finite.any()):
            continue
        a = torch.where(finite, lo - w / 2, inf)
        bb = torch.where(finite, hi + w / 2, -inf)
        r0 = max(int(math.floor(a.min().item())), 0)
        r1 = min(int(math.ceil(bb.max().item())), h)
        if r1 <= r0:
            continue
        length = torch.where(finite, hi - lo, torch.zeros((), device=dev))
        d = 1.0 / k
        # ink area of the stroke in this sub-column, as the full-resolution page draws it: steep
        # strokes are one page pixel (plan.pen out px) wide, others line-width thick
        area = torch.minimum(length * plan.pen + w * d, w * torch.sqrt(d * d + length * length))
        density = torch.clamp(area / ((length + w) * d), max=1.0)
        density = torch.where(finite, density, torch.zeros((), device=dev))
        a = torch.where(finite, a, torch.zeros((), device=dev))
        bb = torch.where(finite, bb, torch.zeros((), device=dev))
        rows = torch.arange(r0, r1, device=dev, dtype=torch.float32)[None, :, None]
        ov = (torch.minimum(rows + 1, bb[:, None, :]) - torch.maximum(rows, a[:, None, :])).clamp_(0, 1)
        alpha = (ov * density[:, None, :]).view(b, r1 - r0, row.ncol, k).mean(-1)      # [B, R, C]
        region = images[:, :, r0:r1, row.c0:row.c0 + row.ncol]
        region += (ink[:, :, None, None] - region) * alpha[:, None]
    return images


# ---------------------------------------------------------------- entry point

def render_batch(signals: torch.Tensor, size=224, augment="none", fs: float = 500.0,
                 generator: torch.Generator | None = None, *, options: LayoutOptions | None = None,
                 return_params: bool = False):
    """Render ``signals`` [B,12,T] (mV, NaN = gap) as printouts ``[B,3,H,W]`` float32 in [0,1].

    The page is letterboxed into ``size``; ``augment`` is a preset name or an
    :class:`AugmentConfig`; ``generator`` seeds the augmentations. Runs on the signals'
    device. With ``return_params=True`` also returns the drawn augmentation parameters
    (dict of tensors with a leading batch dimension).
    """
    from ecgscan_cli.render.augment import apply_augment, draw_params, resolve_augment

    if not isinstance(signals, torch.Tensor):
        signals = torch.as_tensor(np.asarray(signals, np.float32))
    if signals.dim() != 3 or signals.shape[1] != 12:
        raise EcgscanError(f"render_batch: expected signals [B, 12, T], got {tuple(signals.shape)}")
    if signals.shape[-1] < 2:
        raise EcgscanError("render_batch: signals need at least 2 samples")
    options = (options or LayoutOptions()).check()
    size = _size_hw(size)
    cfg = resolve_augment(augment)
    dev = signals.device
    b = signals.shape[0]
    params = draw_params(cfg, b, size, options.grid, generator, dev)
    grids = params["_grids"]
    bg = backgrounds(options, size, grids, dev)
    images = bg[params["grid"]] if len(grids) > 1 else bg.expand(b, -1, -1, -1).clone()
    if b:
        plan = _plan(int(signals.shape[-1]), float(fs), size, options, dev)
        draw_traces(images, signals, plan, params["ink"])
        images = apply_augment(images, params)
    images = images.clamp_(0, 1)
    if return_params:
        return images, {k: v for k, v in params.items() if not k.startswith("_") or k == "_grids"}
    return images
