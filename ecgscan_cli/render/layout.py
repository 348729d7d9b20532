"""Page geometry of the standard clinical printout, in millimetres, and its pixel metadata.

A landscape letter (279.4 × 215.9 mm) or A4 (297 × 210 mm) page in one of three layouts
(``LayoutOptions.layout``):

* ``3x4+1`` (the default): three rows of four panels (columns I/II/III, aVR/aVL/aVF,
  V1–V3, V4–V6, each column a successive window of the signal) and a lead II rhythm strip
  below; baselines 45 mm apart;
* ``3x4+3``: the same panels and three rhythm strips, V1, II and V5 (a common
  printer default), baselines 30 mm apart;
* the rhythm strips may show other leads (``LayoutOptions.rhythm``, e.g. ``"V1"``);
* ``6x2``: six rows of two panels, the limb leads I–aVF over the first half of the signal
  and V1–V6 over the second, baselines 30 mm apart.

At 25 mm/s a 3×4 panel shows 2.5 s (62.5 mm), a 6×2 panel 5 s and a rhythm strip 10 s; at
50 mm/s the panels keep their width on paper and show half as much. Baselines sit on 5 mm
grid lines. A calibration pulse (1 mV, 200 ms) precedes every row.

Pixel coordinates are continuous: pixel column ``i`` covers ``[i, i + 1)``; a point at
``mm`` millimetres lies at ``mm * px_per_mm`` pixels (``px_per_mm = dpi / 25.4``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEAD_INDEX

PAPER_MM = {"letter": (279.4, 215.9), "a4": (297.0, 210.0)}
SPEEDS = (25.0, 50.0)
GAINS = (5.0, 10.0, 20.0)
GRID_ROWS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
RHYTHM_LEAD = "II"
RHYTHM_LEADS_3 = ("V1", "II", "V5")                 # the three rhythm strips of ``3x4+3``
SIX_BY_TWO = (("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"))
LAYOUTS = ("3x4+1", "3x4+3", "6x2")
PANEL_MM = 62.5          # width of one 3×4 panel on paper
ROW_SPACING_MM = 45.0    # baseline to baseline (3x4+1)
FIRST_BASELINE_MM = 45.0
SIX_ROW_SPACING_MM = 30.0    # six rows (3x4+3, 6x2)
SIX_ROW_FIRST_MM = 37.5
CAL_WIDTH_MM = 15.0      # room left of the traces for the calibration pulse

# name → (minor colour, major colour, minor width mm, major width mm); None = no grid
GRID_STYLES: dict[str, tuple | None] = {
    "red": ((255, 196, 196), (255, 120, 120), 0.10, 0.22),
    "pink": ((255, 222, 226), (255, 170, 180), 0.10, 0.20),
    "bold": ((255, 180, 180), (235, 80, 80), 0.14, 0.35),
    "coarse": (None, (255, 140, 140), 0.0, 0.22),
    "gray": ((220, 220, 220), (165, 165, 165), 0.10, 0.22),
    "blue": ((205, 218, 255), (125, 150, 230), 0.10, 0.22),
    "green": ((205, 235, 205), (120, 185, 120), 0.10, 0.22),
    "none": None,
}
INK = (0, 0, 0)          # trace and text colour of a clean page


@dataclass(frozen=True)
class LayoutOptions:
    """What the user can choose about the printout (validated by :meth:`check`)."""

    paper: str = "letter"
    speed: float = 25.0          # mm/s
    gain: float = 10.0           # mm/mV
    grid: str = "red"            # a key of GRID_STYLES ("none": no grid)
    header: bool = True          # header text (id, speed/gain...) at the top
    labels: bool = True
    line_width_mm: float = 0.3
    layout: str = "3x4+1"        # one of LAYOUTS
    rhythm: str = ""             # the rhythm strips' leads, comma-separated ("": II, or V1,II,V5 for 3x4+3)

    def check(self) -> "LayoutOptions":
        if self.layout not in LAYOUTS:
            raise EcgscanError(f"unknown layout {self.layout!r} (choose from {', '.join(LAYOUTS)})")
        if self.rhythm:
            strips = {"3x4+1": 1, "3x4+3": 3, "6x2": 0}[self.layout]
            names = self.rhythm_leads()
            bad = [n for n in names if n not in LEAD_INDEX]
            if bad:
                raise EcgscanError(f"unknown rhythm lead {bad[0]!r} (choose from {', '.join(LEAD_INDEX)})")
            if len(names) != strips:
                raise EcgscanError(f"layout {self.layout} has {strips} rhythm strip{'s' if strips != 1 else ''}, "
                                   f"got {len(names)} lead{'s' if len(names) != 1 else ''} ({self.rhythm})")
        if self.paper not in PAPER_MM:
            raise EcgscanError(f"unknown paper {self.paper!r} (choose from {', '.join(PAPER_MM)})")
        if float(self.speed) not in SPEEDS:
            raise EcgscanError(f"paper speed must be 25 or 50 mm/s, got {self.speed}")
        if float(self.gain) not in GAINS:
            raise EcgscanError(f"gain must be 5, 10 or 20 mm/mV, got {self.gain}")
        if self.grid not in GRID_STYLES:
            raise EcgscanError(f"unknown grid style {self.grid!r} (choose from {', '.join(GRID_STYLES)})")
        if not (0.05 <= self.line_width_mm <= 2.0):
            raise EcgscanError(f"line width must be 0.05–2 mm, got {self.line_width_mm}")
        return self

    def rhythm_leads(self) -> tuple[str, ...]:
        """The rhythm strips' leads, top to bottom (none for 6x2)."""
        if self.rhythm:
            return tuple(n.strip() for n in self.rhythm.split(",") if n.strip())
        return {"3x4+1": (RHYTHM_LEAD,), "3x4+3": RHYTHM_LEADS_3, "6x2": ()}[self.layout]

    def with_(self, **kw) -> "LayoutOptions":
        return replace(self, **kw)


@dataclass(frozen=True)
class Panel:
    lead: str
    lead_index: int
    row: int              # 0..rows − 1, top to bottom (3x4+1: 3 = the rhythm strip)
    t_start: float        # seconds of the signal shown
    t_end: float
    x0_mm: float
    x1_mm: float
    y_mm: float           # baseline (0 mV)
    top_mm: float         # the panel's band
    bottom_mm: float


@dataclass(frozen=True)
class PageGeometry:
    width_mm: float
    height_mm: float
    panels: tuple[Panel, ...]
    trace_x0_mm: float
    baselines_mm: tuple[float, ...]
    options: LayoutOptions = field(default_factory=LayoutOptions)


def page_geometry(options: LayoutOptions | None = None) -> PageGeometry:
    o = (options or LayoutOptions()).check()
    w_mm, h_mm = PAPER_MM[o.paper]
    total = 4 * PANEL_MM
    x0 = 5.0 * round(((w_mm - total + CAL_WIDTH_MM) / 2.0) / 5.0)
    x0 = max(x0, CAL_WIDTH_MM)
    win = PANEL_MM / float(o.speed)
    if o.layout == "3x4+1":
        rows = [list(names) for names in GRID_ROWS] + [[name] for name in o.rhythm_leads()]
        first, spacing = FIRST_BASELINE_MM, ROW_SPACING_MM
    elif o.layout == "3x4+3":
        rows = [list(names) for names in GRID_ROWS] + [[name] for name in o.rhythm_leads()]
        first, spacing = SIX_ROW_FIRST_MM, SIX_ROW_SPACING_MM
    else:
        rows = [list(names) for names in SIX_BY_TWO]
        first, spacing = SIX_ROW_FIRST_MM, SIX_ROW_SPACING_MM
    baselines = tuple(first + k * spacing for k in range(len(rows)))
    panels = []
    for r, names in enumerate(rows):
        width = total / len(names)          # a row's panels share its 10 s (at 25 mm/s)
        for j, name in enumerate(names):
            t0, t1 = j * 4 * win / len(names), (j + 1) * 4 * win / len(names)
            panels.append(Panel(name, LEAD_INDEX[name], r, t0, t1, x0 + j * width, x0 + (j + 1) * width,
                                baselines[r], baselines[r] - spacing / 2, baselines[r] + spacing / 2))
    return PageGeometry(w_mm, h_mm, tuple(panels), x0, baselines, o)


def as_shown(signal, options: LayoutOptions | None = None, fs: float = canonical.FS):
    """``signal`` [12, T] with NaN where the page does not show it: what a digitiser can recover,
    and how the PhysioNet 2024 references of printed ECGs are stored."""
    import numpy as np

    x = np.asarray(signal)
    out = np.full(x.shape, np.nan, dtype=np.result_type(x.dtype, np.float32))
    for p in page_geometry(options).panels:
        a, b = int(math.ceil(p.t_start * fs - 1e-9)), min(int(math.floor(p.t_end * fs + 1e-9)), x.shape[1] - 1)
        out[p.lead_index, a:b + 1] = x[p.lead_index, a:b + 1]
    return out


def page_size_px(geometry: PageGeometry, dpi: float) -> tuple[int, int]:
    """(height, width) in pixels of the page at ``dpi``."""
    ppm = dpi / 25.4
    return int(round(geometry.height_mm * ppm)), int(round(geometry.width_mm * ppm))


@dataclass(frozen=True)
class PixelMap:
    """mm on paper → continuous pixel coordinates: ``x = left + mm * sx``, ``y = top + mm * sy``."""

    sx: float
    sy: float
    left: float = 0.0
    top: float = 0.0
    width: int = 0
    height: int = 0

    def x(self, mm):
        return self.left + mm * self.sx

    def y(self, mm):
        return self.top + mm * self.sy


def page_pixel_map(geometry: PageGeometry, dpi: float) -> PixelMap:
    h, w = page_size_px(geometry, dpi)
    ppm = dpi / 25.4
    return PixelMap(ppm, ppm, 0.0, 0.0, w, h)


def letterbox_geometry(h: int, w: int, size) -> tuple[int, int, int, int]:
    """Fit an ``h × w`` image inside ``size`` keeping its aspect: (new_h, new_w, top, left)."""
    oh, ow = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    s = min(oh / h, ow / w)
    nh, nw = max(1, min(oh, int(round(h * s)))), max(1, min(ow, int(round(w * s))))
    return nh, nw, (oh - nh) // 2, (ow - nw) // 2


def model_pixel_map(geometry: PageGeometry, size, ref_dpi: float = 200.0) -> PixelMap:
    """Pixel map of the page letterboxed into ``size`` exactly as :func:`letterbox` places it."""
    ph, pw = page_size_px(geometry, ref_dpi)
    nh, nw, top, left = letterbox_geometry(ph, pw, size)
    ppm = ref_dpi / 25.4
    oh, ow = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return PixelMap(ppm * nw / pw, ppm * nh / ph, float(left), float(top), ow, oh)


def layout_metadata(geometry: PageGeometry, pmap: PixelMap, dpi: float | None = None,
                    n_samples: int = canonical.N_SAMPLES, fs: float = canonical.FS, augment: dict | None = None,
                    header: str | None = None) -> dict:
    """Everything needed to map every plotted sample to its pixel (unaugmented render)."""
    o = geometry.options
    last = (n_samples - 1) / fs            # time of the last sample: traces end there
    leads = []
    for p in geometry.panels:
        t_end = max(min(p.t_end, last), p.t_start)  # == t_start: panel beyond the signal, empty
        x1 = p.x0_mm + (t_end - p.t_start) * o.speed
        y0 = max(pmap.y(p.top_mm), 0.0)
        y1 = min(pmap.y(p.bottom_mm), float(pmap.height))
        leads.append({
            "lead": p.lead, "t_start": p.t_start, "t_end": t_end,
            "x_start": pmap.x(p.x0_mm), "x_end": pmap.x(x1),
            "y_baseline": pmap.y(p.y_mm),
            "bbox": [pmap.x(p.x0_mm), y0, pmap.x(x1), y1],
            "row": p.row,
        })
    px_per_mm = (pmap.sx + pmap.sy) / 2
    meta = {
        "width": pmap.width, "height": pmap.height,
        "dpi": float(dpi) if dpi is not None else px_per_mm * 25.4,
        "px_per_mm": px_per_mm, "px_per_mm_x": pmap.sx, "px_per_mm_y": pmap.sy,
        "paper_speed_mm_s": float(o.speed), "gain_mm_mV": float(o.gain),
        "paper": o.paper, "grid": o.grid, "fs": float(fs),
        "leads": leads,
        "augment": augment or {},
    }
    if header:
        meta["header"] = header
    return meta


