"""Reconstruction SNR metrics against hand-computed cases and an independent port of the
PhysioNet/CinC 2024 scorer; one SNR family shared by `reconstruct` and `snr-check`.

The port (``_port_*`` below) is written from the logic of physionetchallenges/evaluation-2024
(``evaluate_model.py`` and ``helper_code.py``): find the ``.hea`` files of the label folder,
load each label and output with ``wfdb.rdsamp``, reorder the output's channels to the
label's by stripped, case-folded name (zeros when unmatched, summed when repeated), cut or
zero-pad it to the label's length, NaN → 0, per channel ``10·log10(Σ label² / Σ noise²)``
(``+inf`` when the noise is 0), and ``np.nanmean`` over all (record, channel) values.
One deliberate difference: an output record without a header counts as "no signal" (all
zeros, the scorer's own branch for an output without signal files) where the script
would stop with ``FileNotFoundError``.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.formats import write_signals
from ecgscan_cli.leads import LEADS
from ecgscan_cli.snr import (ALIGNED, PHYSIONET2024, shift_samples, aligned_snr, challenge_mean, challenge_snr,
                             compare_signals, physionet2024_snr, reconstruction_snr, record_snr, resolve_metric)
from ecgscan_cli.synth import synthesize

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def rows_by_lead(stdout: str) -> dict:
    return {row["lead"]: row for row in json.loads(stdout)}


def write_record(folder, name, signal, names, fs=500, units="mV"):
    """A WFDB record (format 16, 1000 units per mV, NaN → WFDB's invalid sample)."""
    import wfdb

    signal = np.atleast_2d(np.asarray(signal, np.float64))
    digital = np.where(np.isnan(signal), -32768, np.round(np.nan_to_num(signal) * 1000)).astype(np.int16)
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wfdb.wrsamp(os.path.basename(path), fs=fs, units=[units] * len(names), sig_name=list(names),
                d_signal=digital.T, fmt=["16"] * len(names), adc_gain=[1000.0] * len(names),
                baseline=[0] * len(names), write_dir=os.path.dirname(path))


# ---------------------------------------------------------------- the port of the official scorer


def _port_find_records(folder):
    found = set()
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if os.path.splitext(f)[1] == ".hea":
                found.add(os.path.relpath(os.path.join(root, f), folder)[:-4])
    return sorted(found)


def _port_load_signals(record):
    import wfdb

    if not os.path.exists(record + ".hea"):
        return None, None
    lines = open(record + ".hea").read().split("\n")
    n_channels = int(lines[0].split(" ")[1])
    files = {line.split(" ")[0].strip() for line in lines[1:n_channels + 1] if not line.startswith("#")}
    if not files:
        return None, None
    return wfdb.rdsamp(record)


def _port_reorder(signal, names, wanted):
    if names == wanted and len(set(names)) == len(set(wanted)) == len(wanted):
        return signal
    names = [c.strip().casefold() for c in names]
    out = np.zeros((signal.shape[0], len(wanted)), dtype=signal.dtype)
    for i, w in enumerate(c.strip().casefold() for c in wanted):
        for j, n in enumerate(names):
            if n == w:
                out[:, i] += signal[:, j]
    return out


def _port_trim(signal, n):
    if signal.shape[0] == n:
        return signal
    if signal.shape[0] > n:
        return signal[:n, :]
    out = np.zeros((n, signal.shape[1]), dtype=signal.dtype)
    out[:signal.shape[0], :] = signal
    return out


def _port_compute_snr(label, output):
    label, output = np.asarray(label), np.asarray(output)
    label[np.isnan(label)] = 0
    output[np.isnan(output)] = 0
    noise = output - label
    x, y = np.sum(label ** 2), np.sum(noise ** 2)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(x / y) if y > 0 else float("inf")


def _port_score(values):
    values = np.array(list(values))
    return float("nan") if np.all(np.isnan(values)) else np.nanmean(values)


def port_evaluate(label_folder, output_folder):
    """The port: ``(mean score, {(record, channel): snr})``."""
    snr, completed = {}, 0
    for record in _port_find_records(label_folder):
        label, lf = _port_load_signals(os.path.join(label_folder, record))
        if label is None:
            continue
        output, of = _port_load_signals(os.path.join(output_folder, record))
        if output is not None:
            completed += 1
            assert lf["fs"] == of["fs"] and lf["units"] == of["units"]
            output = _port_trim(_port_reorder(output, of["sig_name"], lf["sig_name"]), lf["sig_len"])
            output[np.isnan(output)] = 0
        else:
            output = np.zeros_like(label)
        for j, channel in enumerate(lf["sig_name"]):
            snr[(record, channel)] = _port_compute_snr(label[:, j], output[:, j])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (_port_score(snr.values()) if completed else float("nan")), snr


def port_score_arrays(pairs):
    """The port's per-channel loop and mean on in-memory ``(label [L, T], output [L, T'] or None)``."""
    values = []
    for label, output in pairs:
        label = np.array(label, np.float64).T
        output = np.zeros_like(label) if output is None else _port_trim(np.array(output, np.float64).T, len(label))
        output[np.isnan(output)] = 0
        values += [_port_compute_snr(label[:, j].copy(), output[:, j].copy()) for j in range(label.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _port_score(values), values


# ---------------------------------------------------------------- hand-computed cases


def test_two_lead_toy_known_sums(tmp_path):
    label = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, -1.0]])
    output = np.array([[1.0, 2.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    # lead 1: Σx² = 30, Σ(y−x)² = 1; lead 2: Σx² = 2, Σ(y−x)² = 2
    expect = [10 * math.log10(30.0), 0.0]
    np.testing.assert_allclose(physionet2024_snr(label, output), expect, rtol=0, atol=1e-12)
    # the same as WFDB folders through `snr-check --metric physionet2024`
    write_record(tmp_path / "ref", "a", label, ["I", "II"])
    write_record(tmp_path / "out", "a", output, ["I", "II"])
    r = run("snr-check", tmp_path / "out", "--reference", tmp_path / "ref", "--metric", "physionet2024", "-f", "json")
    assert r.exit_code == 0, r.output
    rows = rows_by_lead(r.stdout)
    assert list(rows) == ["I", "II", "all"]
    assert abs(rows["I"]["mean_db"] - expect[0]) < 1e-9 and abs(rows["II"]["mean_db"]) < 1e-9
    assert abs(rows["all"]["mean_db"] - sum(expect) / 2) < 1e-9 and rows["all"]["n"] == 2


def test_nan_in_output_counts_as_zero_and_nan_in_label_too():
    label = np.array([[1.0, 1.0, 1.0, 1.0]])
    output = np.array([[1.0, np.nan, 1.0, 1.0]])
    assert physionet2024_snr(label, output)[0] == pytest.approx(10 * math.log10(4 / 1), abs=1e-12)
    # a NaN in the label is 0 there as well: Σx² = 1 + 4 + 4 = 9, Σ(y−x)² = 25
    label = np.array([[1.0, np.nan, 2.0, 2.0]])
    output = np.array([[1.0, 5.0, 2.0, 2.0]])
    assert physionet2024_snr(label, output)[0] == pytest.approx(10 * math.log10(9 / 25), abs=1e-12)
    assert challenge_snr(label[0], output[0]) == pytest.approx(10 * math.log10(9 / 25), abs=1e-12)
    assert np.isnan(label[0, 1])    # the caller's arrays are left alone
    # the aligned metric leaves the label's NaN sample out instead: exact match on the rest
    assert aligned_snr(label, output, max_shift_s=0, max_offset_mv=0)[0] == math.inf


def test_missing_record_is_scored_against_zeros():
    label = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    got = physionet2024_snr(label, None)
    assert got[0] == 0.0                  # Σ(0 − x)² = Σx²: exactly 0 dB
    assert got[1] == math.inf             # all-zero label, all-zero output: no noise, +inf


def test_perfect_lead_is_inf_and_kept_in_the_mean():
    label = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 1.0]])
    output = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    got = physionet2024_snr(label, output)
    assert got[0] == math.inf and got[1] == pytest.approx(10 * math.log10(2.0), abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.nanmean(np.array([math.inf, 3.0])) == math.inf
        assert math.isnan(np.nanmean(np.array([math.inf, -math.inf])))
    assert challenge_mean(got) == math.inf
    assert challenge_mean([math.inf, 3.0, math.nan]) == math.inf
    assert math.isnan(challenge_mean([math.nan, math.nan])) and math.isnan(challenge_mean([]))


def test_all_zero_label_with_output_is_minus_inf():
    label = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    output = np.array([[0.0, 0.1, 0.0], [1.0, 2.0, 2.0]])
    got = physionet2024_snr(label, output)
    assert got[0] == -math.inf and got[1] == math.inf
    assert math.isnan(challenge_mean(got))     # +inf and −inf: np.nanmean gives NaN, so does the scorer


def test_short_output_is_zero_padded_and_long_output_trimmed():
    label = np.array([[1.0, 2.0, 3.0, 4.0]])
    # [1, 2] → [1, 2, 0, 0]: Σ(y−x)² = 9 + 16 = 25
    assert physionet2024_snr(label, np.array([[1.0, 2.0]]))[0] == pytest.approx(10 * math.log10(30 / 25), abs=1e-12)
    # [1, 2, 3, 3, 9, 9] → [1, 2, 3, 3]: Σ(y−x)² = 1
    long = np.array([[1.0, 2.0, 3.0, 3.0, 9.0, 9.0]])
    assert physionet2024_snr(label, long)[0] == pytest.approx(10 * math.log10(30.0), abs=1e-12)


def test_channels_matched_by_name_like_the_scorer():
    label = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    names = ["I", "II"]
    swapped = label[::-1].copy()
    # stripped and case-folded names put the channels back
    assert (physionet2024_snr(label, swapped, ref_names=names, est_names=[" ii", "I "]) == math.inf).all()
    # an unmatched channel is zeros (0 dB); a repeated name is summed
    got = physionet2024_snr(label, swapped, ref_names=names, est_names=["II", "V1"])
    assert got[0] == 0.0 and got[1] == math.inf
    halves = np.stack([label[0] / 2, label[0] / 2, label[1]])
    assert (physionet2024_snr(label, halves, ref_names=names, est_names=["I", "i", "II"]) == math.inf).all()


def test_aligned_recovers_a_shift_of_k_samples_exactly():
    k, T = 37, 5000
    x = synthesize(1, seed=3).signals[0].astype(np.float64)
    noise = np.random.default_rng(1).normal(0, 0.01, x.shape)
    est = np.stack([shift_samples(lead, -k) for lead in x + noise]) + 0.3        # k samples early, 0.3 mV high
    got = record_snr(x, est, 500.0)                                         # the default metric: aligned
    # hand: the overlap is samples k..T−1; the best offset removes the noise's mean there
    n = noise[:, k:]
    resid = n - n.mean(axis=1, keepdims=True)
    expect = 10 * np.log10((x[:, k:] ** 2).sum(1) / (resid ** 2).sum(1)) * (T - k) / T
    np.testing.assert_allclose(got, expect, rtol=0, atol=1e-9)
    # without alignment the same estimate is useless, and the official metric does not align
    assert (record_snr(x, est, 500.0, PHYSIONET2024) < 5).all()
    assert (aligned_snr(x, est, max_shift_s=0, max_offset_mv=0) < 5).all()


# ---------------------------------------------------------------- the port, on random data


def _random_folders(tmp_path, rng):
    """Label and output WFDB folders exercising every rule: NaN on both sides, a missing
    output, a header without signal file, shuffled/renamed channels, other lengths, a
    perfect and an all-zero lead, a subfolder."""
    names = list(LEADS)
    ref, out = tmp_path / "labels", tmp_path / "outputs"
    ref.mkdir()
    out.mkdir()
    records = ["r0", "r1", "r2", "sub/r3", "r4", "r5"]
    for k, rec in enumerate(records):
        T = 5000 if k % 2 == 0 else 2500
        x = np.cumsum(rng.normal(0, 0.02, (12, T)), axis=1)
        x[rng.random(x.shape) < 0.05] = np.nan                        # NaN in the label
        x[:, : T // 4][rng.random(12) < 0.5] = np.nan                  # leads shown only in part
        if rec == "r4":
            x[5] = 0.0                                                  # an all-zero label lead
        write_record(ref, rec, x, names)
        if rec == "r2":
            continue                                                    # no output at all
        y = np.nan_to_num(x) + rng.normal(0, 0.05, x.shape)
        y[rng.random(y.shape) < 0.1] = np.nan                          # NaN in the output
        if rec == "r1":
            y = y[:, : T - 300]                                         # short: zero padded
        if rec == "sub/r3":
            y = np.concatenate([y, rng.normal(0, 1, (12, 200))], 1)    # long: trimmed
        if rec == "r4":
            y[0] = np.nan_to_num(x[0])                                  # a perfect lead (+inf)
        out_names = names
        if rec == "r5":
            order = rng.permutation(12)
            y, out_names = y[order], [names[i].upper() if i % 2 else names[i].lower() for i in order]
        write_record(out, rec, y, out_names)
    # a reference header with no signal file: the scorer does not score it
    (ref / "nosig.hea").write_text("nosig 0 500 5000\n")
    return ref, out


def test_physionet2024_matches_the_port_on_wfdb_folders(tmp_path):
    ref, out = _random_folders(tmp_path, np.random.default_rng(7))
    official, values = port_evaluate(str(ref), str(out))
    res = compare_signals(out, ref, metric=PHYSIONET2024)
    assert res.metric == PHYSIONET2024 and res.no_signal_ids == ["nosig"] and res.missing_ids == ["r2"]
    assert res.ids == ["r0", "r1", "r2", "r4", "r5", "sub/r3"]
    ours = {(rid, lead): res.per_record[i, j] for i, rid in enumerate(res.ids) for j, lead in enumerate(res.leads)}
    assert set(ours) == set(values)
    for key, v in values.items():
        assert ours[key] == pytest.approx(v, abs=1e-9, rel=0), key
    assert values[("r4", "I")] == math.inf and values[("r4", "aVF")] == -math.inf and values[("r2", "II")] == 0.0
    # r4 holds +inf and −inf, so the scorer's mean is NaN, and so is ours
    all_row = res.summary[-1]
    assert all_row["lead"] == "all" and math.isnan(all_row["mean_db"]) and math.isnan(official)
    # without r4 the mean is finite: the same number to 1e-9
    (ref / "r4.hea").unlink()
    official, _ = port_evaluate(str(ref), str(out))
    res = compare_signals(out, ref, metric=PHYSIONET2024)
    assert math.isfinite(official)
    assert abs(res.summary[-1]["mean_db"] - official) < 1e-9
    r = run("snr-check", out, "--reference", ref, "--metric", "physionet2024", "-f", "json")
    assert r.exit_code == 0, r.output
    assert abs(rows_by_lead(r.stdout)["all"]["mean_db"] - official) < 1e-9
    assert "absent" in r.stderr and "scored against zeros" in r.stderr and "no signal file" in r.stderr


def test_physionet2024_matches_the_port_on_signals_files(tmp_path):
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(0, 0.02, (5, 12, 5000)), axis=2).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    y = np.nan_to_num(x) + rng.normal(0, 0.05, x.shape).astype(np.float32)
    y[rng.random(y.shape) < 0.1] = np.nan
    ids = [f"e{i}" for i in range(5)]
    write_signals(tmp_path / "ref.h5", x, ids)
    write_signals(tmp_path / "est.h5", y[:4], ids[:4])                  # e4 missing: zeros
    from ecgscan_cli.formats.signals import SignalsFile

    a, b = SignalsFile(tmp_path / "ref.h5"), SignalsFile(tmp_path / "est.h5")
    official, values = port_score_arrays([(a.signal(i), b.signal(i) if i < 4 else None) for i in range(5)])
    res = compare_signals(tmp_path / "est.h5", tmp_path / "ref.h5", metric=PHYSIONET2024)
    np.testing.assert_allclose(res.per_record.ravel(), values, rtol=0, atol=1e-9)
    assert abs(res.summary[-1]["mean_db"] - official) < 1e-9
    assert (res.per_record[4] == 0).all()
    # the older spelling `--missing zero` is this metric
    r = run("snr-check", tmp_path / "est.h5", "--reference", tmp_path / "ref.h5", "--missing", "zero", "-f", "json")
    assert r.exit_code == 0, r.output
    assert abs(rows_by_lead(r.stdout)["all"]["mean_db"] - official) < 1e-9
    np.testing.assert_allclose(reconstruction_snr(a.signal(0), b.signal(0), missing="zero"), values[:12], atol=1e-9)


# ---------------------------------------------------------------- options and their mapping


def test_metric_options_and_their_older_spellings(tmp_path):
    assert resolve_metric() == ALIGNED
    assert resolve_metric(align=True) == ALIGNED and resolve_metric(missing="scale") == ALIGNED
    assert resolve_metric(missing="zero") == PHYSIONET2024
    ref = synthesize(3, seed=2)
    write_signals(tmp_path / "ref.h5", ref.signals, ref.ids)
    est = np.stack([np.stack([shift_samples(lead, 25) for lead in s]) for s in ref.signals.astype(np.float64)])
    est = np.nan_to_num(est + np.random.default_rng(0).normal(0, 0.02, est.shape)).astype(np.float32)
    write_signals(tmp_path / "est.h5", est, ref.ids)
    base = ["snr-check", tmp_path / "est.h5", "--reference", tmp_path / "ref.h5", "-f", "json"]
    default = rows_by_lead(run(*base).stdout)["all"]["mean_db"]
    assert rows_by_lead(run(*base, "--metric", "aligned").stdout)["all"]["mean_db"] == default
    assert rows_by_lead(run(*base, "--align").stdout)["all"]["mean_db"] == default
    official = rows_by_lead(run(*base, "--metric", "physionet2024").stdout)["all"]["mean_db"]
    unaligned = rows_by_lead(run(*base, "--max-shift", "0", "--max-offset", "0").stdout)["all"]["mean_db"]
    assert default > official + 10 and default > unaligned + 10    # a 50 ms shift ruins the unaligned scores
    for extra, message in ((["--align", "--metric", "physionet2024"], "does not align"),
                           (["--missing", "zero", "--metric", "aligned"], "contradicts"),
                           (["--metric", "physionet2024", "--max-shift", "0.2"], "does not align")):
        r = run(*base, *extra)
        assert r.exit_code == 2 and message in r.stderr, (extra, r.output)
    r = run("snr-check", tmp_path / "ref.h5", "--metric", "physionet2024")
    assert r.exit_code == 2 and "needs --reference" in r.stderr


# ---------------------------------------------------------------- one SNR family


def test_reconstruct_log_line_and_snr_check_agree(tiny_checkpoint, random_signals_file, tmp_path, one_thread):
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.reconstruct import reconstruct_to_file

    out = tmp_path / "recon.h5"
    _, _, summary = reconstruct_to_file(tiny_checkpoint, random_signals_file, out, device="cpu")
    per_lead = np.asarray(summary["lead_snr_db"])
    logged = float(np.nanmean(per_lead))            # what `reconstruct` logs as "mean SNR vs ground truth"
    r = run("snr-check", out, "--reference", random_signals_file, "-f", "json")
    assert r.exit_code == 0, r.output
    rows = rows_by_lead(r.stdout)
    # the same function on the same records; what is left is the file's 1 µV rounding
    np.testing.assert_allclose(per_lead, [rows[lead]["mean_db"] for lead in LEADS], rtol=0, atol=1e-3)
    assert abs(logged - rows["all"]["mean_db"]) < 1e-3
    # and the former private formula of reconstruct (no alignment, no coverage) would not agree
    est, ref = SignalsFile(out), SignalsFile(random_signals_file)
    old = [10 * np.log10((ref.signal(i).astype(np.float64) ** 2).sum(1)
                         / ((ref.signal(i).astype(np.float64) - est.signal(i)) ** 2).sum(1)) for i in range(len(ref))]
    assert abs(float(np.mean(old)) - logged) > 0.01


def test_shown_only_scores_what_a_printed_page_shows(tmp_path):
    """An estimate exact on the samples a 3x4 page shows (NaN elsewhere, as the digitiser
    writes) is perfect under --shown-only and loses 3/4 of each 2.5-s lead's coverage without."""
    from ecgscan_cli.render.layout import as_shown

    x = synthesize(2, seed=3).signals.astype(np.float64)
    est = np.stack([as_shown(s) for s in x])
    est_noisy = np.where(np.isfinite(est), est + 0.01, np.nan)
    ids = ["a", "b"]
    write_signals(tmp_path / "ref.h5", x.astype(np.float32), ids, ["", ""])
    write_signals(tmp_path / "est.h5", est_noisy.astype(np.float32), ids, ["", ""])
    shown = compare_signals(tmp_path / "est.h5", tmp_path / "ref.h5", metric=ALIGNED, shown_only=True,
                            max_shift_s=0, max_offset_mv=0)
    full = compare_signals(tmp_path / "est.h5", tmp_path / "ref.h5", metric=ALIGNED, max_shift_s=0,
                           max_offset_mv=0)
    i, ii = LEADS.index("I"), LEADS.index("II")
    # by hand: SNR of a 0.01 mV offset over the shown 2.5 s of lead I (1251 samples of record a)
    xa = x[0, i, :1251]
    want = 10 * np.log10(np.sum(xa ** 2) / (1251 * 0.01 ** 2))
    assert shown.per_record[0, i] == pytest.approx(want, abs=0.02)      # float32 storage
    assert full.per_record[0, i] == pytest.approx(want * 1251 / 5000, abs=0.02)
    assert full.per_record[0, ii] == pytest.approx(shown.per_record[0, ii], abs=1e-6)  # rhythm strip: 10 s
    r = run("snr-check", tmp_path / "est.h5", "--reference", tmp_path / "ref.h5", "--shown-only", "-f", "json")
    assert r.exit_code == 0, r.output
    r = run("snr-check", tmp_path / "est.h5", "--shown-only")
    assert r.exit_code == 2 and "--shown-only needs --reference" in r.output
