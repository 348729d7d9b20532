"""`ecgscan import` and the WFDB reader: PTB-XL labels, canonical form, every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats import SignalsFile
from ecgscan_cli.leads import derived_limb_leads
from ecgscan_cli.importing import (
    ImportOptions, RecordError, canonicalize, import_records, ptbxl_classes, ptbxl_labels, read_scp_statements, read_wfdb,
)

runner = CliRunner()
WFDB_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def ecg(t_len=5000, fs=500.0, seed=0) -> np.ndarray:
    """[12, T] mV test signal with consistent limb leads (sines + noise, ±2 mV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(t_len) / fs
    phase = rng.uniform(0, 6, size=12)
    x = np.zeros((12, t_len))
    for k in range(12):
        x[k] = 0.8 * np.sin(2 * np.pi * (1 + 0.3 * k) * t + phase[k]) + rng.normal(0, 0.02, t_len)
    x[2:6] = derived_limb_leads(x)
    return np.round(x, 3)


def write_record(folder, name, x, names=WFDB_NAMES, fs=500, comments=None):
    """Write a WFDB record (format 16, 1000 adu/mV) with leads ``x`` [L, T] mV."""
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * len(names), sig_name=list(names), p_signal=np.asarray(x).T,
                fmt=["16"] * len(names), adc_gain=[1000.0] * len(names), baseline=[0] * len(names),
                comments=comments or [], write_dir=str(folder))
    return folder / name


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def no_partial_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if ".partial-" in p.name]


# ---------------------------------------------------------------- PTB-XL


@pytest.fixture(scope="module")
def ptbxl_file(ptbxl_dir, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "ptbxl-import.h5"  # reused read-only by test_snr
    path, stats = import_records(ptbxl_dir, out, overwrite=True)
    return path, stats


def test_ptbxl_label_sets_match_benchmark_sizes(ptbxl_dir):
    scp = read_scp_statements(ptbxl_dir)
    sizes = {s: len(ptbxl_classes(scp, s)) for s in ("superclass", "subclass", "form", "rhythm")}
    assert sizes == {"superclass": 5, "subclass": 23, "form": 19, "rhythm": 12}
    assert ptbxl_classes(scp, "superclass") == ["CD", "HYP", "MI", "NORM", "STTC"]


def test_ptbxl_label_aggregation_like_benchmark(ptbxl_dir):
    scp = read_scp_statements(ptbxl_dir)
    codes = {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    assert ptbxl_labels(codes, scp, "superclass") == ["NORM"]
    assert ptbxl_labels(codes, scp, "form") == ["LVOLT"]
    assert ptbxl_labels(codes, scp, "rhythm") == ["SR"]
    # likelihood is ignored by the benchmark (0 counts); a threshold only filters diagnostic codes
    codes = {"IMI": 0.0, "ASMI": 100.0, "SR": 0.0}
    assert ptbxl_labels(codes, scp, "subclass") == ["AMI", "IMI"]
    assert ptbxl_labels(codes, scp, "subclass", min_likelihood=50) == ["AMI"]
    assert ptbxl_labels(codes, scp, "rhythm", min_likelihood=50) == ["SR"]


def test_ptbxl_import(ptbxl_file, ptbxl_dir):
    path, stats = ptbxl_file
    assert stats.found == stats.imported == 353 and stats.n_skipped == 0
    with SignalsFile(path) as f:
        assert len(f) == 353 and f.fs == 500.0 and f.n_samples == 5000
        assert f.classes == ["CD", "HYP", "MI", "NORM", "STTC"]
        assert f.ids[0] == "00001" and f.labels[0].tolist() == [0, 0, 0, 1, 0]
        assert set(f.folds.tolist()) <= set(range(1, 11))
        assert f.reports[0] == "sinusrhythmus periphere niederspannung"
        assert f.labels.sum() >= 353 * 0.9  # nearly every record has a superclass
        # exactly the samples wfdb reads (lossless µV)
        rec = wfdb.rdrecord(str(ptbxl_dir / "records500/00000/00001_hr"))
        np.testing.assert_allclose(f.signal(0), rec.p_signal.T, atol=1e-6)


def test_ptbxl_100hz_and_other_label_sets(ptbxl_dir, tmp_path):
    path, stats = import_records(ptbxl_dir, tmp_path / "lr.h5", sampling_rate=100, label_set="rhythm", limit=8)
    assert stats.imported == 8 and stats.resampled == 8
    with SignalsFile(path) as f:
        assert f.n_samples == 5000 and len(f.classes) == 12 and "SR" in f.classes
        hr = wfdb.rdrecord(str(ptbxl_dir / "records500/00000/00001_hr")).p_signal.T
        # the 100 Hz version resampled to 500 Hz follows the 500 Hz recording closely
        err = np.abs(f.signal(0)[:, 100:-100] - hr[:, 100:-100]).mean()
        assert err < 0.05
    path, _ = import_records(ptbxl_dir, tmp_path / "sub.h5", label_set="subclass", limit=30, drop_unlabelled=True)
    with SignalsFile(path) as f:
        assert len(f.classes) == 23 and (f.labels.sum(1) > 0).all()


def test_mini_ptbxl_root_with_a_missing_record(ptbxl_dir, tmp_path):
    """A PTB-XL layout built here: a listed record whose files are missing is skipped and counted."""
    import shutil

    root = tmp_path / "ptbxl"
    write_record(root / "records500" / "00000", "00007_hr", ecg())
    shutil.copy(ptbxl_dir / "scp_statements.csv", root / "scp_statements.csv")
    (root / "ptbxl_database.csv").write_text(
        "ecg_id,report,scp_codes,strat_fold,filename_lr,filename_hr\n"
        "7,sinus rhythm. inferior mi.,\"{'IMI': 50.0, 'SR': 0.0}\",9,records100/00000/00007_lr,records500/00000/00007_hr\n"
        "8,missing,\"{'NORM': 100.0}\",10,records100/00000/00008_lr,records500/00000/00008_hr\n")
    path, stats = import_records(root, tmp_path / "out.h5")
    assert stats.imported == 1 and stats.skipped == {"missing header": 1}
    with SignalsFile(path) as f:
        assert f.ids == ["00007"] and f.folds.tolist() == [9] and f.reports == ["sinus rhythm. inferior mi."]
        assert f.labels[0, f.classes.index("MI")] == 1 and f.labels[0].sum() == 1
    r = run("import", root, "-o", tmp_path / "x.h5", "--labels", "dx")
    assert r.exit_code == 2 and "SCP codes" in r.stderr


# ---------------------------------------------------------------- WFDB folders


def test_folder_with_shuffled_and_differently_named_leads(tmp_path):
    x = ecg()
    order = [11, 3, 0, 7, 1, 5, 9, 2, 4, 6, 8, 10]
    names = [["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"][k] for k in order]
    write_record(tmp_path / "src" / "sub", "a1", x[order], names=names, comments=["Dx: 164889003,59118001"])
    write_record(tmp_path / "src", "a0", x, comments=["Age: 60", "Dx: 426783006"])
    path, stats = import_records(tmp_path / "src", tmp_path / "out.h5")
    assert stats.imported == 2
    with SignalsFile(path) as f:
        assert f.ids == ["a0", "sub/a1"]
        np.testing.assert_allclose(f.signal(0), x, atol=1e-6)
        np.testing.assert_allclose(f.signal(1), x, atol=1e-6)
        assert sorted(f.classes) == ["164889003", "426783006", "59118001"]
        assert f.labels.sum(1).tolist() == [1, 2]
        assert f.reports[0] == "sinus rhythm"
        assert "atrial fibrillation" in f.reports[1] and "right bundle branch block" in f.reports[1]
        assert f.folds.tolist() == [-1, -1]


def test_challenge_mat_record(tmp_path):
    from scipy.io import savemat

    x = ecg(t_len=2500)  # 5 s at 500 Hz: padded
    digital = np.round(x * 1000).astype(np.int16)
    folder = tmp_path / "cinc"
    folder.mkdir()
    savemat(folder / "A0001.mat", {"val": digital}, format="4")
    lines = ["A0001 12 500 2500"]
    for name, d in zip(WFDB_NAMES, digital):
        lines.append(f"A0001.mat 16+24 1000/mV 16 0 {d[0]} 0 0 {name}")
    lines += ["#Age: 74", "#Sex: Male", "#Dx: 426177001,164934002"]
    (folder / "A0001.hea").write_text("\n".join(lines) + "\n")
    sig, names, fs, comments = read_wfdb(folder / "A0001")
    np.testing.assert_allclose(sig, x, atol=1e-6)
    path, stats = import_records(folder, tmp_path / "out.h5", pad="nan")
    assert stats.padded == 1
    with SignalsFile(path) as f:
        s = f.signal(0)
        np.testing.assert_allclose(s[:, :2500], x, atol=1e-6)
        assert np.isnan(s[:, 2500:]).all()
        assert f.reports[0] == "sinus bradycardia; t wave abnormal"


@pytest.mark.parametrize("fs", [250, 1000])
def test_resampled_to_500hz(tmp_path, fs):
    t_len = int(10 * fs)
    x = ecg(t_len=t_len, fs=fs)
    write_record(tmp_path / "src", "r", x, fs=fs)
    path, stats = import_records(tmp_path / "src", tmp_path / "out.h5")
    assert stats.resampled == 1
    expect = ecg(t_len=5000, fs=500.0)  # same sines sampled at 500 Hz (noise differs)
    with SignalsFile(path) as f:
        got = f.signal(0)
    assert got.shape == (12, 5000)
    assert np.abs(got[:, 50:-50] - expect[:, 50:-50]).mean() < 0.05


def test_zero_padding_default(tmp_path):
    write_record(tmp_path / "src", "short", ecg(t_len=1000))
    path, stats = import_records(tmp_path / "src", tmp_path / "out.h5")
    with SignalsFile(path) as f:
        assert (f.signal(0)[:, 1000:] == 0).all() and stats.padded == 1


def test_missing_limb_leads_skipped_or_derived(tmp_path):
    x = ecg()
    keep = [0, 1, 6, 7, 8, 9, 10, 11]  # I, II, V1-V6 only
    write_record(tmp_path / "src", "limb", x[keep], names=[WFDB_NAMES[k] for k in keep])
    write_record(tmp_path / "src", "full", x)
    path, stats = import_records(tmp_path / "src", tmp_path / "a.h5")
    assert stats.imported == 1 and stats.skipped == {"missing leads": 1}
    path, stats = import_records(tmp_path / "src", tmp_path / "b.h5", derive_limb_leads=True)
    assert stats.imported == 2 and stats.derived == 1
    with SignalsFile(path) as f:
        np.testing.assert_allclose(f.signal(f.ids.index("limb")), x, atol=2e-3)
    # from II and III (I missing) works too
    keep = [1, 2] + list(range(6, 12))
    sig = canonicalize(x[keep], [WFDB_NAMES[k] for k in keep], 500.0,
                       options=ImportOptions(derive_limb_leads=True))
    np.testing.assert_allclose(sig, x, atol=2e-3)  # leads rounded to 1 µV one by one
    # precordial leads cannot be derived
    with pytest.raises(RecordError, match="missing leads V6"):
        canonicalize(x[:11], WFDB_NAMES[:11], 500.0)


def test_parallel_workers_same_output(tmp_path):
    for i in range(6):
        write_record(tmp_path / "src", f"r{i}", ecg(seed=i))
    a, _ = import_records(tmp_path / "src", tmp_path / "a.h5", workers=1)
    b, _ = import_records(tmp_path / "src", tmp_path / "b.h5", workers=2)
    fa, fb = SignalsFile(a), SignalsFile(b)
    assert fa.ids == fb.ids
    assert np.array_equal(fa.signals(), fb.signals())


# ---------------------------------------------------------------- bad input


@pytest.fixture
def bad_folder(tmp_path):
    """One good record and one of every kind of broken record."""
    src = tmp_path / "src"
    x = ecg()
    write_record(src, "good", x)
    write_record(src, "nodat", x)
    (src / "nodat.dat").unlink()
    write_record(src, "trunc", x)
    data = (src / "trunc.dat").read_bytes()
    (src / "trunc.dat").write_bytes(data[: len(data) // 2 + 7])
    write_record(src, "pointer", x)
    (src / "pointer.hea").write_text((src / "pointer.hea").read_text().replace("pointer.dat", "elsewhere.dat"))
    write_record(src, "unknown", x, names=[f"X{k}" for k in range(12)])
    write_record(src, "slowfs", x[:, :400], fs=40)
    (src / "garbage.hea").write_text("this is not a header\n")
    return src


def test_bad_records_are_skipped_and_counted(bad_folder, tmp_path):
    path, stats = import_records(bad_folder, tmp_path / "out.h5")
    assert stats.found == 7 and stats.imported == 1
    assert stats.skipped == {"missing signal file": 2, "unreadable signal": 1, "unknown lead names": 1,
                             "bad sampling rate": 1, "unreadable header": 1}
    assert SignalsFile(path).ids == ["good"]


@pytest.mark.parametrize("name, message", [
    ("nodat", "signal file nodat.dat does not exist"),
    ("trunc", "truncated"),
    ("pointer", "signal file elsewhere.dat does not exist"),
    ("unknown", "unknown lead names: X0"),
    ("slowfs", "sampling rate 40 Hz is not usable"),
    ("garbage", "not a valid WFDB header"),
])
def test_each_bad_record_has_a_clear_message(bad_folder, name, message):
    with pytest.raises(RecordError, match=message):
        read_wfdb(bad_folder / name) if name in ("nodat", "trunc", "pointer", "slowfs", "garbage") else \
            canonicalize(*read_wfdb(bad_folder / name)[:3])


def test_strict_stops_without_output(bad_folder, tmp_path):
    r = run("import", bad_folder, "-o", tmp_path / "out.h5", "--strict", "-q")
    assert r.exit_code == 2 and "--strict" in r.stderr
    assert not (tmp_path / "out.h5").exists() and no_partial_files(tmp_path)


def test_nan_samples_kept_as_gaps_and_inf_refused(tmp_path):
    x = ecg()
    digital = np.round(x * 1000).astype(np.int16)
    digital[3, 100:200] = -32768  # WFDB's "sample not present" code for format 16
    folder = tmp_path / "src"
    folder.mkdir()
    wfdb.wrsamp("gap", fs=500, units=["mV"] * 12, sig_name=WFDB_NAMES, d_signal=digital.T, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    path, stats = import_records(folder, tmp_path / "out.h5")
    with SignalsFile(path) as f:
        s = f.signal(0)
    assert np.isnan(s[3, 100:200]).all() and np.isfinite(s[3, :100]).all()
    bad = x.copy()
    bad[0, 10] = np.inf
    with pytest.raises(RecordError, match="infinite"):
        canonicalize(bad, WFDB_NAMES, 500.0)
    with pytest.raises(RecordError, match="beyond"):
        canonicalize(x * 100, WFDB_NAMES, 500.0)


def test_all_records_bad_is_an_error_without_output(tmp_path):
    write_record(tmp_path / "src", "u", ecg(), names=[f"X{k}" for k in range(12)])
    r = run("import", tmp_path / "src", "-o", tmp_path / "out.h5", "-q")
    assert r.exit_code == 2 and "none of the 1 records could be imported" in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "out.h5").exists() and no_partial_files(tmp_path)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("import", tmp_path / "empty", "-o", tmp_path / "out.h5")
    assert r.exit_code == 2 and "no WFDB records" in r.stderr
    r = run("import", tmp_path / "nope", "-o", tmp_path / "out.h5")
    assert r.exit_code == 2 and "no such file or folder" in r.stderr
    (tmp_path / "x.txt").write_text("hi")
    r = run("import", tmp_path / "x.txt", "-o", tmp_path / "out.h5")
    assert r.exit_code == 2 and "neither" in r.stderr


def test_ptbxl_label_set_on_plain_folder_refused(tmp_path):
    write_record(tmp_path / "src", "a", ecg())
    r = run("import", tmp_path / "src", "-o", tmp_path / "out.h5", "--labels", "superclass")
    assert r.exit_code == 2 and "PTB-XL" in r.stderr


# ---------------------------------------------------------------- CLI conventions


def test_cli_prints_path_only_on_stdout_and_refuses_existing_output(tmp_path):
    write_record(tmp_path / "src", "a", ecg())
    out = tmp_path / "out.h5"
    r = run("import", tmp_path / "src", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    assert "imported" in r.stderr  # the summary table
    before = out.read_bytes()
    r = run("import", tmp_path / "src", "-o", out)
    assert r.exit_code == 2 and "exists" in r.stderr and "--overwrite" in r.stderr
    assert out.read_bytes() == before
    r = run("import", tmp_path / "src", "-o", out, "--overwrite", "-q")
    assert r.exit_code == 0 and r.stderr == ""
    r = run("import", tmp_path / "src", "-o", tmp_path / "missing" / "out.h5")
    assert r.exit_code == 2 and "output folder does not exist" in r.stderr


def test_cli_bad_sampling_rate_option(tmp_path):
    write_record(tmp_path / "src", "a", ecg())
    r = run("import", tmp_path / "src", "-o", tmp_path / "o.h5", "--sampling-rate", "250")
    assert r.exit_code == 2 and "100 or 500" in r.stderr


def test_library_errors_are_ecgscan_errors(tmp_path):
    with pytest.raises(EcgscanError, match="no such file or folder"):
        import_records(tmp_path / "none", tmp_path / "o.h5")
