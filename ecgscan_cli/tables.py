"""Result tables as rows of cells, shared by the CLI (printed) and the library (report files).

Lives in the library, not in :mod:`ecgscan_cli.cli`, so that the demo and the benchmark can
write the same tables the commands print without importing the CLI.
"""

from __future__ import annotations

import math
from typing import Sequence


def percent(value: float | None) -> float:
    """A value in [0, 1] as % with 4 decimals, for tables and CSV/JSON; NaN when there is none."""
    return float("nan") if value is None or not math.isfinite(value) else round(100.0 * value, 4)


def auroc_cell(auc_pct: float | None, lo_pct: float | None = None, hi_pct: float | None = None) -> str:
    """``"81.2 [74.0-88.1]"`` from an AUROC and its CI in %; ``"nan"`` when there is no AUROC;
    no bracket when there is no CI."""
    if auc_pct is None or not math.isfinite(auc_pct):
        return "nan"
    ci = lo_pct is not None and math.isfinite(lo_pct)
    return f"{auc_pct:.1f}" + (f" [{lo_pct:.1f}-{hi_pct:.1f}]" if ci else "")


def fraction_column(fraction: float) -> str:
    """The column name of a label fraction: 0.01 → ``"1%"``."""
    return f"{100 * fraction:g}%"


def wide_rows(results) -> tuple[list[dict], list[str]]:
    """Probe results as one row per (encoder, label set) and one column per fraction.

    Parameters
    ----------
    results : sequence of ProbeResult
        What :func:`ecgscan_cli.probe.run_probe` returns.

    Returns
    -------
    (list of dict, list of str)
        The rows, each cell ``"AUROC [CI]"`` in %, and the column names in order.
    """
    fractions = sorted({r.fraction for r in results})
    cols = ["encoder", "label_set"] + [fraction_column(f) for f in fractions]
    rows: dict[tuple, dict] = {}
    for r in results:
        row = rows.setdefault((r.encoder, r.label_set), {"encoder": r.encoder, "label_set": r.label_set})
        row[fraction_column(r.fraction)] = auroc_cell(100 * r.auroc, 100 * r.ci_low, 100 * r.ci_high)
    return list(rows.values()), cols


def markdown_table(rows: Sequence[dict], cols: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 2 decimals, a missing cell empty)."""
    def cell(v):
        if isinstance(v, float):
            return "nan" if not math.isfinite(v) else f"{v:.2f}"
        return str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)
