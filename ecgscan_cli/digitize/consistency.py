"""How far a digitised 12-lead signal breaks the limb-lead relations: a score without truth.

Leads I, II and III are printed side by side in the first column of a 3×4 page, aVR, aVL
and aVF in the second. The heart obeys III = II − I and aVR + aVL + aVF = 0 (the sum of
:func:`ecgscan_cli.leads.goldberger`); a reading that misplaces a stroke or a baseline breaks them. So two
readings of the same page can be compared without knowing the signal.
"""

from __future__ import annotations

import numpy as np

from ecgscan_cli.leads import LEAD_INDEX, einthoven_iii

_MIN_SAMPLES = 100


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
