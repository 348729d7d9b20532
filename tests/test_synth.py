"""The synthetic ECG generator: shapes, physics, labels, reports, determinism, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ecgscan_cli.leads import LEAD_INDEX, lead_snr_db
from ecgscan_cli.synth import CLASSES, RHYTHMS, SynthBatch, synthesize, write_synth


@pytest.fixture(scope="module")
def batch() -> SynthBatch:
    return synthesize(200, seed=7)


def test_shapes_and_types(batch):
    assert len(batch.ids) == 200 == len(set(batch.ids))
    assert batch.signals.shape == (200, 12, 5000) and batch.signals.dtype == np.float32
    assert batch.labels.shape == (200, len(CLASSES)) and batch.labels.dtype == np.uint8
    assert batch.classes == CLASSES and len(CLASSES) >= 5
    assert batch.folds.shape == (200,) and set(batch.folds.tolist()) == set(range(1, 11))
    assert all(isinstance(r, str) and r for r in batch.reports)
    assert np.isfinite(batch.signals).all()
    # plausible amplitudes: mV scale, well inside the int16 µV range
    assert 0.3 < np.abs(batch.signals).max() < 10
    assert 0.05 < batch.signals.std() < 1.0


def test_other_sampling_rates_and_durations():
    b = synthesize(3, seed=1, fs=100.0, duration_s=2.5)
    assert b.signals.shape == (3, 12, 250)
    assert synthesize(0).signals.shape == (0, 12, 5000)


def test_einthoven_goldberger_exact_without_noise():
    clean = synthesize(20, seed=1, noise=0.0).signals
    snr = lead_snr_db(clean)
    assert (snr > 100).all()  # float32 rounding only (often +inf)


def test_noise_gives_realistic_lead_snr(batch):
    # 1 µV quantisation per lead: same order as PTB-XL's ~50 dB
    snr = lead_snr_db(batch.signals)
    assert np.isfinite(snr).all()
    assert 40 < np.median(snr) < 70
    clean = synthesize(200, seed=7, noise=0.0).signals
    diff = batch.signals - clean
    assert 0.005 < np.abs(diff).mean() < 0.5  # noise is there but does not dominate


def test_labels_one_rhythm_and_morphology_flags(batch):
    rhythm = batch.labels[:, : len(RHYTHMS)]
    assert (rhythm.sum(1) == 1).all()
    counts = batch.labels.sum(0)
    assert (counts >= 10).all(), dict(zip(CLASSES, counts))


def _heart_rate(sig, fs=500.0):
    from scipy.signal import find_peaks

    x = (np.diff(sig, axis=-1) ** 2).sum(0)  # slope energy: QRS complexes dominate
    peaks, _ = find_peaks(x, height=0.2 * np.percentile(x, 99.5), distance=int(0.25 * fs))
    rr = np.diff(peaks) / fs
    return 60 / rr.mean(), rr.std() / rr.mean()


def test_conditions_change_the_signal():
    b = synthesize(120, seed=11, noise=0.0)
    lab = {c: b.labels[:, i].astype(bool) for i, c in enumerate(CLASSES)}
    stats = np.array([_heart_rate(s) for s in b.signals])
    hr, cv = stats[:, 0], stats[:, 1]
    assert hr[lab["SBRAD"]].max() < 62 and hr[lab["STACH"]].min() > 95
    assert 55 < hr[lab["NSR"]].mean() < 105
    assert np.median(cv[lab["AFIB"]]) > 2 * np.median(cv[lab["NSR"] | lab["SBRAD"] | lab["STACH"]])
    # wide QRS: more energy late after the R peak -> broader QRS; measured as the width
    # of |dV/dt| activity in V1 around each beat is complex, so compare V1 QRS area
    v1 = b.signals[:, LEAD_INDEX["V1"]]
    assert np.abs(v1[lab["WQRS"]]).mean() > 1.2 * np.abs(v1[~lab["WQRS"]]).mean()
    # ST elevation moves the ST segment: larger mean deviation of the whole signal
    st = np.abs(b.signals[:, 6:10].mean(-1)).mean(-1)
    assert st[lab["STE"]].mean() > 1.5 * st[~lab["STE"]].mean()


def test_reports_follow_labels_with_varied_wording(batch):
    words = {"AFIB": ("fibrillation", "af,"), "SBRAD": ("bradycardia", "slow"), "STACH": ("tachycardia", "fast"),
             "WQRS": ("bundle", "wide"), "STE": ("st elevation", "st segment elevation")}
    for i, rep in enumerate(batch.reports):
        low = rep.lower()
        for c, keys in words.items():
            has = bool(batch.labels[i, CLASSES.index(c)])
            assert has == any(k in low for k in keys), (c, rep)
    assert len(set(batch.reports)) > 40


def test_seeded_and_deterministic():
    a, b = synthesize(30, seed=5), synthesize(30, seed=5)
    assert np.array_equal(a.signals, b.signals) and a.reports == b.reports and a.ids == b.ids
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.folds, b.folds)
    c = synthesize(30, seed=6)
    assert not np.array_equal(a.signals, c.signals)


def test_fast_enough():
    synthesize(10)
    t0 = time.perf_counter()
    synthesize(1000, seed=2)
    assert time.perf_counter() - t0 < 10  # ~1.5 s on one free core; generous for shared CI


def test_write_synth_roundtrip(tmp_path):
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.formats import SignalsFile

    path = write_synth(tmp_path / "s.h5", 12, seed=3)
    ref = synthesize(12, seed=3)
    with SignalsFile(path) as f:
        assert f.ids == ref.ids and f.reports == ref.reports and f.classes == CLASSES
        assert np.array_equal(f.labels, ref.labels) and np.array_equal(f.folds, ref.folds)
        assert f.fs == 500.0 and f.n_samples == 5000
        np.testing.assert_allclose(f.signals(), ref.signals, atol=1e-6)  # already on the 1 µV grid
    with pytest.raises(EcgscanError, match="exists"):
        write_synth(path, 5)
    write_synth(path, 5, overwrite=True)
    assert len(SignalsFile(path)) == 5
    with pytest.raises(EcgscanError, match="does not exist"):
        write_synth(tmp_path / "missing" / "s.h5", 5)
