"""How far a digitised 12-lead signal breaks the limb-lead relations: a score without truth.

Leads I, II and III are printed side by side in the first column of a 3×4 page, aVR, aVL
and aVF in the second. The heart obeys III = II − I and aVR + aVL + aVF = 0 (the sum of
:func:`ecgscan_cli.leads.goldberger`); a reading that misplaces a stroke or a baseline breaks them. So two
readings of the same page can be compared without knowing the signal, and a reading can
be told how far to trust it (:func:`reading_quality`).
"""

from __future__ import annotations

import numpy as np

from ecgscan_cli.leads import LEAD_INDEX, einthoven_iii

_MIN_SAMPLES = 100

# Bands of the residual a reading is reported in. On 200-dpi renders of PTB-XL records the
# digitiser never trained on (folds 8 and 7 of the PTB-XL sample, 44 records each, clean /
# paper / heavy / photo), pages below 0.2 scored 21.6 and 21.8 dB on average (10th
# percentile 10.9 / 11.9), pages from 0.2 to 0.6 scored 9.2 / 8.7, pages above 0.6 scored
# 4.9 / 5.2 (10th percentile 0.5 / 0.4): docs/digitize.md, "How far to trust a reading".
GOOD_BELOW = 0.2
FAIR_BELOW = 0.6
QUALITIES = ("good", "fair", "poor", "unknown")


def lead_relation_residual(signal: np.ndarray) -> float:
    """Mean squared residual of the relations over the leads' mean variance (0 = consistent).

    Computed where all leads of a relation are shown; a per-relation constant is removed
    (a baseline offset is not what this ranks). ``inf`` when no relation can be checked.
    """
    s = np.asarray(signal, np.float64)
    i, ii, iii = (s[LEAD_INDEX[n]] for n in ("I", "II", "III"))
    avr, avl, avf = (s[LEAD_INDEX[n]] for n in ("aVR", "aVL", "aVF"))
    relations = [(iii - einthoven_iii(i, ii), (i, ii, iii)),
                 (avr + avl + avf, (avr, avl, avf))]    # Goldberger's three sum to zero
    num = den = 0.0
    for residual, leads in relations:
        ok = np.isfinite(residual)
        if np.count_nonzero(ok) < _MIN_SAMPLES:
            continue
        r = residual[ok] - np.median(residual[ok])
        num += float(np.mean(r * r))
        den += float(np.mean([np.var(x[ok]) for x in leads]))
    return num / den if den > 0 else float("inf")


def reading_quality(residual: float) -> str:
    """``good``, ``fair`` or ``poor`` for a :func:`lead_relation_residual` (bands above);
    ``unknown`` where no relation could be checked (a page without the six limb leads
    shown at the same time, or leads without variation)."""
    r = float(residual)
    if not np.isfinite(r):
        return "unknown"
    return "good" if r < GOOD_BELOW else "fair" if r < FAIR_BELOW else "poor"


# leads whose QRS points up in most hearts (a normal axis, left-sided precordial R waves)
_UPRIGHT_LEADS = ("I", "II", "aVF", "V4", "V5", "V6")


def upright_polarity(signal: np.ndarray) -> float:
    """Summed over leads I, II, aVF and V4–V6: how much further the signal reaches above
    its median than below it (mV). Positive for 94.6 % of the 353 PTB-XL sample records;
    a page read upside down turns it negative (its leads inverted, and their places swapped
    with leads of other polarity). ``nan`` where none of those leads is shown."""
    s = np.asarray(signal, np.float64)
    total, seen = 0.0, False
    for name in _UPRIGHT_LEADS:
        x = s[LEAD_INDEX[name]]
        x = x[np.isfinite(x)]
        if x.size < _MIN_SAMPLES:
            continue
        m = float(np.median(x))
        total += (float(x.max()) - m) - (m - float(x.min()))
        seen = True
    return total if seen else float("nan")
