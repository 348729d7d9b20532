"""The one trace rasteriser: column spans and ink density, written once for numpy and torch.

Both renderers draw a trace the same way. The pixel columns are cut into ``k``
sub-columns; in each the polyline covers the vertical interval between the min and max
of its values at the sub-column's two edges (linear interpolation, left limits) and of
the samples inside it. Widened by the line width ``w``, that interval is inked with a
density scaled so the ink *area* equals the stroke's: ``min(L·pen + w·d, w·√(d² + L²))``
for a span of length ``L`` in a sub-column of width ``d = 1/k``, where ``pen`` is one
pixel of the 200-dpi reference page in output pixels (steep strokes are one reference
pixel wide, others line-width thick). A pixel's ink is the mean over its sub-columns of
(row overlap with the widened interval) × density.

``k`` and ``pen`` follow from the pixel scale alone (:func:`trace_sampling`), so a page
drawn at some size by :func:`ecgscan_cli.render.page.render_page` (numpy, sparse: only
inked pixels are evaluated) and by :func:`ecgscan_cli.render.batch.render_batch` (torch,
dense over each row's band) get the same ink. The functions below take numpy arrays or
torch tensors (a tiny shim picks the ops); torch is only imported when given tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REF_DPI = 200.0                    # the reference page: smaller renders look like it area-downscaled
REF_PX_PER_MM = REF_DPI / 25.4
MAX_SUB_COLUMNS = 8


def trace_sampling(px_per_mm: float) -> tuple[int, float]:
    """(sub-columns per pixel column, pen in output px) at ``px_per_mm`` output pixels per mm.

    About 2.5 reference pixels per sub-column is enough for the min/max of a span; the pen
    is one reference pixel.
    """
    k = int(min(MAX_SUB_COLUMNS, max(1, math.ceil(REF_PX_PER_MM / px_per_mm / 2.5))))
    return k, px_per_mm / REF_PX_PER_MM


@dataclass
class ColumnPlan:
    """Where a polyline's sub-column edges fall among its samples: depends on x only, so a
    renderer builds it once per layout and reuses it for every signal."""

    c0: int                  # first pixel column
    ncol: int                # pixel columns
    k: int                   # sub-columns per pixel column
    ia: object               # [E] left sample of each edge (E = ncol·k + 1)
    ib: object               # [E] right sample
    t: object                # [E] interpolation weight of ``ib``
    edge_ok: object          # [E] the edge lies on the polyline
    sub: object              # [N] sub-column of each sample (ncol·k: outside)

    def to_torch(self, device) -> "ColumnPlan":
        """The same plan as tensors on ``device`` (numpy arrays or tensors in, dtypes kept)."""
        import torch

        def cv(a):
            return (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))).to(device)

        return ColumnPlan(self.c0, self.ncol, self.k, cv(self.ia), cv(self.ib), cv(self.t), cv(self.edge_ok),
                          cv(self.sub))


def column_plan(x: np.ndarray, c0: int, ncol: int, k: int, dtype=np.float64) -> ColumnPlan:
    """Plan for a polyline with non-decreasing pixel x positions ``x`` over columns ``c0 .. c0+ncol-1``.

    Edge values are left limits: where an edge falls exactly on a vertex, a line (or a piece
    after a gap) that *starts* there puts no ink left of it, one that *ends* there does.
    """
    x = np.asarray(x, np.float64)
    n = x.size
    edges = c0 + np.arange(ncol * k + 1) / k
    i = np.clip(np.searchsorted(x, edges, side="left"), 1, n - 1)
    xa, xb = x[i - 1], x[i]
    dx = xb - xa
    t = np.clip(np.where(dx > 0, (edges - xa) / np.where(dx > 0, dx, 1.0), 1.0), 0, 1)
    ok = (edges > x[0]) & (edges <= x[-1])
    sub = np.floor((x - c0) * k).astype(np.int64)
    sub = np.where((sub >= 0) & (sub < ncol * k), sub, ncol * k)
    return ColumnPlan(c0, ncol, k, i - 1, i, t.astype(dtype), ok, sub)


def spans(y, plan: ColumnPlan):
    """(lo, hi) of the polyline in each sub-column, ``y`` [..., N] pixel rows (NaN = gap).

    Shapes [..., ncol·k]; where a sub-column holds no line, lo = +inf and hi = −inf.
    """
    ops = _ops(y)
    ya, yb = y[..., plan.ia], y[..., plan.ib]
    e = ya + plan.t * (yb - ya)
    e = ops.where(plan.edge_ok, e, math.nan)
    lo = ops.fmin(e[..., :-1], e[..., 1:])
    hi = ops.fmax(e[..., :-1], e[..., 1:])
    smin, smax = ops.sample_min_max(y, plan.sub, plan.ncol * plan.k)
    return ops.fmin(lo, smin), ops.fmax(hi, smax)


def ink_density(lo, hi, width: float, pen: float, k: int):
    """(density, inked) per sub-column: the stroke's true ink area spread over its widened span."""
    ops = _ops(lo)
    inked = ops.isfinite(lo) & ops.isfinite(hi) & (lo <= hi)
    length = ops.where(inked, hi - lo, 0.0)
    d = 1.0 / k
    area = ops.minimum(length * pen + width * d, width * ops.sqrt(d * d + length * length))
    density = ops.clip_max(area / ((length + width) * d), 1.0)
    return ops.where(inked, density, 0.0), inked


def coverage(rows, a, b):
    """Overlap of pixel rows ``[r, r + 1)`` with ink intervals ``[a, b]`` (broadcast)."""
    ops = _ops(a)
    return ops.clip01(ops.minimum(rows + 1, b) - ops.maximum(rows, a))


# ---------------------------------------------------------------- numpy / torch shim

class _NumpyOps:
    where = staticmethod(np.where)
    fmin = staticmethod(np.fmin)
    fmax = staticmethod(np.fmax)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)
    sqrt = staticmethod(np.sqrt)
    isfinite = staticmethod(np.isfinite)

    @staticmethod
    def clip_max(a, hi):
        return np.minimum(a, hi)

    @staticmethod
    def clip01(a):
        return np.clip(a, 0.0, 1.0)

    @staticmethod
    def sample_min_max(y, sub, nsub):
        # one polyline (y [N]): samples are in x order, so each sub-column's are one run
        lo = np.full(nsub, np.inf)
        hi = np.full(nsub, -np.inf)
        keep = (sub < nsub) & np.isfinite(y)
        if keep.any():
            s, v = sub[keep], y[keep]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            lo[s[starts]] = np.minimum.reduceat(v, starts)
            hi[s[starts]] = np.maximum.reduceat(v, starts)
        return lo, hi


class _TorchOps:
    def __getattr__(self, name):
        # where, fmin, fmax, minimum, maximum, sqrt, isfinite: torch's own, imported on first use
        import torch

        return getattr(torch, name)

    @staticmethod
    def clip_max(a, hi):
        return a.clamp(max=hi)

    @staticmethod
    def clip01(a):
        return a.clamp_(0, 1)

    @staticmethod
    def sample_min_max(y, sub, nsub):
        # y [B, N]: scatter-reduce into nsub sub-columns + one slot for samples outside
        import torch

        b = y.shape[0]
        idx = sub.expand(b, -1)
        lo = torch.full((b, nsub + 1), float("inf"), dtype=y.dtype, device=y.device).scatter_reduce(
            1, idx, torch.nan_to_num(y, nan=float("inf")), "amin", include_self=True)
        hi = torch.full((b, nsub + 1), float("-inf"), dtype=y.dtype, device=y.device).scatter_reduce(
            1, idx, torch.nan_to_num(y, nan=float("-inf")), "amax", include_self=True)
        return lo[:, :nsub], hi[:, :nsub]


_NUMPY, _TORCH = _NumpyOps(), _TorchOps()


def _ops(a):
    return _NUMPY if isinstance(a, np.ndarray) else _TORCH
