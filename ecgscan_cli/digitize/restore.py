"""Restoring a reading: what blur and pixels take from a printed trace, put back.

A signal read off a page image is the ECG seen through the printer's line, the scan's or
photo's blur and the pixel grid: QRS tips come out low and rounded, steep strokes land a
sample or two off, a blurred flank wobbles. The loss is systematic, the same in every
lead (a blur commutes with the limb-lead relations, so projecting a reading onto them
gains nothing: docs/digitize.md), and it depends on the ECG's shape, which a linear
filter cannot follow (one fitted per lead *with* the truth gains ~0.5 dB on heavy pages).

``Restorer`` is a small 1-D convolutional network (dilated residual blocks, ~0.5 s of
context) that maps one lead's stretch of reading to the signal that drew it, by adding a
correction to it (its last layer starts at zero: an untrained restorer returns the
reading). It is trained by ``ecgscan train-restorer`` on TraceNet's readings of rendered
pages of real records, with the benchmark's own loss (the SNR in dB, averaged over leads;
:mod:`.restore_train`). Every stretch of a lead (a panel, a rhythm strip) is restored on
its own: samples not shown stay NaN, and nothing crosses from one panel to the next.

A restorer may also be told two things about the page (``page_features``): the trace's
line width in mm, as the vectoriser measured it (the printed line thickened by blur), and
the reading's pixels per mm. How much a reading's QRS tips were rounded depends on both,
and a stretch alone does not show it (a wide QRS and a blurred one look alike). On fold
7's validation pages a restorer told them read heavy and photo pages 0.2 dB better than
one trained the same way without (docs/digitize.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ecgscan_cli.errors import EcgscanError

FORMAT = "ecgscan-restorer-1"
MIN_RUN = 16             # samples: a shorter stretch is left as read
# Clean 200-dpi renders of PTB-XL records read to a limb-lead residual of ~0.001 (median,
# folds 7 and 8), and the restorer cost them 0.5 dB; paper, heavy and photo pages read to
# 0.13-1.2 and gain 0.3-0.5 dB. Below this a reading is left as read (docs/digitize.md).
SHARP_RESIDUAL = 0.005
N_PAGE_FEATURES = 2      # the trace's line width (mm) and the reading's px/mm: page_features()
_LINE_MM_UNKNOWN = 0.3   # a reading that measured no line width (the renderer's default line)
# What train-restorer's pages span (100-300 dpi pages read at TraceNet's working size or at
# their own; printed lines 0.15-0.5 mm, blurred up to ~1.6): the 600 pages the shipped
# restorer learnt from read 0.18-1.59 mm and 1.6-8.8 px/mm. A page beyond is told the
# nearest value it learnt from, not a value its linear maps would extrapolate to (a
# 6000-px scan reads at ~20 px/mm).
LINE_MM_RANGE = (0.15, 1.6)
PX_PER_MM_RANGE = (1.6, 9.0)


@dataclass(frozen=True)
class RestorerConfig:
    width: int = 16                                   # channels
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 1)
    kernel: int = 5
    fs: float = 500.0                                 # the readings' sample rate it was trained at
    page_features: int = 0                            # 0, or N_PAGE_FEATURES: told the page's line and scale

    def check(self) -> "RestorerConfig":
        if self.width < 1 or self.kernel < 1 or self.kernel % 2 == 0 or not self.dilations \
                or any(int(d) < 1 for d in self.dilations) or self.fs <= 0 \
                or self.page_features not in (0, N_PAGE_FEATURES):
            raise EcgscanError(f"bad restorer config {asdict(self)}")
        return self


class Restorer(nn.Module):
    def __init__(self, config: RestorerConfig | None = None):
        super().__init__()
        self.config = (config or RestorerConfig()).check()
        c, k = self.config.width, self.config.kernel
        self.inp = nn.Conv1d(2, c, 7, padding=3)
        self.blocks = nn.ModuleList(nn.Conv1d(c, c, k, padding=d * (k // 2), dilation=d)
                                    for d in self.config.dilations)
        self.out = nn.Conv1d(c, 1, 7, padding=3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # the page's features shift every block's channels (zero at first: a restorer given
        # features starts as the same function as the one it was grown from)
        self.page = nn.ModuleList(nn.Linear(self.config.page_features, c) for _ in self.blocks) \
            if self.config.page_features else None
        for lin in self.page or ():
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, reading: torch.Tensor, page: torch.Tensor | None = None) -> torch.Tensor:
        """``reading`` [B, T] mV → restored [B, T] mV; ``page`` [B, page_features]
        (:func:`page_features`), required when the restorer was built to be told them and
        ignored otherwise."""
        if self.page is not None and page is None:
            raise EcgscanError("this restorer needs the page's features (its line width and px/mm)")
        # the slope, scaled to about the reading's range: steep strokes are where it errs
        slope = torch.diff(reading, dim=1, prepend=reading[:, :1]) * 10.0
        h = self.inp(torch.stack([reading, slope], 1))
        for k, block in enumerate(self.blocks):
            z = block(h)
            if self.page is not None:
                z = z + self.page[k](page)[:, :, None]
            h = h + F.gelu(z)
        return reading + self.out(h)[:, 0]


def page_features(line_mm: float | None, px_per_mm: float) -> np.ndarray:
    """What a restorer is told about the page: log of the trace's line width (mm; the
    vectoriser's, ``Digitized.line_mm``) and of the reading's px/mm, both about 0 on a
    default 200-dpi page, each held within what training pages span (``LINE_MM_RANGE``,
    ``PX_PER_MM_RANGE``)."""
    line = _LINE_MM_UNKNOWN if line_mm is None or not np.isfinite(line_mm) else float(line_mm)
    line, ppm = np.clip(line, *LINE_MM_RANGE), np.clip(float(px_per_mm), *PX_PER_MM_RANGE)
    return np.array([np.log(line) + 1.0, np.log(ppm / (200 / 25.4))], np.float32)


def grown(net: Restorer) -> Restorer:
    """``net`` as a restorer told the page's features: the same function until trained."""
    config = RestorerConfig(**{**asdict(net.config), "page_features": N_PAGE_FEATURES})
    out = Restorer(config)
    missing, unexpected = out.load_state_dict(net.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("page.") for k in missing)
    return out


def shown_runs(lead: np.ndarray, min_len: int = MIN_RUN) -> list[slice]:
    """The stretches of ``lead`` that are shown (finite), each at least ``min_len`` samples."""
    idx = np.flatnonzero(np.isfinite(lead))
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts, ends = np.r_[idx[0], idx[breaks + 1]], np.r_[idx[breaks], idx[-1]] + 1
    return [slice(int(a), int(b)) for a, b in zip(starts, ends) if b - a >= min_len]


def already_sharp(signal: np.ndarray) -> bool:
    """True for a reading whose limb leads keep Einthoven's and Goldberger's relations to
    within :data:`SHARP_RESIDUAL` of their variance: nothing blurred or resampled it, and
    the restorer (trained on pages that were) has nothing to put back."""
    from ecgscan_cli.digitize.consistency import lead_relation_residual

    return lead_relation_residual(signal) < SHARP_RESIDUAL


def restore_reading(signal: np.ndarray, net: Restorer, fs: float, page: np.ndarray | None = None) -> np.ndarray:
    """``signal`` [leads, samples] mV (NaN where not shown) restored stretch by stretch;
    same shape and dtype, NaN where it was NaN; ``-signal`` is restored to minus the same.
    ``page``: the page's :func:`page_features` (used by a restorer that takes them)."""
    if abs(float(fs) - net.config.fs) > 1e-6:
        raise EcgscanError(f"the restorer was trained on readings at {net.config.fs:g} Hz, not {float(fs):g} Hz")
    x = np.asarray(signal)
    out = np.array(x, dtype=np.float64)
    device = next(net.parameters()).device
    # (a restorer told the page refuses to run without it: Restorer.forward)
    told = None if page is None else torch.as_tensor(np.asarray(page, np.float32), device=device)[None].expand(2, -1)
    with torch.inference_mode():
        for j in range(x.shape[0]):
            for run in shown_runs(out[j]):
                t = torch.as_tensor(out[j, run], dtype=torch.float32, device=device)[None]
                # trained on stretches turned upside down at random, the restorer should be
                # odd: the mean of its answers for the stretch and for the stretch turned over
                # makes it so (fold 7's heavy and photo pages +0.04 / +0.03 dB: docs/digitize.md)
                both = net(torch.cat([t, -t]), told)
                out[j, run] = (0.5 * (both[0] - both[1])).double().cpu().numpy()
    return out.astype(x.dtype, copy=False)


def shipped_restorer() -> Path:
    """The restorer weights that ship in the package (see ``weights/README.md``)."""
    return Path(str(resources.files("ecgscan_cli.digitize") / "weights" / "restorer.safetensors"))


def save_restorer(net: Restorer, path: str | Path, extra: dict | None = None) -> None:
    """Weights as safetensors; config (and ``extra`` provenance) as JSON in the metadata."""
    from ecgscan_cli.digitize.model import save_weights

    save_weights(net, path, FORMAT, extra)


def restorer_file(path: str | Path | None) -> Path:
    """The weights file ``path`` names: a .safetensors file, a train-restorer run folder's
    weights, or (None or "shipped") the shipped ones."""
    if path is None or str(path) == "shipped":
        return shipped_restorer()
    path = Path(path)
    return path / "restorer.safetensors" if path.is_dir() else path


def load_restorer(path: str | Path | None = None, device="cpu") -> Restorer:
    """A :class:`Restorer` from ``path`` (a .safetensors file or a train-restorer run folder),
    or (None or "shipped") the shipped one."""
    from ecgscan_cli.digitize.model import load_weights

    return load_weights(restorer_file(path), FORMAT, "restorer", RestorerConfig, Restorer, device)
