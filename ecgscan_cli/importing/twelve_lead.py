"""The canonical 12-lead form: leads by name in ``leads.LEADS`` order, ``canonical.FS``,
``canonical.N_SAMPLES`` samples (the first 10 s; shorter records padded), millivolts.

Missing limb leads can be rebuilt from two others with the Einthoven/Goldberger relations
of :mod:`ecgscan_cli.leads` (the only place they are written down).
"""

from __future__ import annotations

import functools
import math
import os
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.importing.errors import RecordError
from ecgscan_cli.importing.wfdb_signal import read_wfdb
from ecgscan_cli.leads import LEADS, canonical_lead_name, einthoven_iii, goldberger

LIMB = LEADS[:6]   # I, II, III, aVR, aVL, aVF


def _limb_coefficients() -> dict[str, tuple[float, float]]:
    """Each limb lead as ``(a, b)`` in ``a·I + b·II``, read off :mod:`leads`' relations applied
    to (I, II) = (1, 0) and (0, 1): the relations stay written down in one place."""
    lead_i, lead_ii = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    leads = _limb_leads(lead_i, lead_ii)
    return {name: (float(v[0]), float(v[1])) for name, v in leads.items()}


def _limb_leads(lead_i, lead_ii) -> dict:
    """The six limb leads from I and II (Einthoven, Goldberger)."""
    return dict(zip(LIMB, (lead_i, lead_ii, einthoven_iii(lead_i, lead_ii), *goldberger(lead_i, lead_ii))))


_LIMB_COEF = _limb_coefficients()


@dataclass
class ImportOptions:
    """How records are made canonical (what ``--derive-limb-leads`` and ``--pad`` choose)."""

    derive_limb_leads: bool = False
    pad: str = "zero"             # zero | nan


def canonicalize(sig: np.ndarray, names: Sequence[str], fs: float, *, record_id: str = "",
                 options: ImportOptions | None = None, flags: Counter | None = None) -> np.ndarray:
    """[L, T] mV with lead ``names`` at ``fs`` → [12, canonical.N_SAMPLES] float32 at
    ``canonical.FS`` in LEADS order (the signals file's fixed rate and length)."""
    opt = options or ImportOptions()
    flags = flags if flags is not None else Counter()
    sig = np.asarray(sig)
    if sig.dtype not in (np.float32, np.float64):
        sig = sig.astype(np.float64)
    all_finite = bool(np.isfinite(sig).all())
    if not all_finite and np.isinf(sig).any():
        raise RecordError("infinite values", f"{record_id}: signal contains infinite values")
    by_name: dict[str, np.ndarray] = {}
    unknown = []
    for i, name in enumerate(names):
        canon = canonical_lead_name(name)
        if canon is None:
            unknown.append(str(name))
        elif canon not in by_name and (all_finite or not np.isnan(sig[i]).all()):
            by_name[canon] = sig[i]
    missing = [ld for ld in LEADS if ld not in by_name]
    if missing and opt.derive_limb_leads and derive_missing_limb_leads(by_name):
        flags["derived"] += 1
        missing = [ld for ld in LEADS if ld not in by_name]
    if missing:
        msg = f"{record_id}: missing leads {' '.join(missing)}"
        if unknown:
            msg += f" (unknown lead names: {' '.join(unknown)})"
        if any(ld in LIMB for ld in missing) and not opt.derive_limb_leads:
            msg += "; --derive-limb-leads can rebuild limb leads from two others"
        raise RecordError("unknown lead names" if unknown else "missing leads", msg)
    n = canonical.N_SAMPLES
    if sig.shape[1] > math.ceil(n * fs / canonical.FS) + 1:   # longer than 10 s: the first 10 s are kept
        flags["cropped"] += 1
    if fs != canonical.FS:
        # resample at most what the output needs (plus a little for the filter's edge)
        need = int(math.ceil(n * fs / canonical.FS)) + int(fs)
        x = _resample(np.stack([by_name[ld][:need] for ld in LEADS]).astype(np.float64), fs, canonical.FS)
        flags["resampled"] += 1
    else:
        x = np.stack([by_name[ld][:n] for ld in LEADS])
    out = np.full((12, n), np.nan if opt.pad == "nan" else 0.0, dtype=np.float32)
    m = min(n, x.shape[1])
    out[:, :m] = x[:, :m]
    if m < n:
        flags["padded"] += 1
    peak = np.abs(out).max() if (all_finite and opt.pad != "nan") else np.nanmax(np.abs(out), initial=-1.0)
    if peak > 32.767:
        raise RecordError("out of range", f"{record_id}: amplitude {peak:.1f} mV is beyond "
                          "±32.767 mV (wrong units in the header?)")
    if peak < 0 or np.isnan(peak):
        raise RecordError("empty record", f"{record_id}: no valid samples")
    return out


def derive_missing_limb_leads(by_name: dict[str, np.ndarray]) -> bool:
    """Fill the limb leads missing from ``by_name`` (lead → samples) from two present ones.

    The first two present limb leads that are independent give I and II (a 2 × 2 solve);
    the missing leads then follow from :mod:`leads`' relations. False (nothing changed)
    when no limb lead is missing or no independent pair is present.
    """
    missing = [ld for ld in LIMB if ld not in by_name]
    present = [ld for ld in LIMB if ld in by_name]
    basis = None
    for i in range(len(present)):
        for j in range(i + 1, len(present)):
            m = np.array([_LIMB_COEF[present[i]], _LIMB_COEF[present[j]]])
            if abs(np.linalg.det(m)) > 1e-9:
                basis = (present[i], present[j], np.linalg.inv(m))
                break
        if basis:
            break
    if not (missing and basis):
        return False
    la, lb, inv = basis
    a, b = by_name[la].astype(np.float64), by_name[lb].astype(np.float64)
    derived = _limb_leads(inv[0, 0] * a + inv[0, 1] * b, inv[1, 0] * a + inv[1, 1] * b)
    for ld in missing:
        by_name[ld] = derived[ld]
    return True


@functools.lru_cache(maxsize=16)
def _resample_taps(up: int, down: int) -> np.ndarray:
    """The very filter ``resample_poly(x, up, down)`` designs on every call, designed once."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    taps = _resample_taps(up, down)
    nan = np.isnan(x)
    if nan.any():  # fill gaps for filtering, then put them back (nearest output sample)
        filled = np.where(nan, 0.0, x)
        y = resample_poly(filled, up, down, axis=1, window=taps)
        src = np.minimum((np.arange(y.shape[1]) * fs_in / fs_out).round().astype(int), x.shape[1] - 1)
        y[nan[:, src]] = np.nan
        return y
    return resample_poly(x, up, down, axis=1, window=taps)


def read_canonical(record: str | os.PathLike, *, record_id: str | None = None,
                   options: ImportOptions | None = None, flags: Counter | None = None) -> np.ndarray:
    """A WFDB record (path or :class:`archives.RecordFiles`) as canonical [12, N_SAMPLES] float32 mV
    (raises RecordError)."""
    sig, names, fs, _ = read_wfdb(record, flags)
    rid = record_id or str(record)
    return canonicalize(sig, names, fs, record_id=rid, options=options, flags=flags)

