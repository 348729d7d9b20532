"""Signal-to-noise ratios: the lead-SNR table (paper Table 1) and reconstruction SNR.

Lead-SNR (the ECG-Scan paper, Table 1): per record and limb lead, the recorded lead
``x`` against the lead ``x̂`` derived from I and II by Einthoven/Goldberger,
``SNR_dB = 10·log10(Σ x² / Σ (x − x̂)²)``; then mean, median, min and count per lead
over records. NaN samples are left out of both sums; a record whose lead matches
exactly gives +inf, an all-zero lead gives NaN (not counted in ``n``).

Reconstruction SNR (PhysioNet/CinC Challenge 2024 digitisation metric): per record and
lead, reference ``x`` (e.g. the imported signal) against an estimate ``y`` (e.g.
``ecgscan reconstruct`` output) matched by record id, ``10·log10(Σ x² / Σ (x − y)²)``
over the samples where both are present. Unlike the official code, which replaces
missing output samples with zeros, missing samples are ignored and the dB score is then
multiplied by the fraction of the reference's samples that the estimate covers (an
estimate missing for a whole record or lead scores 0 dB, as in the official code where
a zero output gives 0 dB). ``missing="zero"`` gives the official behaviour. With
``align`` the estimate may be shifted in time by up to ``max_shift_s`` (0.5 s) and
vertically by up to ``max_offset_mv`` (1 mV) per lead, choosing the best score, as
digitisation cannot know where the printout starts or where the baseline sits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEADS, LIMB_DERIVED, lead_snr_db

log = logging.getLogger("ecgscan.snr")

SUMMARY_COLUMNS = ("lead", "mean_db", "median_db", "min_db", "n")
MAX_SHIFT_S = 0.5
MAX_OFFSET_MV = 1.0


def summarize(values: np.ndarray, leads: Sequence[str], overall: str | None = None) -> list[dict]:
    """Rows ``lead, mean_db, median_db, min_db, n`` over records (NaN left out; ±inf kept)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(leads))
    rows = []
    cols = [(name, values[:, j]) for j, name in enumerate(leads)]
    if overall is not None:
        cols.append((overall, values.ravel()))
    for name, v in cols:
        v = v[~np.isnan(v)]
        if v.size:
            with np.errstate(invalid="ignore"):
                mean = float(np.mean(v))
            rows.append({"lead": name, "mean_db": mean, "median_db": float(np.median(v)),
                         "min_db": float(np.min(v)), "n": int(v.size)})
        else:
            rows.append({"lead": name, "mean_db": math.nan, "median_db": math.nan, "min_db": math.nan, "n": 0})
    return rows


@dataclass
class SnrResult:
    ids: list[str]
    leads: list[str]
    per_record: np.ndarray                     # [N, L] dB
    summary: list[dict]
    skipped: dict = field(default_factory=dict)     # reason -> count (WFDB input)
    missing_ids: list[str] = field(default_factory=list)   # reference ids absent from the estimate
    extra_ids: list[str] = field(default_factory=list)     # estimate ids absent from the reference

    def per_record_rows(self) -> list[dict]:
        return [{"id": rid, **{ld: float(v) for ld, v in zip(self.leads, row)}}
                for rid, row in zip(self.ids, self.per_record)]


# --------------------------------------------------------------------------------------
# lead-SNR (Table 1)


def lead_snr_records(signals: Iterable[np.ndarray]) -> np.ndarray:
    """[N, 4] lead-SNR (III, aVR, aVL, aVF) of each ``[12, T]`` signal."""
    out = [lead_snr_db(np.asarray(x, np.float64)) for x in signals]
    return np.asarray(out, np.float64).reshape(-1, len(LIMB_DERIVED))


def lead_snr_from_items(items, stats=None, *, source="input",
                        progress: Callable[[int], None] | None = None) -> SnrResult:
    """Lead-SNR from ``(id, signal or None)`` pairs (see :func:`wfdb_import.iter_signals`)."""
    ids, rows = [], []
    for rid, x in items:
        if progress:
            progress(1)
        if x is None:
            continue
        ids.append(rid)
        rows.append(lead_snr_db(np.asarray(x, np.float64)))
    if not ids:
        if stats is not None and stats.examples:
            first = next(iter(stats.examples.values()))
            raise EcgscanError(f"none of the {stats.found} records in {source} could be read (first problem: {first})")
        raise EcgscanError(f"{source} holds no records")
    per = np.asarray(rows, np.float64).reshape(-1, len(LIMB_DERIVED))
    return SnrResult(ids, list(LIMB_DERIVED), per, summarize(per, LIMB_DERIVED),
                     dict(stats.skipped) if stats is not None else {})


def lead_snr_table(source, *, derive_limb_leads: bool = False, workers: int = 0,
                   progress: Callable[[int], None] | None = None) -> SnrResult:
    """Lead-SNR per record and summary (paper Table 1) of a signals file or WFDB folder/record."""
    from ecgscan_cli.wfdb_import import iter_signals

    _, items, stats = iter_signals(source, derive_limb_leads=derive_limb_leads, workers=workers)
    return lead_snr_from_items(items, stats, source=source, progress=progress)


def count_records(source) -> int:
    """How many records ``source`` holds (signals file or WFDB folder), cheaply."""
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.wfdb_import import find_records, is_ptbxl_root

    source = Path(source)
    if source.is_dir():
        if is_ptbxl_root(source):
            import pandas as pd

            return len(pd.read_csv(source / "ptbxl_database.csv", usecols=[0]))
        return len(find_records(source))
    if source.suffix == ".hea":
        return 1
    return len(SignalsFile(source))


# --------------------------------------------------------------------------------------
# reconstruction SNR (PhysioNet 2024)


def _snr(x: np.ndarray, y: np.ndarray) -> float:
    sx = float(np.sum(x * x))
    sn = float(np.sum((x - y) ** 2))
    if sx > 0 and sn > 0:
        return 10.0 * math.log10(sx / sn)
    if sx > 0:
        return math.inf
    return math.nan


def reconstruction_snr(reference: np.ndarray, estimate: np.ndarray | None, fs: float = 500.0, *,
                       align: bool = False, max_shift_s: float = MAX_SHIFT_S,
                       max_offset_mv: float = MAX_OFFSET_MV, missing: str = "scale") -> np.ndarray:
    """Per-lead reconstruction SNR (dB) of ``estimate`` against ``reference``, both ``[L, T]`` mV.

    ``missing="scale"``: NaN samples ignored, score × fraction of reference samples covered.
    ``missing="zero"``: the official challenge code (missing estimate samples count as 0).
    ``estimate=None`` (record not reconstructed) gives 0 dB for every lead that has signal.
    """
    if missing not in ("scale", "zero"):
        raise ValueError("missing must be 'scale' or 'zero'")
    x_all = np.asarray(reference, np.float64)
    n_leads, t_len = x_all.shape
    if estimate is None:
        y_all = np.full_like(x_all, np.nan)
    else:
        y_all = np.asarray(estimate, np.float64)
        if y_all.shape[0] != n_leads:
            raise EcgscanError(f"estimate has {y_all.shape[0]} leads, reference {n_leads}")
        if y_all.shape[1] < t_len:  # pad / trim to the reference length, as the challenge does
            y_all = np.concatenate([y_all, np.full((n_leads, t_len - y_all.shape[1]), np.nan)], axis=1)
        y_all = y_all[:, :t_len]
    if missing == "zero":
        y_all = np.where(np.isnan(y_all), 0.0, y_all)
    shifts = _best_shifts(x_all, y_all, fs, max_shift_s, max_offset_mv) if align else None
    out = np.empty(n_leads)
    for j in range(n_leads):
        x, y = x_all[j], y_all[j]
        ref_ok = np.isfinite(x)
        n_ref = int(ref_ok.sum())
        if n_ref == 0 or not np.any(x[ref_ok] != 0):
            out[j] = math.nan
            continue
        s, c = (0, 0.0) if shifts is None else shifts[j]
        y_s = _shift(y, s) + c
        ok = ref_ok & np.isfinite(y_s)
        covered = int(ok.sum())
        if covered == 0:
            out[j] = 0.0
            continue
        v = _snr(x[ok], y_s[ok])
        out[j] = v * covered / n_ref if (missing == "scale" and math.isfinite(v)) else v
    return out


def _shift(y: np.ndarray, s: int) -> np.ndarray:
    """y delayed by ``s`` samples (NaN where nothing is known)."""
    if s == 0:
        return y
    out = np.full_like(y, np.nan)
    if s > 0:
        out[s:] = y[:-s]
    else:
        out[:s] = y[-s:]
    return out


def _best_shifts(x: np.ndarray, y: np.ndarray, fs: float, max_shift_s: float,
                 max_offset_mv: float) -> list[tuple[int, float]]:
    """Per lead, the (shift in samples, offset in mV) that maximises the score.

    All masked sums for every lag come from six FFT cross-correlations, so the search over
    ±max_shift costs about as much as a few SNRs.
    """
    from scipy import fft as sfft

    n_leads, t_len = x.shape
    max_s = int(round(max_shift_s * fs))
    mx = np.isfinite(x).astype(np.float64)
    my = np.isfinite(y).astype(np.float64)
    x0 = np.where(mx > 0, x, 0.0)
    y0 = np.where(my > 0, y, 0.0)
    length = sfft.next_fast_len(2 * t_len - 1, real=True)
    fa = sfft.rfft(np.stack([mx, x0, x0 * x0]), n=length, axis=-1)             # reference side
    fb = sfft.rfft(np.stack([my, y0, y0 * y0])[..., ::-1], n=length, axis=-1)  # estimate side, reversed

    def corr(i, k):
        full = sfft.irfft(fa[i] * fb[k], n=length, axis=-1)
        return full[:, t_len - 1 - max_s: t_len + max_s]    # lags -max_s .. +max_s

    n = np.round(corr(0, 0))
    sx, sxx = corr(1, 0), corr(2, 0)
    sy, syy = corr(0, 1), corr(0, 2)
    sxy = corr(1, 1)
    n_ref = mx.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.clip((sx - sy) / n, -max_offset_mv, max_offset_mv)
        noise = sxx + syy - 2 * sxy - 2 * c * (sx - sy) + n * c * c
        score = 10 * np.log10(sxx / np.maximum(noise, 1e-12 * np.maximum(sxx, 1e-30))) * (n / n_ref)
    score = np.where((n > 0) & np.isfinite(score), score, -np.inf)
    best = np.argmax(score, axis=1)
    out = []
    for j in range(n_leads):
        k = int(best[j])
        lag = k - max_s
        off = float(c[j, k]) if np.isfinite(c[j, k]) else 0.0
        out.append((lag, off))
    return out


def compare_signals(estimate, reference, *, align: bool = False, missing: str = "scale",
                    max_shift_s: float = MAX_SHIFT_S, max_offset_mv: float = MAX_OFFSET_MV,
                    score_absent: bool = False,
                    progress: Callable[[int], None] | None = None) -> SnrResult:
    """Reconstruction SNR of the reference records (matched by id) in two signals files.

    Only the reference records present in ``estimate`` are scored (scoring a subset, e.g.
    the held-out fold, must not be diluted by the records never reconstructed); their ids
    are in ``missing_ids``. ``score_absent=True`` scores them as 0 dB instead, as the
    PhysioNet 2024 scorer does (it compares a missing output as all zeros)."""
    from ecgscan_cli.formats.signals import SignalsFile

    est = SignalsFile(estimate)
    ref = SignalsFile(reference)
    if est.fs != ref.fs:
        raise EcgscanError(f"sampling rates differ: {estimate} is {est.fs:g} Hz, {reference} is {ref.fs:g} Hz")
    index = est.index_of()
    ref_ids = set(ref.ids)
    missing_ids = [rid for rid in ref.ids if rid not in index]
    extra_ids = [rid for rid in est.ids if rid not in ref_ids]
    if len(missing_ids) == len(ref.ids):
        raise EcgscanError(f"no record id of {reference} is in {estimate} (ids like {ref.ids[0]!r} vs "
                           f"{est.ids[0] if est.ids else 'none'!r}): are these the right files?")
    scored = [i for i, rid in enumerate(ref.ids) if score_absent or rid in index]
    per = np.empty((len(scored), 12))
    for row, i in enumerate(scored):
        rid = ref.ids[i]
        y = est.signal(index[rid]) if rid in index else None
        per[row] = reconstruction_snr(ref.signal(i), y, ref.fs, align=align, missing=missing,
                                      max_shift_s=max_shift_s, max_offset_mv=max_offset_mv)
        if progress:
            progress(1)
    est.close()
    ref.close()
    return SnrResult([ref.ids[i] for i in scored], list(LEADS), per, summarize(per, LEADS, overall="all"),
                     missing_ids=missing_ids, extra_ids=extra_ids)


def write_per_record_csv(result: SnrResult, path, overwrite: bool = False) -> Path:
    """Per-record table as CSV (``id`` then one column per lead, dB, full precision)."""
    import csv

    from ecgscan_cli.atomic import atomic_output

    with atomic_output(path, overwrite=overwrite, kind="file") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", *result.leads])
            for rid, row in zip(result.ids, result.per_record):
                w.writerow([rid, *[_fmt(v) for v in row]])
    return Path(path)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(float(v))
