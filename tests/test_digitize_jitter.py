"""Column jitter (digitize/jitter.py): a blurred page's reading steps up and down from one
pixel column to the next; a recorded ECG holds little variation that fast."""

from __future__ import annotations

import numpy as np
import pytest

from ecgscan_cli.digitize.jitter import JITTER_LIMIT, calm_jitter, jitter_share, smooth_shown
from ecgscan_cli.render.layout import as_shown
from ecgscan_cli.snr import reconstruction_snr

RECORDS = ("00148", "00300", "00012", "00021")   # 00001 is among the 3 % of noisy records above it


def column_jitter(x: np.ndarray, samples_per_column: int, mv: float, seed: int = 0) -> np.ndarray:
    """``x`` with a random offset (± ``mv``) held for each pixel column's samples."""
    rng = np.random.default_rng(seed)
    steps = rng.uniform(-mv, mv, size=(x.shape[0], x.shape[1] // samples_per_column + 1))
    return x + np.repeat(steps, samples_per_column, axis=1)[:, : x.shape[1]]


def test_recorded_ecgs_are_below_the_limit_and_left_alone(ptbxl_record):
    for rid in RECORDS:
        ref = as_shown(ptbxl_record(rid)).astype(np.float32)
        assert jitter_share(ref, 500.0) < JITTER_LIMIT, rid
        assert calm_jitter(ref, 500.0) is ref


def test_a_jittered_reading_is_smoothed_towards_the_truth(ptbxl_record):
    for rid in RECORDS:
        ref = as_shown(ptbxl_record(rid))
        # a blurred 200-dpi reading: ~2.6 samples a column, its flanks stepping by ±0.1 mV
        reading = column_jitter(ref, 3, 0.1).astype(np.float32)
        assert jitter_share(reading, 500.0) > JITTER_LIMIT, rid
        calmed = calm_jitter(reading, 500.0)
        assert calmed.dtype == np.float32
        assert np.array_equal(np.isnan(calmed), np.isnan(reading))     # what is not shown stays NaN
        before = np.nanmean(reconstruction_snr(ref, reading, 500.0, align=True))
        after = np.nanmean(reconstruction_snr(ref, calmed, 500.0, align=True))
        assert after > before + 1.0, (rid, before, after)


def test_smoothing_ignores_what_is_not_shown():
    x = np.full((2, 100), np.nan)
    x[0, 20:60] = 1.0                     # a constant shown between NaNs: no edge effect
    x[1, :] = np.where(np.arange(100) % 2, 1.0, -1.0)
    s = smooth_shown(x, 1.0)
    assert np.allclose(s[0, 20:60], 1.0) and np.isnan(s[0, :20]).all() and np.isnan(s[0, 60:]).all()
    assert np.abs(s[1, 5:-5]).max() < 0.3  # alternation from sample to sample is smoothed away
    assert np.isnan(jitter_share(np.full((12, 10), np.nan), 500.0))
    assert jitter_share(np.ones((12, 10)), 500.0) == 0.0


def test_a_sharp_page_is_read_without_smoothing(ptbxl_record, monkeypatch):
    from ecgscan_cli.digitize import pipeline
    from ecgscan_cli.render.layout import LayoutOptions
    from ecgscan_cli.render.targets import page_targets

    x = ptbxl_record("00001")
    trace, grid = page_targets(x, 500.0, LayoutOptions(), 200.0)
    raw = pipeline.digitize_maps
    d = raw(trace, grid)
    assert jitter_share(d.signal, 500.0) < JITTER_LIMIT
    monkeypatch.setattr(pipeline, "calm_jitter", lambda s, fs: pytest.fail("smoothed") if jitter_share(s, fs) > JITTER_LIMIT else s)
    raw(trace, grid)
