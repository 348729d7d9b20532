"""Column jitter: the fast wobble of a blurred page's reading, and its removal.

Where blur widens a stroke, a pixel column's span of ink no longer says exactly where the
trace passes, and the path through the spans (:func:`.vectorize.centreline`) steps up and
down from one column to the next, by up to a millimetre on a blurred flank. A recorded
ECG holds little variation that fast: what a Gaussian of 2 ms removes from the 353 PTB-XL
sample records, as a 3×4 page shows them, is a median 3.0 % of their variation (90 % of
records below 4.2 %, 97 % below 5 %), and about as much from the readings of clean pages;
blurred pages' readings hold 5–12 %. A reading holding more than ``JITTER_LIMIT`` carries
its own jitter, and is smoothed by that Gaussian; a sharp reading is left as it is (the
same smoothing costs clean 200-dpi pages 2.5 dB: their QRS peaks are right to the sample).
"""

from __future__ import annotations

import warnings

import numpy as np

JITTER_SIGMA_S = 0.002     # one sample at 500 Hz: −3 dB at about 66 Hz
JITTER_LIMIT = 0.05        # share of a reading's variation faster than that, above which it is jitter


def smooth_shown(signal: np.ndarray, sigma: float) -> np.ndarray:
    """``signal`` [leads, samples] smoothed along time by a Gaussian of ``sigma`` samples,
    NaN (samples not shown) ignored and kept NaN."""
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(signal, np.float64)
    shown = np.isfinite(x)
    num = gaussian_filter1d(np.where(shown, x, 0.0), sigma, axis=-1, mode="nearest")
    den = gaussian_filter1d(shown.astype(np.float64), sigma, axis=-1, mode="nearest")
    out = num / np.maximum(den, 1e-12)
    out[~shown] = np.nan
    return out


def jitter_share(signal: np.ndarray, fs: float) -> float:
    """RMS of what the Gaussian of ``JITTER_SIGMA_S`` removes over the RMS of the signal
    (each lead's mean removed), over the samples shown; NaN when nothing is shown."""
    x = np.asarray(signal, np.float64)
    return _share(x, smooth_shown(x, JITTER_SIGMA_S * fs))


def calm_jitter(signal: np.ndarray, fs: float) -> np.ndarray:
    """``signal`` smoothed by ``JITTER_SIGMA_S`` when its jitter share exceeds ``JITTER_LIMIT``,
    else unchanged (same dtype)."""
    x = np.asarray(signal, np.float64)
    smooth = smooth_shown(x, JITTER_SIGMA_S * fs)
    return smooth.astype(signal.dtype) if _share(x, smooth) > JITTER_LIMIT else signal


def _share(x: np.ndarray, smooth: np.ndarray) -> float:
    if not np.isfinite(x).any():
        return float("nan")
    with warnings.catch_warnings():       # a lead not shown at all: its mean is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        centred = x - np.nanmean(x, axis=-1, keepdims=True)
        spread = float(np.sqrt(np.nanmean(centred ** 2)))
        fast = float(np.sqrt(np.nanmean((x - smooth) ** 2)))
    return fast / spread if spread > 0 else 0.0
