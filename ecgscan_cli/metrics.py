"""Classification metrics shared by the probe, zero-shot and benchmark: AUROC and operating points.

Scores and labels are arrays ``[N, C]`` (records × classes); a class without a positive or
without a negative has no AUROC (NaN) and is left out of the macro average.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _rank_auroc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC per column (Mann-Whitney, ties averaged) for scores/y [..., N, C]; NaN when undefined."""
    from scipy.stats import rankdata

    y = y.astype(bool)
    ranks = rankdata(scores, axis=-2)
    n_pos = y.sum(axis=-2)
    n_neg = y.shape[-2] - n_pos
    sum_pos = np.where(y, ranks, 0.0).sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def auroc_per_class(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of each class (column).

    Parameters
    ----------
    scores : array [N, C]
        Higher means more likely positive.
    y : array [N, C]
        Binary labels.

    Returns
    -------
    array [C]
        AUROC in [0, 1]; NaN for a class with no positive or no negative.
    """
    return _rank_auroc(np.asarray(scores, np.float64), np.asarray(y))


def macro_auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """Mean AUROC over the classes that have one (NaN when none has)."""
    per = auroc_per_class(scores, y)
    return float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")


def bootstrap_macro_auroc(scores: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95, chunk: int = 50) -> tuple[float, float]:
    """Percentile bootstrap CI of the macro AUROC, resampling records.

    Parameters
    ----------
    scores, y : array [N, C]
        Scores and binary labels.
    n_boot : int
        Resamples; 0 gives (NaN, NaN).
    seed : int
        Seed of the resampling (the same seed gives the same resamples for every encoder).
    level : float
        Coverage of the interval.
    chunk : int
        Resamples scored together (bounds memory).

    Returns
    -------
    (float, float)
        Lower and upper bound, in [0, 1].
    """
    if n_boot <= 0 or len(y) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    n = len(y)
    vals = []
    scores = np.asarray(scores, np.float64)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        per = _rank_auroc(scores[idx], y[idx])  # [b, C]
        with np.errstate(all="ignore"):
            ok = np.isfinite(per).any(axis=1)
            m = np.full(b, np.nan)
            m[ok] = np.nanmean(per[ok], axis=1)
        vals.append(m)
    vals = np.concatenate(vals)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """Sensitivity, specificity and F1 of each class at the threshold maximising Youden's J.

    The threshold is chosen on these same data: an optimistic operating point, for
    orientation only.

    Parameters
    ----------
    scores, labels : array [N, C]
        Scores and binary labels, columns in the order of ``classes``.
    classes : sequence of str
        Class names.

    Returns
    -------
    list of dict
        ``{"class", "threshold", "sensitivity", "specificity", "f1"}`` for each class with
        both labels present (the others are left out).
    """
    from sklearn.metrics import roc_curve

    out = []
    for j, c in enumerate(classes):
        y = labels[:, j].astype(bool)
        if y.all() or not y.any():
            continue
        fpr, tpr, thr = roc_curve(y, scores[:, j])
        k = int(np.argmax(tpr - fpr))
        pred = scores[:, j] >= thr[k]
        tp = int((pred & y).sum())
        fp = int((pred & ~y).sum())
        fn = int((~pred & y).sum())
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        out.append({"class": c, "threshold": float(thr[k]) if math.isfinite(thr[k]) else float("nan"),
                    "sensitivity": float(tpr[k]), "specificity": float(1 - fpr[k]), "f1": f1})
    return out
