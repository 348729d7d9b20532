"""Lead-SNR (paper Table 1) and reconstruction SNR (PhysioNet 2024), library and `ecgscan snr-check`."""

from __future__ import annotations

import csv
import io
import json
import math

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.formats import write_signals
from ecgscan_cli.snr import SUMMARY_COLUMNS, shift_samples, compare_signals, lead_snr_table, reconstruction_snr, summarize
from ecgscan_cli.synth import synthesize, write_synth

runner = CliRunner()
PAPER_PTBXL = {"III": 50.70, "aVR": 48.65, "aVL": 47.38, "aVF": 47.13}
# measured on ../shared/data/ptbxl-sample (353 records, 500 Hz) with this code
MEASURED_PTBXL = {"III": 50.37, "aVR": 49.36, "aVL": 46.05, "aVF": 47.77}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def rows_by_lead(csv_text: str) -> dict:
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    return {r["lead"]: r for r in rows}


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def ptbxl_h5(ptbxl_dir, tmp_path_factory):
    from ecgscan_cli.importing import import_records

    shared = tmp_path_factory.getbasetemp() / "ptbxl-import.h5"  # written by test_import when it ran first
    if shared.exists():
        return shared
    path, _ = import_records(ptbxl_dir, shared)
    return path


def test_ptbxl_lead_snr_near_paper(ptbxl_h5):
    r = run("snr-check", ptbxl_h5, "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == "lead,mean_db,median_db,min_db,n"
    table = rows_by_lead(r.stdout)
    assert list(table) == ["III", "aVR", "aVL", "aVF"]
    for lead, paper in PAPER_PTBXL.items():
        mean = float(table[lead]["mean_db"])
        assert abs(mean - paper) < 5, (lead, mean, paper)
        assert abs(mean - MEASURED_PTBXL[lead]) < 0.05, (lead, mean)
        assert int(table[lead]["n"]) == 353
        assert float(table[lead]["min_db"]) <= float(table[lead]["median_db"])


def test_ptbxl_wfdb_folder_gives_the_same_table(ptbxl_dir, ptbxl_h5):
    a = lead_snr_table(ptbxl_h5)
    b = lead_snr_table(ptbxl_dir)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.per_record, b.per_record, atol=1e-3)  # float32 rounding only


def test_chaining_import_into_snr_check(ptbxl_dir, tmp_path):
    out = tmp_path / "x.h5"
    r = run("import", ptbxl_dir, "-o", out, "--limit", "5", "-q")
    assert r.exit_code == 0
    r = run("snr-check", r.stdout.strip(), "-f", "json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert [d["lead"] for d in data] == ["III", "aVR", "aVL", "aVF"] and data[0]["n"] == 5


# ---------------------------------------------------------------- lead-SNR


def test_synthetic_clean_is_exact_and_noisy_is_realistic(tmp_path):
    clean = synthesize(8, seed=0, noise=0.0)
    write_signals(tmp_path / "clean.h5", clean.signals, clean.ids)
    res = lead_snr_table(tmp_path / "clean.h5")
    # the int16 µV file format rounds each lead on its own: what is left is quantisation
    # noise, the same order as PTB-XL's (whose files are also 1 µV resolution)
    assert (res.per_record > 30).all() and np.median(res.per_record) > 40
    res = lead_snr_table(write_synth(tmp_path / "noisy.h5", 20, seed=1))
    means = [r["mean_db"] for r in res.summary]
    assert all(35 < m < 75 for m in means)


def test_summary_statistics():
    v = np.array([[10.0, np.inf], [20.0, 5.0], [np.nan, 7.0]])
    rows = summarize(v, ["A", "B"], overall="all")
    assert rows[0] == {"lead": "A", "mean_db": 15.0, "median_db": 15.0, "min_db": 10.0, "n": 2}
    assert rows[1]["mean_db"] == math.inf and rows[1]["min_db"] == 5.0 and rows[1]["n"] == 3
    assert rows[2]["lead"] == "all" and rows[2]["n"] == 5


def test_per_record_csv_and_table_formats(random_signals_file, tmp_path):
    out = tmp_path / "per.csv"
    r = run("snr-check", random_signals_file, "--per-record", out)
    assert r.exit_code == 0, r.output
    assert "mean_db" in r.stdout and "III" in r.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and list(rows[0]) == ["id", "III", "aVR", "aVL", "aVF"]
    assert rows[0]["id"] == "r0" and float(rows[0]["III"]) > 40  # derived exactly, then µV rounding
    r = run("snr-check", random_signals_file, "--per-record", out)
    assert r.exit_code == 2 and "exists" in r.stderr
    r = run("snr-check", random_signals_file, "--per-record", out, "--overwrite", "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["lead"] == "III"


# ---------------------------------------------------------------- reconstruction SNR


def test_reconstruction_snr_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (12, 1000))
    noise = rng.normal(0, 0.1, (12, 1000))
    got = reconstruction_snr(x, x + noise)
    expect = 10 * np.log10((x ** 2).sum(1) / (noise ** 2).sum(1))
    np.testing.assert_allclose(got, expect)
    assert np.isinf(reconstruction_snr(x, x)).all()
    assert (reconstruction_snr(x, None) == 0).all()
    # NaN in the estimate: ignored, score scaled by the fraction covered
    y = x + noise
    y[:, 500:] = np.nan
    half = 10 * np.log10((x[:, :500] ** 2).sum(1) / (noise[:, :500] ** 2).sum(1)) * 0.5
    np.testing.assert_allclose(reconstruction_snr(x, y), half)
    # official challenge code: missing samples are zeros
    zero = np.where(np.isnan(y), 0, y)
    np.testing.assert_allclose(reconstruction_snr(x, y, missing="zero"),
                               10 * np.log10((x ** 2).sum(1) / ((x - zero) ** 2).sum(1)))
    # NaN in the reference: those samples do not count at all
    xr = x.copy()
    xr[:, :100] = np.nan
    np.testing.assert_allclose(reconstruction_snr(xr, x + noise),
                               10 * np.log10((x[:, 100:] ** 2).sum(1) / (noise[:, 100:] ** 2).sum(1)))
    # an all-zero reference lead has no SNR
    x0 = x.copy()
    x0[4] = 0
    assert np.isnan(reconstruction_snr(x0, x + noise)[4])


def test_alignment_recovers_shift_and_offset():
    x = synthesize(1, seed=3).signals[0].astype(np.float64)
    noise = np.random.default_rng(1).normal(0, 0.02, x.shape)
    y = np.stack([shift_samples(lead, -60) for lead in x + noise]) - 0.4  # 0.12 s early, 0.4 mV low
    plain = reconstruction_snr(x, y)
    aligned = reconstruction_snr(x, y, align=True)
    reference = reconstruction_snr(x, x + noise)
    assert (plain < 5).all()
    np.testing.assert_allclose(aligned, reference * (5000 - 60) / 5000, atol=0.3)
    # beyond the limits the alignment cannot help fully
    far = np.stack([shift_samples(lead, 400) for lead in x])  # 0.8 s
    assert (reconstruction_snr(x, far, align=True) < 40).all()


def test_compare_files_and_cli(tmp_path):
    ref = synthesize(6, seed=2)
    write_signals(tmp_path / "ref.h5", ref.signals, ref.ids)
    rng = np.random.default_rng(0)
    est = ref.signals + rng.normal(0, 0.05, ref.signals.shape).astype(np.float32)
    # estimate lacks the last record, has one extra, and is in another order
    ids = ref.ids[:5][::-1] + ["other"]
    sig = np.concatenate([est[:5][::-1], est[:1]])
    write_signals(tmp_path / "est.h5", sig, ids)
    res = compare_signals(tmp_path / "est.h5", tmp_path / "ref.h5", score_absent=True)
    assert res.ids == ref.ids and res.missing_ids == [ref.ids[5]] and res.extra_ids == ["other"]
    assert (res.per_record[5] == 0).all()
    assert (res.per_record[:5] > 5).all()
    present = compare_signals(tmp_path / "est.h5", tmp_path / "ref.h5")   # default: absent ones not scored
    assert present.ids == ref.ids[:5] and present.missing_ids == [ref.ids[5]]
    r = run("snr-check", tmp_path / "est.h5", "--reference", tmp_path / "ref.h5", "-f", "csv", "--align")
    assert r.exit_code == 0, r.output
    table = rows_by_lead(r.stdout)
    assert list(table) == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6", "all"]
    assert int(table["all"]["n"]) == 60 and "1 of 6 reference record(s) are absent" in r.stderr
    assert list(csv.DictReader(io.StringIO(r.stdout)).fieldnames) == list(SUMMARY_COLUMNS)


def test_reference_errors(tmp_path, random_signals_file):
    other = synthesize(2, seed=0)
    write_signals(tmp_path / "other.h5", other.signals, other.ids)
    r = run("snr-check", tmp_path / "other.h5", "--reference", random_signals_file)
    assert r.exit_code == 2 and "no record id" in r.stderr
    r = run("snr-check", random_signals_file, "--align")
    assert r.exit_code == 2 and "--reference" in r.stderr
    write_signals(tmp_path / "fs.h5", other.signals, ["r0", "r1"], fs=250.0)
    r = run("snr-check", tmp_path / "fs.h5", "--reference", random_signals_file)
    assert r.exit_code == 2 and "sampling rates differ" in r.stderr


# ---------------------------------------------------------------- bad input


def test_bad_files(tmp_path):
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    cases = [(tmp_path / "text.h5", "not an HDF5 file"), (tmp_path / "foreign.h5", "not an ecgscan file"),
             (tmp_path / "missing.h5", "no such file")]
    for path, message in cases:
        r = run("snr-check", path)
        assert r.exit_code == 2, (path, r.output)
        assert message in r.stderr and "Traceback" not in r.output
        assert len(r.stderr.strip().splitlines()) == 1
    r = run("snr-check", tmp_path / "missing.h5", "--reference", tmp_path / "text.h5")
    assert r.exit_code == 2
    (tmp_path / "empty").mkdir()
    r = run("snr-check", tmp_path / "empty")
    assert r.exit_code == 2 and "no WFDB records" in r.stderr


def test_wfdb_folder_with_bad_records(tmp_path):
    import wfdb

    from ecgscan_cli.leads import with_derived_limb_leads

    x = with_derived_limb_leads(np.random.default_rng(0).normal(0, 0.3, (12, 5000)))
    names = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    for name in ("a", "b"):
        wfdb.wrsamp(name, fs=500, units=["mV"] * 12, sig_name=names, p_signal=x.T, fmt=["16"] * 12,
                    adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    (tmp_path / "b.dat").unlink()
    r = run("snr-check", tmp_path, "-f", "csv")
    assert r.exit_code == 0, r.output
    assert rows_by_lead(r.stdout)["III"]["n"] == "1" and "skipped" in r.stderr
    (tmp_path / "a.dat").unlink()
    r = run("snr-check", tmp_path)
    assert r.exit_code == 2 and "could be read" in r.stderr
