"""Signal-to-noise ratios: the lead-SNR table (paper Table 1) and reconstruction SNR.

Lead-SNR (the ECG-Scan paper, Table 1): per record and limb lead, the recorded lead
``x`` against the lead ``x̂`` derived from I and II by Einthoven/Goldberger,
``SNR_dB = 10·log10(Σ x² / Σ (x − x̂)²)``; then mean, median, min and count per lead
over records. NaN samples are left out of both sums; a record whose lead matches
exactly gives +inf, an all-zero lead gives NaN (not counted in ``n``).

Reconstruction SNR: an estimate ``y`` (e.g. ``ecgscan reconstruct`` output) against a
reference ``x``, records matched by id, per lead ``10·log10(Σ x² / Σ (x − y)²)``. Every
reconstruction SNR in ecgscan (``snr-check --reference``, ``reconstruct``'s log line and
overlays, the demo report) comes from :func:`record_snr`, under one of two metrics:

``physionet2024``
    Exactly the PhysioNet/CinC Challenge 2024 scorer (``evaluate_model.py`` and
    ``helper_code.compute_snr`` of physionetchallenges/evaluation-2024): output channels
    reordered to the reference's by name (stripped, case-folded; unmatched ones are zeros,
    duplicates summed), trimmed or zero-padded to the reference length, NaN → 0 in the
    output and in the reference, ``+inf`` when the noise sum is 0, ``−inf`` when the
    reference is all zero and the noise is not; a record missing from the output is
    scored against zeros (0 dB where the reference is not all zero); the score is
    ``np.nanmean`` over every (record, channel). No alignment.
``aligned`` (the default)
    The estimate may be shifted in time by up to ``max_shift_s`` (0.5 s) and vertically by
    up to ``max_offset_mv`` (1 mV) per lead, choosing the best score, as a digitiser cannot
    know where the printout starts or where the baseline sits (the Kaggle 2025 re-run of
    the challenge also aligns; its exact limits are not reproduced here). NaN samples are
    left out of both sums and the dB score is multiplied by the fraction of the
    reference's samples the estimate covers; an all-zero or all-NaN reference lead has no
    score (NaN). Reference records absent from the estimate are not scored unless
    ``score_absent`` (then 0 dB on every lead with signal).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.leads import LEADS, LIMB_DERIVED, lead_snr_db

log = logging.getLogger("ecgscan.snr")

SUMMARY_COLUMNS = ("lead", "mean_db", "median_db", "min_db", "n")
MAX_SHIFT_S = 0.5
MAX_OFFSET_MV = 1.0
PHYSIONET2024 = "physionet2024"
ALIGNED = "aligned"
METRICS = (ALIGNED, PHYSIONET2024)
DEFAULT_METRIC = ALIGNED


def summarize(values: np.ndarray, leads: Sequence[str], overall: str | None = None,
              overall_values: Sequence[float] | None = None) -> list[dict]:
    """Rows ``lead, mean_db, median_db, min_db, n`` over records (NaN left out; ±inf kept).

    ``overall`` adds a row over every value; its mean is :func:`challenge_mean` of
    ``overall_values`` when given (the scorer's own order of (record, channel) values, so
    that the mean is bit-for-bit the one the PhysioNet 2024 scorer prints)."""
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
    if overall is not None and overall_values is not None:
        rows[-1]["mean_db"] = challenge_mean(overall_values)
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
    metric: str = ""                                        # reconstruction SNR: the metric used
    unreadable: dict = field(default_factory=dict)          # estimate id -> why it could not be read
    no_signal_ids: list[str] = field(default_factory=list)  # reference records without signals (not scored)


# --------------------------------------------------------------------------------------
# lead-SNR (Table 1)


def lead_snr_from_items(items, stats=None, *, source="input",
                        progress: Callable[[int], None] | None = None) -> SnrResult:
    """Lead-SNR from ``(id, signal or None)`` pairs (see :func:`importing.iter_signals`)."""
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
    from ecgscan_cli.importing import iter_signals

    _, items, stats = iter_signals(source, derive_limb_leads=derive_limb_leads, workers=workers)
    return lead_snr_from_items(items, stats, source=source, progress=progress)


# --------------------------------------------------------------------------------------
# reconstruction SNR: the PhysioNet 2024 scorer's steps, one function each


def challenge_snr(label: np.ndarray, output: np.ndarray) -> float:
    """``compute_snr`` of the PhysioNet 2024 scorer for one channel (float64, inputs untouched).

    NaN → 0 in both; ``10·log10(Σ label² / Σ (output − label)²)`` when the noise sum is
    positive, else ``+inf``; an all-zero label with noise gives ``−inf``."""
    x = np.array(label, dtype=np.float64)
    y = np.array(output, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"label {x.shape} and output {y.shape} differ in shape")
    x[np.isnan(x)] = 0
    y[np.isnan(y)] = 0
    signal = np.sum(x ** 2)
    noise = np.sum((y - x) ** 2)
    if noise > 0:
        with np.errstate(divide="ignore"):
            return float(10 * np.log10(signal / noise))
    return math.inf


def challenge_mean(values: Sequence[float]) -> float:
    """The scorer's final score: ``np.nanmean`` of the (record, channel) values, NaN when
    all are NaN (or none); ``+inf`` and ``−inf`` together give NaN, as ``np.nanmean`` does."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0 or np.all(np.isnan(v)):
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(v))


def match_channels(signal: np.ndarray, names: Sequence[str], target: Sequence[str], *,
                   official: bool = True) -> np.ndarray:
    """``[len(target), T]``: the rows of ``signal [L, T]`` reordered to the ``target`` names.

    Names compare stripped and case-folded. ``official=True`` is the scorer's
    ``reorder_signal``: unchanged when the name lists are equal and distinct, otherwise
    unmatched channels are zeros and duplicates are summed. ``official=False`` (the
    aligned metric): an unmatched channel is NaN (not covered) and the first match wins.
    """
    signal = np.asarray(signal)
    names, target = list(names), list(target)
    if len(names) != signal.shape[0]:
        raise ValueError(f"{len(names)} channel names for {signal.shape[0]} channels")
    if names == target and len(set(names)) == len(set(target)) == len(target):
        return signal
    folded = [n.strip().casefold() for n in names]
    out = np.zeros((len(target), signal.shape[1]), dtype=np.result_type(signal.dtype, np.float64))
    for i, want in enumerate(n.strip().casefold() for n in target):
        hits = [j for j, have in enumerate(folded) if have == want]
        if official:
            for j in hits:
                out[i] += signal[j]
        else:
            out[i] = signal[hits[0]] if hits else np.nan
    return out


def fit_length(signal: np.ndarray, n: int, fill: float = 0.0) -> np.ndarray:
    """``signal [L, T]`` trimmed or padded with ``fill`` to ``n`` samples (the scorer's
    ``trim_signal`` with ``fill=0``)."""
    signal = np.asarray(signal)
    t = signal.shape[1]
    if t >= n:
        return signal[:, :n]
    return np.concatenate([signal, np.full((signal.shape[0], n - t), fill, dtype=signal.dtype)], axis=1)


def physionet2024_snr(reference: np.ndarray, estimate: np.ndarray | None, *,
                      ref_names: Sequence[str] | None = None,
                      est_names: Sequence[str] | None = None) -> np.ndarray:
    """Per-channel SNR (dB) of one record exactly as the PhysioNet 2024 scorer computes it.

    ``reference [L, T]`` and ``estimate [L', T']`` (or None: record not produced → zeros).
    With names the estimate is reordered to the reference's channels; without, both are
    taken in the same order (``L' == L``)."""
    x = np.asarray(reference, np.float64)
    if estimate is None:
        y = np.zeros_like(x)
    else:
        y = np.asarray(estimate, np.float64)
        if ref_names is not None or est_names is not None:
            if ref_names is None or est_names is None:
                raise ValueError("give both ref_names and est_names, or neither")
            y = match_channels(y, est_names, ref_names, official=True)
        elif y.shape[0] != x.shape[0]:
            raise EcgscanError(f"estimate has {y.shape[0]} leads, reference {x.shape[0]}")
        y = np.array(fit_length(y, x.shape[1], 0.0), dtype=np.float64)
        y[np.isnan(y)] = 0
    return np.array([challenge_snr(x[j], y[j]) for j in range(x.shape[0])])


def aligned_snr(reference: np.ndarray, estimate: np.ndarray | None, fs: float = canonical.FS, *,
                ref_names: Sequence[str] | None = None, est_names: Sequence[str] | None = None,
                max_shift_s: float = MAX_SHIFT_S, max_offset_mv: float = MAX_OFFSET_MV) -> np.ndarray:
    """Per-lead SNR (dB) under the ``aligned`` metric (see the module notes).

    ``max_shift_s=0`` and ``max_offset_mv=0`` score without any alignment (NaN samples
    still left out and the score still × coverage)."""
    x_all = np.asarray(reference, np.float64)
    n_leads, t_len = x_all.shape
    if estimate is None:
        y_all = np.full_like(x_all, np.nan)
    else:
        y_all = np.asarray(estimate, np.float64)
        if ref_names is not None and est_names is not None:
            y_all = match_channels(y_all, est_names, ref_names, official=False)
        elif y_all.shape[0] != n_leads:
            raise EcgscanError(f"estimate has {y_all.shape[0]} leads, reference {n_leads}")
        y_all = fit_length(y_all, t_len, np.nan)
    search = max_shift_s > 0 or max_offset_mv > 0
    shifts = best_alignment(x_all, y_all, fs, max_shift_s, max_offset_mv) if search else None
    out = np.empty(n_leads)
    for j in range(n_leads):
        x, y = x_all[j], y_all[j]
        ref_ok = np.isfinite(x)
        n_ref = int(ref_ok.sum())
        if n_ref == 0 or not np.any(x[ref_ok] != 0):
            out[j] = math.nan
            continue
        s, c = (0, 0.0) if shifts is None else shifts[j]
        y_s = shift_samples(y, s) + c
        ok = ref_ok & np.isfinite(y_s)
        covered = int(ok.sum())
        if covered == 0:
            out[j] = 0.0
            continue
        v = _snr(x[ok], y_s[ok])
        out[j] = v * covered / n_ref if math.isfinite(v) else v
    return out


def record_snr(reference: np.ndarray, estimate: np.ndarray | None, fs: float = canonical.FS,
               metric: str = DEFAULT_METRIC, *, ref_names: Sequence[str] | None = None,
               est_names: Sequence[str] | None = None, max_shift_s: float = MAX_SHIFT_S,
               max_offset_mv: float = MAX_OFFSET_MV) -> np.ndarray:
    """Per-lead reconstruction SNR (dB) of one record: the one entry point every
    reconstruction SNR in ecgscan goes through. ``reference [L, T]``, ``estimate [L', T']``
    mV (None: the record was not produced), ``metric`` one of :data:`METRICS`."""
    if metric == PHYSIONET2024:
        return physionet2024_snr(reference, estimate, ref_names=ref_names, est_names=est_names)
    if metric == ALIGNED:
        return aligned_snr(reference, estimate, fs, ref_names=ref_names, est_names=est_names,
                           max_shift_s=max_shift_s, max_offset_mv=max_offset_mv)
    raise EcgscanError(f"unknown SNR metric {metric!r} (choose from {', '.join(METRICS)})")


def resolve_metric(metric: str | None = None, *, align: bool | None = None,
                   missing: str | None = None) -> str:
    """The metric meant by ``metric`` and the older ``align`` / ``missing`` options.

    ``missing="zero"`` (samples absent from the estimate count as 0 mV) is the PhysioNet
    2024 scorer's rule, so it means ``physionet2024``; ``missing="scale"`` and
    ``align=True`` mean ``aligned``. Contradictory combinations are refused."""
    if metric is not None and metric not in METRICS:
        raise EcgscanError(f"unknown SNR metric {metric!r} (choose from {', '.join(METRICS)})")
    if missing not in (None, "scale", "zero"):
        raise EcgscanError(f"--missing must be 'scale' or 'zero', not {missing!r}")
    implied = {None: None, "zero": PHYSIONET2024, "scale": ALIGNED}[missing]
    if align:
        if implied == PHYSIONET2024 or metric == PHYSIONET2024:
            raise EcgscanError("the PhysioNet 2024 metric (--metric physionet2024 or --missing zero) does not "
                               "align: drop --align, or use --metric aligned")
        implied = ALIGNED
    if metric is not None and implied is not None and metric != implied:
        raise EcgscanError(f"--metric {metric} contradicts --missing {missing} (which means --metric {implied})")
    return metric or implied or DEFAULT_METRIC


def reconstruction_snr(reference: np.ndarray, estimate: np.ndarray | None, fs: float = canonical.FS, *,
                       align: bool = False, max_shift_s: float = MAX_SHIFT_S,
                       max_offset_mv: float = MAX_OFFSET_MV, missing: str = "scale") -> np.ndarray:
    """Older spelling of :func:`record_snr`, kept for library callers.

    ``missing="scale"``: the ``aligned`` metric, searching shifts only with ``align=True``.
    ``missing="zero"``: the ``physionet2024`` metric (it never aligns; ``align=True`` is
    refused)."""
    metric = resolve_metric(None, align=align or None, missing=missing)
    if metric == PHYSIONET2024:
        return physionet2024_snr(reference, estimate)
    if not align:
        max_shift_s = max_offset_mv = 0.0
    return aligned_snr(reference, estimate, fs, max_shift_s=max_shift_s, max_offset_mv=max_offset_mv)


def _snr(x: np.ndarray, y: np.ndarray) -> float:
    sx = float(np.sum(x * x))
    sn = float(np.sum((x - y) ** 2))
    if sx > 0 and sn > 0:
        return 10.0 * math.log10(sx / sn)
    if sx > 0:
        return math.inf
    return math.nan


def shift_samples(y: np.ndarray, s: int) -> np.ndarray:
    """y delayed by ``s`` samples (NaN where nothing is known)."""
    if s == 0:
        return y
    out = np.full_like(y, np.nan)
    if s > 0:
        out[s:] = y[:-s]
    else:
        out[:s] = y[-s:]
    return out


def best_alignment(x: np.ndarray, y: np.ndarray, fs: float, max_shift_s: float,
                 max_offset_mv: float) -> list[tuple[int, float]]:
    """Per lead, the (shift in samples, offset in mV) that maximises the score.

    All masked sums for every lag come from six FFT cross-correlations, so the search over
    ±max_shift costs about as much as a few SNRs.
    """
    from scipy import fft as sfft

    n_leads, t_len = x.shape
    max_s = min(int(round(max_shift_s * fs)), t_len - 1)
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


# --------------------------------------------------------------------------------------
# reconstruction SNR of whole collections: signals files or WFDB folders


@dataclass
class Record:
    """One record as the scorer sees it: ``signal [L, T]`` float64 mV, channel names,
    sampling rate and units."""

    signal: np.ndarray
    names: list[str]
    fs: float
    units: list[str]


class SignalsRecords:
    """Records of a signals file by id (12 leads in :data:`LEADS` order, mV)."""

    def __init__(self, path):
        from ecgscan_cli.formats.signals import SignalsFile

        self.path = Path(path)
        self._file = SignalsFile(path)
        self.ids = list(self._file.ids)
        self._index = self._file.index_of()

    def __contains__(self, rid: str) -> bool:
        return rid in self._index

    def read(self, rid: str) -> Record | None:
        i = self._index.get(rid)
        if i is None:
            return None
        return Record(self._file.signal(i).astype(np.float64), list(LEADS), float(self._file.fs), ["mV"] * len(LEADS))

    def close(self) -> None:
        self._file.close()


def challenge_find_records(folder) -> list[str]:
    """The scorer's ``find_records``: every ``*.hea`` under ``folder`` (all subfolders),
    as sorted relative paths without the suffix, ``/``-separated."""
    import os

    found = set()
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if os.path.splitext(name)[1] == ".hea":
                rel = os.path.relpath(os.path.join(root, name), folder)[:-4]
                found.add(rel.replace(os.sep, "/"))
    return sorted(found)


class WfdbRecords:
    """Records of a WFDB folder by relative path, read as the scorer reads them
    (``wfdb.rdsamp``: float64 physical values, NaN for WFDB's invalid samples).

    ``read`` gives None for a record whose header lists no signal file (the scorer's
    ``load_signals`` returns None then), and raises :class:`RecordError` for a header or
    signal file that cannot be read, or a signal file outside the record's folder."""

    def __init__(self, folder):
        self.path = Path(folder)
        self.ids = challenge_find_records(folder)
        self._ids = set(self.ids)

    def __contains__(self, rid: str) -> bool:
        return rid in self._ids

    def read(self, rid: str) -> Record | None:
        import wfdb

        from ecgscan_cli.importing import RecordError, parse_header

        if rid not in self._ids:
            return None
        record = self.path / rid
        try:
            header = parse_header(str(record))
        except RecordError as e:
            if e.reason == "empty record":    # no signals: nothing to load, as in the scorer
                return None
            raise
        if not header.file_name:
            return None
        base = record.parent.resolve()
        for name in dict.fromkeys(header.file_name):
            target = (base / name).resolve()
            if Path(name).is_absolute() or base not in target.parents:
                raise RecordError("signal file outside the record's folder",
                                  f"{record}.hea: names signal file {name!r} outside its folder")
            if not target.is_file():
                raise RecordError("missing signal file", f"{record}.hea: signal file {name} does not exist")
        try:
            sig, fields = wfdb.rdsamp(str(record))
        except Exception as e:  # wfdb raises many types for bad files; one line for the user
            raise RecordError("unreadable signal", f"{record}: cannot read the record ({e})") from None
        return Record(np.asarray(sig, np.float64).T, [str(n) for n in fields["sig_name"]], float(fields["fs"]),
                      [str(u) for u in fields["units"]])

    def close(self) -> None:
        pass


def open_records(path) -> SignalsRecords | WfdbRecords:
    """A signals file or a WFDB folder, as records by id."""
    path = Path(path)
    if path.is_dir():
        return WfdbRecords(path)
    if path.suffix == ".hea":
        raise EcgscanError(f"{path}: give the WFDB folder, not one record, to score reconstructions")
    return SignalsRecords(path)


def compare_signals(estimate, reference, *, metric: str | None = None, align: bool | None = None,
                    missing: str | None = None, score_absent: bool = False,
                    max_shift_s: float = MAX_SHIFT_S, max_offset_mv: float = MAX_OFFSET_MV,
                    shown_only: bool = False,
                    progress: Callable[[int], None] | None = None) -> SnrResult:
    """Reconstruction SNR of ``estimate`` against ``reference`` (each a signals file or a
    WFDB folder), records matched by id, every lead of the reference scored.

    ``shown_only``: the reference keeps only the samples a standard printed page shows
    (3×4 at 25 mm/s: each lead 2.5 s, lead II 10 s; NaN elsewhere), as ecg-image-kit's
    ``--mask_unplotted_samples`` stores the PhysioNet 2024 references of printed ECGs.

    ``metric`` (default :data:`DEFAULT_METRIC`; ``align`` and ``missing`` are the older
    spellings, see :func:`resolve_metric`; ``align=False`` given explicitly scores without
    alignment). Under ``physionet2024`` a reference record absent from the estimate (or
    unreadable there) is scored against zeros, as the scorer does, and the ``all`` row's
    mean is the scorer's score. Under ``aligned`` such records are not scored (scoring a
    subset, e.g. the held-out fold, is not diluted by records never reconstructed) unless
    ``score_absent``, which gives them 0 dB. Absent ids are in ``missing_ids``.
    """
    chosen = resolve_metric(metric, align=align, missing=missing)
    if chosen == ALIGNED and align is False and metric is None:
        max_shift_s = max_offset_mv = 0.0
    est = open_records(estimate)
    try:
        ref = open_records(reference)
    except BaseException:
        est.close()
        raise
    try:
        return _compare(est, ref, estimate, reference, chosen, score_absent, max_shift_s, max_offset_mv, progress,
                        shown_only)
    finally:
        est.close()
        ref.close()


def _as_printed(record) -> np.ndarray:
    """The reference as a standard printed page shows it (see ``compare_signals(shown_only=True)``)."""
    from ecgscan_cli.render.layout import as_shown

    if list(record.names) != list(LEADS):
        raise EcgscanError(f"--shown-only needs references in the standard 12-lead order, "
                           f"got {', '.join(record.names)}")
    return as_shown(np.asarray(record.signal, np.float64), fs=record.fs)


def _compare(est, ref, estimate, reference, metric, score_absent, max_shift_s, max_offset_mv, progress,
             shown_only=False) -> SnrResult:
    from ecgscan_cli.importing import RecordError

    if not ref.ids:
        raise EcgscanError(f"{reference} holds no records")
    ref_set = set(ref.ids)
    extra_ids = [rid for rid in est.ids if rid not in ref_set]
    if not any(rid in est for rid in ref.ids):
        raise EcgscanError(f"no record id of {reference} is in {estimate} (ids like {ref.ids[0]!r} vs "
                           f"{est.ids[0] if est.ids else 'none'!r}): are these the right files?")
    official = metric == PHYSIONET2024
    missing_ids, no_signal_ids, unreadable = [], [], {}
    scored: list[tuple[str, list[str], np.ndarray]] = []
    for rid in ref.ids:
        if progress:
            progress(1)
        try:
            r = ref.read(rid)
        except RecordError as e:
            raise EcgscanError(f"reference record {rid!r} cannot be read: {e}") from None
        if r is None:
            no_signal_ids.append(rid)      # the scorer skips a reference without signals
            continue
        e = None
        if rid in est:
            try:
                e = est.read(rid)
            except RecordError as err:
                unreadable[rid] = str(err)
        if e is None:
            missing_ids.append(rid)
            if not (official or score_absent):
                continue
        else:
            _check_compatible(rid, r, e, official)
        values = record_snr(_as_printed(r) if shown_only else r.signal, None if e is None else e.signal, r.fs,
                            metric, ref_names=r.names,
                            est_names=None if e is None else e.names, max_shift_s=max_shift_s,
                            max_offset_mv=max_offset_mv)
        scored.append((rid, r.names, values))
    leads = list(dict.fromkeys(name for _, names, _ in scored for name in names))
    column = {name: k for k, name in enumerate(leads)}
    per = np.full((len(scored), len(leads)), np.nan)
    by_key = {}                       # the scorer's dict: a repeated channel name keeps its last value
    for i, (rid, names, values) in enumerate(scored):
        for name, v in zip(names, values):
            per[i, column[name]] = v
            by_key[(rid, name)] = float(v)
    summary = summarize(per, leads, overall="all", overall_values=list(by_key.values()))
    return SnrResult([rid for rid, _, _ in scored], leads, per, summary, missing_ids=missing_ids,
                     extra_ids=extra_ids, metric=metric, unreadable=unreadable, no_signal_ids=no_signal_ids)


def _check_compatible(rid: str, r: Record, e: Record, official: bool) -> None:
    """The scorer asserts equal sampling rates and equal unit lists; say so in one line."""
    if e.fs != r.fs:
        raise EcgscanError(f"sampling rates differ: record {rid!r} is {e.fs:g} Hz in the estimate, "
                           f"{r.fs:g} Hz in the reference")
    same = e.units == r.units if official else set(e.units) == set(r.units)
    if not same:
        raise EcgscanError(f"units differ: record {rid!r} is in {', '.join(dict.fromkeys(e.units))} in the estimate, "
                           f"{', '.join(dict.fromkeys(r.units))} in the reference")


def by_reading_quality(result: SnrResult, estimate) -> list[tuple[str, float, int]]:
    """(band, mean dB over its records' leads, records) for each reading-quality band of
    ``estimate`` (a signals file ``reconstruct`` wrote with a digitiser: ``/digitizer/quality``);
    empty for any other file. Lets a user with some true signals check the bands on their pages."""
    import h5py

    from ecgscan_cli.digitize.consistency import QUALITIES
    from ecgscan_cli.formats.common import decode_strings

    path = Path(estimate)
    if not path.is_file():
        return []
    try:
        with h5py.File(path, "r") as f:
            if "digitizer/quality" not in f:
                return []
            band = dict(zip(decode_strings(f["id"][()]), decode_strings(f["digitizer/quality"][()])))
    except OSError:
        return []
    rows = []
    with np.errstate(invalid="ignore"):       # (NaN left out, ±inf kept, as in summarize)
        page = np.array([np.nanmean(r) if (~np.isnan(r)).any() else np.nan for r in result.per_record])
    for q in QUALITIES:
        pick = np.array([band.get(rid) == q for rid in result.ids], bool) & ~np.isnan(page)
        if pick.any():
            rows.append((q, float(np.mean(page[pick])), int(pick.sum())))
    return rows


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
