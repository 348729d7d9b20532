"""From the rows' traces to the 12 leads: which lead each stretch of a row shows.

A row's trace (:func:`.pipeline._trace_rows`: x on an evenly pitched grid, mV) does not
depend on which leads the row shows, so a page is traced once and then cut into panels
(:func:`assemble`) as many ways as its layout leaves open: a six-row page as 3×4 with
three rhythm strips or as 6×2 (:func:`choose_six_row_layout`), a rhythm strip as the
printer's default lead or the lead whose panel it repeats (:func:`name_rhythm_strips`).
"""

from __future__ import annotations

import numpy as np

from ecgscan_cli.canonical import FS, N_SAMPLES
from ecgscan_cli.digitize.consistency import lead_relation_residual
from ecgscan_cli.digitize.layout import SIX_ROW_LAYOUTS, Row, assign_layout
from ecgscan_cli.digitize.vectorize import to_samples
from ecgscan_cli.leads import LEAD_INDEX


def assemble(rows: list[Row], traced, speed_mm_s: float) -> np.ndarray:
    """The 12 leads from the rows' traces cut into their panels (NaN where none shows a lead)."""
    signal = np.full((len(LEAD_INDEX), N_SAMPLES), np.nan, np.float32)
    # full-length rows first: a rhythm strip wins over its lead's 2.5 s panel
    for k in sorted(range(len(rows)), key=lambda k: len(rows[k].panels)):
        row, (x, mv) = rows[k], traced[k]
        edge = 1.0 if len(row.panels) > 1 else 0.0   # a column on a panel edge holds two leads
        for lead, xa, xb in row.panels:
            s = to_samples(x, mv, row.x0, row.ppm_x * speed_mm_s, xa, xb, FS, N_SAMPLES, edge_px=edge)
            dst = signal[LEAD_INDEX[lead]]
            fill = np.isnan(dst)
            dst[fill] = s[fill]
    return signal


def choose_six_row_layout(rows: list[Row], traced, layout: str, speed_mm_s: float) -> str:
    """The layout of a six-row page, its rows given its panels: 3×4 with three rhythm
    strips or 6×2, whichever keeps the limb-lead relations (:mod:`.consistency`) better.
    The two place different leads side by side in the first 5 s (6×2: all six limb leads;
    3×4: I–III, then aVR–aVF beside the rhythm strips), so the wrong one breaks them badly
    (``tests/test_digitize_pipeline.py``)."""
    read = {}
    for name in (layout, SIX_ROW_LAYOUTS[1 - SIX_ROW_LAYOUTS.index(layout)]):
        assign_layout(name, rows)
        name_rhythm_strips(rows, traced, speed_mm_s)    # (strips of other leads than V1, II, V5)
        read[name] = (lead_relation_residual(assemble(rows, traced, speed_mm_s)), [r.panels for r in rows])
    best = min(read, key=lambda name: read[name][0])
    for row, panels in zip(rows, read[best][1]):
        row.panels = panels
    return best


# A rhythm strip is renamed only on clear evidence: another lead's panel leaves under
# _RHYTHM_MATCH of the strip's variance unexplained over the panel's stretch (a lead's own
# panel shows the same samples: 0.00-0.01 on clean pages), while its printer-default
# lead's panel leaves over _RHYTHM_MISMATCH and 4 times as much. On degraded pages a
# strip and its own panel often disagree (0.1-2 on fold-8 `paper` pages: the rows are
# registered differently) and inferior or neighbouring leads come close (aVF 0.04 where
# II left 0.10), so a looser rule renamed 1 clean and 4 paper strips of lead II as aVF.
_RHYTHM_MATCH = 0.05
_RHYTHM_MISMATCH = 0.2


def name_rhythm_strips(rows: list[Row], traced, speed_mm_s: float) -> None:
    """Which lead each rhythm strip shows: the one whose 3×4 panel it repeats.

    A strip shows 10 s of one lead, and that lead's panel shows 2.5 s of the same samples;
    printers let users choose the strips' leads (II, V1, V5, aVF...), so the default names
    from the layout are checked against the panels and replaced where another lead's panel
    matches clearly better."""
    panel_rows = [k for k, r in enumerate(rows) if len(r.panels) > 1]
    strips = [k for k, r in enumerate(rows) if len(r.panels) == 1]
    if len(panel_rows) != 3 or not strips:       # 3x4 pages only (12x1 rows are leads already)
        return
    panels = assemble([rows[k] for k in panel_rows], [traced[k] for k in panel_rows], speed_mm_s)
    for k in strips:
        row = rows[k]
        lead, xa, xb = row.panels[0]
        strip = assemble([row], [traced[k]], speed_mm_s)[LEAD_INDEX[lead]]
        unexplained = {name: _unexplained(strip, panels[i]) for name, i in LEAD_INDEX.items()}
        best = min(unexplained, key=lambda n: unexplained[n])
        if best != lead and unexplained[best] < _RHYTHM_MATCH and \
                unexplained[lead] > max(_RHYTHM_MISMATCH, 4.0 * unexplained[best]):
            row.panels = [(best, xa, xb)]


def _unexplained(strip: np.ndarray, panel: np.ndarray) -> float:
    """Mean square of (strip − panel), a constant offset removed, over the strip's variance,
    where both are shown (inf when they overlap for under a second)."""
    ok = np.isfinite(strip) & np.isfinite(panel)
    if np.count_nonzero(ok) < FS:
        return float("inf")
    d = strip[ok] - panel[ok]
    v = float(np.var(strip[ok]))
    return float(np.var(d) / v) if v > 0 else float("inf")
