"""The torch batch renderer: ``[B, 12, T]`` mV → ``[B, 3, H, W]`` images at model size.

The whole page is letterboxed into the model input (never cropped) exactly where
:func:`letterbox` would put a downscaled full page. The background (grid, pulses,
labels) is :func:`ecgscan_cli.render.page.scaled_background`, an area-downscale of the
static page, built once per style and size. Traces are drawn straight at model size by
the one rasteriser of :mod:`ecgscan_cli.render.raster` (``k`` sub-columns per pixel
column, ink density scaled to the stroke's true area), evaluated densely over each row's
band: the result looks like an area-downscaled full-page render, and is what
:func:`ecgscan_cli.render.page.render_page` draws at the same size.

Everything is vectorised over the batch and runs on the signals' device; the only
Python loop is over the 4 rows of the page.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.render.layout import (
    LayoutOptions, PixelMap, letterbox_geometry, model_pixel_map, page_geometry, page_size_px,
)
from ecgscan_cli.render.page import row_polylines, scaled_background
from ecgscan_cli.render.raster import (
    REF_DPI, ColumnPlan, column_plan, coverage, ink_density, spans, trace_sampling,
)



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
    baseline: float          # output px row of 0 mV
    columns: ColumnPlan      # sub-column edges and samples of the row's polyline


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
    k, pen = trace_sampling(pm.sx)
    fake = np.zeros((12, n_samples))
    rows = []
    for r, (idx, xmm) in enumerate(row_polylines(geo, fake, fs)):
        idx = np.where(idx < 0, 12 * n_samples, idx)
        x = pm.x(xmm)
        c0 = max(int(math.floor(x.min())), 0)
        c1 = min(int(math.ceil(x.max())) + 1, pm.width)
        rows.append(_Row(torch.from_numpy(idx.astype(np.int64)), float(pm.y(geo.baselines_mm[r])),
                         column_plan(x, c0, c1 - c0, k, np.float32).to_torch("cpu")))
    width = options.line_width_mm * (pm.sx + pm.sy) / 2
    return _Plan(rows, k, pm, float(options.gain) * pm.sy, width, pen)


_device_cache: dict = {}


def _plan(n_samples, fs, size, options, device) -> _Plan:
    key = (n_samples, float(fs), size, options, str(device))
    plan = _device_cache.get(key)
    if plan is None:
        cpu = _plan_cpu(n_samples, float(fs), size, options)
        rows = [_Row(r.idx.to(device), r.baseline, r.columns.to_torch(device)) for r in cpu.rows]
        plan = replace(cpu, rows=rows)
        if len(_device_cache) > 64:
            _device_cache.clear()
        _device_cache[key] = plan
    return plan


@functools.lru_cache(maxsize=64)
def _background_cpu(options: LayoutOptions, size: tuple[int, int]) -> torch.Tensor:
    """The static page area-downscaled into its letterbox place (same geometry as ``letterbox``)."""
    geo = page_geometry(options)
    ph, pw = page_size_px(geo, REF_DPI)
    nh, nw, top, left = letterbox_geometry(ph, pw, size)
    out = np.full((size[0], size[1], 3), 255, np.uint8)
    out[top:top + nh, left:left + nw] = scaled_background(options, nh, nw)
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
        lo, hi = spans(y, row.columns)
        density, inked = ink_density(lo, hi, w, plan.pen, k)
        if not bool(inked.any()):
            continue
        a = torch.where(inked, lo - w / 2, inf)
        bb = torch.where(inked, hi + w / 2, -inf)
        # the band of rows any image inks: dense evaluation there
        r0 = max(int(math.floor(a.min().item())), 0)
        r1 = min(int(math.ceil(bb.max().item())), h)
        if r1 <= r0:
            continue
        zero = torch.zeros((), device=dev)
        a = torch.where(inked, a, zero)
        bb = torch.where(inked, bb, zero)
        rows = torch.arange(r0, r1, device=dev, dtype=torch.float32)[None, :, None]
        ov = coverage(rows, a[:, None, :], bb[:, None, :])
        ncol = row.columns.ncol
        alpha = (ov * density[:, None, :]).view(b, r1 - r0, ncol, k).mean(-1)      # [B, R, C]
        region = images[:, :, r0:r1, row.columns.c0:row.columns.c0 + ncol]
        region += (ink[:, :, None, None] - region) * alpha[:, None]
    return images


# ---------------------------------------------------------------- entry point

def render_batch(signals: torch.Tensor, size=224, augment="none", fs: float = canonical.FS,
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
