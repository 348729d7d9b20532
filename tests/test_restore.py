"""The restorer of the digitiser's readings and `ecgscan train-restorer`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ecgscan_cli.errors import EcgscanError

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl-sample"


def test_shown_runs_are_the_finite_stretches_long_enough():
    from ecgscan_cli.digitize.restore import shown_runs

    x = np.full(100, np.nan)
    x[5:40] = 1.0
    x[41:45] = 2.0            # 4 samples: too short to restore
    x[60:100] = 3.0
    assert shown_runs(x, 16) == [slice(5, 40), slice(60, 100)]
    assert shown_runs(x, 1) == [slice(5, 40), slice(41, 45), slice(60, 100)]
    assert shown_runs(np.full(10, np.nan)) == []


def test_an_untrained_restorer_returns_the_reading_and_panels_stay_apart():
    from ecgscan_cli.digitize.restore import Restorer, restore_reading

    rng = np.random.default_rng(0)
    reading = np.full((12, 5000), np.nan, np.float32)
    reading[0, :1250] = rng.normal(0, 0.3, 1250)
    reading[1] = rng.normal(0, 0.3, 5000)
    net = Restorer().eval()
    same = restore_reading(reading, net, 500.0)
    assert same.dtype == np.float32
    np.testing.assert_allclose(same, reading, atol=1e-6)       # the last layer starts at zero

    # trained weights change the reading, but a panel's output never depends on another panel
    import torch

    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a = restore_reading(reading, net, 500.0)
    assert np.isnan(a[2:]).all() and np.isnan(a[0, 1250:]).all()
    assert np.abs(a[0, :1250] - reading[0, :1250]).max() > 1e-3
    other = reading.copy()
    other[1, 2000:] += 1.0
    b = restore_reading(other, net, 500.0)
    np.testing.assert_array_equal(a[0], b[0])
    # a lead turned over is restored to the same reading turned over (the restorer made odd)
    np.testing.assert_allclose(restore_reading(-reading, net, 500.0), -a, atol=1e-6)
    one = torch.as_tensor(reading[0, :1250], dtype=torch.float32)[None]
    with torch.no_grad():
        plain = net(one)[0].numpy()
    odd = 0.5 * (plain - net(-one)[0].detach().numpy())
    np.testing.assert_allclose(a[0, :1250], odd, atol=1e-5)
    assert np.abs(plain - odd).max() > 1e-4          # not odd by itself: the mean is what makes it so
    with pytest.raises(EcgscanError, match="250 Hz"):
        restore_reading(reading, net, 250.0)


def test_restorer_round_trip_and_refusals(tmp_path):
    import torch

    from ecgscan_cli.digitize.model import TraceNet, save_tracenet
    from ecgscan_cli.digitize.restore import Restorer, RestorerConfig, load_restorer, save_restorer

    torch.manual_seed(0)
    net = Restorer(RestorerConfig(width=8, dilations=(1, 3)))
    with torch.no_grad():
        net.out.weight.normal_()
    save_restorer(net, tmp_path / "r.safetensors", {"note": "test"})
    back = load_restorer(tmp_path / "r.safetensors")
    assert back.config == net.config
    x = torch.randn(2, 300)
    torch.testing.assert_close(back(x), net.eval()(x))
    (tmp_path / "run").mkdir()
    save_restorer(net, tmp_path / "run" / "restorer.safetensors")
    assert load_restorer(tmp_path / "run").config == net.config      # a run folder names its weights
    save_tracenet(TraceNet(), tmp_path / "t.safetensors")
    with pytest.raises(EcgscanError, match="not ecgscan restorer weights"):
        load_restorer(tmp_path / "t.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(EcgscanError, match="not a safetensors"):
        load_restorer(tmp_path / "junk.safetensors")
    with pytest.raises(EcgscanError, match="not found"):
        load_restorer(tmp_path / "none.safetensors")


def test_a_restorer_told_the_page_starts_as_the_one_it_grew_from_and_then_depends_on_it():
    import torch

    from ecgscan_cli.digitize.restore import Restorer, grown, page_features, restore_reading

    torch.manual_seed(0)
    plain = Restorer().eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    told = grown(plain).eval()
    assert told.config.page_features == 2
    rng = np.random.default_rng(0)
    reading = np.full((12, 5000), np.nan, np.float32)
    reading[0, :1250] = np.cumsum(rng.normal(0, 0.05, 1250))
    default_page = page_features(0.3, 200 / 25.4)        # a 0.3 mm line at 200 dpi: both features 0
    np.testing.assert_allclose(default_page, [np.log(0.3) + 1, 0.0], atol=1e-6)
    np.testing.assert_array_equal(page_features(None, 200 / 25.4), default_page)     # none measured
    np.testing.assert_array_equal(page_features(float("nan"), 200 / 25.4), default_page)
    # beyond what training pages span, the nearest value they span (no linear extrapolation)
    np.testing.assert_array_equal(page_features(5.0, 30.0), page_features(1.6, 9.0))
    np.testing.assert_array_equal(page_features(0.01, 0.5), page_features(0.15, 1.6))
    np.testing.assert_allclose(restore_reading(reading, told, 500.0, default_page),
                               restore_reading(reading, plain, 500.0), atol=1e-6)
    with pytest.raises(EcgscanError, match="page's features"):
        restore_reading(reading, told, 500.0)
    with torch.no_grad():
        for lin in told.page:
            lin.weight.normal_(0, 0.3)
    thin, thick = (restore_reading(reading, told, 500.0, page_features(w, 300 / 25.4)) for w in (0.2, 0.9))
    assert np.abs(thin[0, :1250] - thick[0, :1250]).max() > 1e-3
    # still odd, and still one stretch at a time
    np.testing.assert_allclose(restore_reading(-reading, told, 500.0, page_features(0.9, 300 / 25.4)), -thick,
                               atol=1e-6)
    assert np.isnan(thick[1:]).all() and np.isnan(thick[0, 1250:]).all()


def test_the_loss_is_the_benchmarks_snr_and_stretches_are_aligned_as_it_aligns():
    import torch

    from ecgscan_cli.digitize.restore_train import SnrDbLoss, aligned_stretches
    from ecgscan_cli.snr import reconstruction_snr, shift_samples

    rng = np.random.default_rng(1)
    truth = np.full((1, 12, 5000), np.nan)
    truth[0, :, :1250] = np.cumsum(rng.normal(0, 0.05, (12, 1250)), axis=1)
    noise = rng.normal(0, 0.02, truth.shape)
    # read 7 samples late and 0.3 mV high: the benchmark forgives both, so must the stretches
    reading = np.stack([shift_samples(lead, 7) for lead in (truth + noise)[0]])[None] + 0.3
    pairs = aligned_stretches(truth, reading)
    assert len(pairs) == 12 and all(len(y) == 1250 and f.shape == (0,) for y, _, f in pairs)
    y, x, _ = pairs[0]
    np.testing.assert_allclose(y, x + noise[0, 0, :1250], atol=3e-3)    # less the noise's mean
    # −loss of one stretch is the benchmark's SNR of that lead
    want = reconstruction_snr(truth[0], reading[0], 500.0, align=True)[0]
    got = -SnrDbLoss()(torch.tensor(y[None], dtype=torch.float64), torch.tensor(x[None], dtype=torch.float64))
    assert abs(float(got) - want) < 0.01


def _sample_h5(tmp_path_factory):
    if not SAMPLE.is_dir():
        pytest.skip("PTB-XL sample not available")
    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app

    out = tmp_path_factory.mktemp("ptbxl") / "sample500.h5"
    r = CliRunner().invoke(app, ["import", str(SAMPLE), "-r", "500", "-o", str(out), "-q", "--workers", "1"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def sample500(tmp_path_factory):
    return _sample_h5(tmp_path_factory)


@pytest.mark.slow
def test_the_shipped_restorer_reads_held_out_records_better(sample500, one_thread):
    """TraceNet's readings of fold-8 records (neither network saw fold 8) at 200 dpi, the
    benchmark's pages: the shipped restorer raises the aligned dB of every `paper` and
    `heavy` page, and costs a clean page (read to ~26 dB) less than 2 dB."""
    from ecgscan_cli.digitize.evaluate import render_condition, score_page
    from ecgscan_cli.digitize.image import digitize_image, load_digitizer
    from ecgscan_cli.digitize.restore import load_restorer, page_features, restore_reading
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.render.layout import as_shown

    net, restorer = load_digitizer(), load_restorer()
    sf = SignalsFile(sample500)
    rows = [i for i in range(len(sf)) if int(sf.folds[i]) == 8][:3]
    from ecgscan_cli.digitize.restore import already_sharp

    gains, sharp = {}, {}
    for condition in ("paper", "heavy", "clean"):
        gains[condition], sharp[condition] = [], []
        for k, i in enumerate(rows):
            full = np.nan_to_num(sf.signal(i).astype(np.float64))
            ref = as_shown(full, fs=sf.fs)
            read = digitize_image(render_condition(full, sf.fs, condition, k), net)
            reading = read.signal
            restored = restore_reading(reading, restorer, 500.0, page_features(read.line_mm, read.px_per_mm[1]))
            sharp[condition].append(already_sharp(reading))
            gains[condition].append(score_page(ref, restored, sf.fs)[0] - score_page(ref, reading, sf.fs)[0])
    assert min(gains["paper"]) > 0.1 and np.mean(gains["paper"]) > 0.4, gains
    assert min(gains["heavy"]) > 0.1 and np.mean(gains["heavy"]) > 0.3, gains
    assert min(gains["clean"]) > -2.0, gains
    # reconstruct's gate: sharp readings are left as read, so a clean page loses nothing
    # (the first of these three reads a little blurred and gains)
    assert sum(sharp["clean"]) >= 2 and not any(sharp["heavy"]), sharp
    assert min(0.0 if s else g for g, s in zip(gains["clean"], sharp["clean"])) > -0.1, (gains, sharp)


def test_already_sharp_is_a_reading_that_keeps_the_limb_lead_relations():
    from ecgscan_cli.digitize.restore import SHARP_RESIDUAL, already_sharp
    from ecgscan_cli.render.layout import as_shown
    from ecgscan_cli.synth import synthesize

    exact = as_shown(synthesize(1, seed=2).signals[0].astype(np.float64))
    assert already_sharp(exact)
    rng = np.random.default_rng(0)
    noisy = exact + rng.normal(0, 0.2 * np.nanstd(exact), exact.shape)      # each lead its own error
    assert not already_sharp(noisy) and SHARP_RESIDUAL < 0.01
    assert not already_sharp(np.full((12, 5000), np.nan))                   # nothing to check: restore


@pytest.fixture
def synth_signals_file(tmp_path):
    """Six synthetic 12-lead ECGs at 500 Hz in folds 1-6 (pages the digitiser reads)."""
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.synth import synthesize

    b = synthesize(6, seed=3)
    return write_signals(tmp_path / "synth.h5", b.signals, b.ids, b.reports, folds=[1, 2, 3, 4, 5, 6])


def _train(args, tmp_path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ecgscan_cli", "train-restorer", *map(str, args), "--threads", "1",
                           "-j", "1", "-q"], capture_output=True, text=True, cwd=tmp_path)


@pytest.mark.slow
def test_train_restorer_reads_pages_trains_resumes_and_rereads_the_same_pages(synth_signals_file, tmp_path):
    run = tmp_path / "run"
    base = [synth_signals_file, "-o", run, "--pages", 3, "--val-pages", 1, "--train-folds", "1-4",
            "--val-folds", "5", "--batch-size", 2, "--length", 256, "--eval-every", 2, "--mix", "none=1,paper=1",
            "--dpi", "90-110"]
    r = _train(base + ["--steps", 3], tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["steps"] == 3 and summary["pages"] >= 1 and summary["stopped_by"] == "steps"
    chunk = np.load(run / "readings" / "train-0000.npz")
    assert chunk["signal"].shape[1:] == (12, 5000) and len(chunk["page"]) + int(chunk["refused"]) == 3
    # each page keeps what the restorer is told of it: its line width and the px/mm of the
    # maps read (a 90-110 dpi page, read at TraceNet's working size or at its own)
    ppm = chunk["features"][:, 1]
    assert chunk["features"].shape == (len(chunk["page"]), 2) and np.isfinite(chunk["features"]).all()
    assert np.all((ppm > np.log(75 / 200)) & (ppm < np.log(115 / 200))), chunk["features"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 0 and np.isfinite(metrics[0]["val_aligned_db"])   # the reading as read
    # the weights kept never validate worse than no restorer
    assert summary["best_val_db"] >= metrics[0]["val_aligned_db"]
    from ecgscan_cli.digitize.restore import load_restorer
    from ecgscan_cli.digitize.model import tracenet_provenance

    assert load_restorer(run).config.page_features == 2
    prov = tracenet_provenance(run / "restorer.safetensors")
    assert prov["trained_by"] == "ecgscan train-restorer" and prov["train_folds"] == [1, 2, 3, 4]
    assert prov["read_by"]["weights"] == "shipped"

    # a trained run keeps its width
    r = _train([synth_signals_file, "-o", run, "--resume", "--steps", 5, "--width", 8], tmp_path)
    assert r.returncode != 0 and "cannot change" in r.stderr and r.stderr.strip().count("\n") == 0
    # resume: training goes on from step 3; a readings chunk lost is read again, page for page
    (run / "readings" / "train-0000.npz").unlink()
    r = _train([synth_signals_file, "-o", run, "--resume", "--steps", 5], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 5
    again = np.load(run / "readings" / "train-0000.npz")
    for key in ("page", "signal", "reading", "preset", "features"):
        np.testing.assert_array_equal(again[key], chunk[key])


def test_train_restorer_from_the_shipped_restorer_grows_it_and_starts_where_it_reads(synth_signals_file, tmp_path):
    from ecgscan_cli.digitize.model import tracenet_provenance
    from ecgscan_cli.digitize.restore import load_restorer, shipped_restorer

    run = tmp_path / "run"
    r = _train([synth_signals_file, "-o", run, "--pages", 2, "--val-pages", 1, "--train-folds", "1-4",
                "--val-folds", "5", "--batch-size", 2, "--length", 256, "--eval-every", 1, "--mix", "paper=1",
                "--dpi", "90-110", "--steps", 1, "--init", "shipped", "--lr", "1e-7"], tmp_path)
    assert r.returncode == 0, r.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    net = load_restorer(run / "last")
    assert net.config.page_features == 2 and net.config.width == load_restorer().config.width
    # grown from the shipped weights: their convolutions, and a step at a tiny rate keeps
    # the validation where it began
    shipped = load_restorer(shipped_restorer())
    import torch

    assert torch.allclose(net.inp.weight, shipped.inp.weight, atol=1e-5)
    vals = [m["val_aligned_db"] for m in metrics if "val_aligned_db" in m]
    assert len(vals) == 2 and abs(vals[1] - vals[0]) < 0.01, vals
    assert tracenet_provenance(run / "restorer.safetensors")["init"]["weights"] == "shipped"


def test_train_restorer_refusals_are_one_line_and_leave_nothing(random_signals_file, tmp_path):
    from ecgscan_cli.formats import write_signals

    from ecgscan_cli.digitize.image import shipped_weights

    tracenet = shipped_weights()          # a TraceNet file given as the restorer to start from
    slow = tmp_path / "100hz.h5"
    write_signals(slow, np.zeros((2, 12, 1000), np.float32), ["a", "b"], folds=[1, 7], fs=100.0)
    cases = [([slow, "-o", tmp_path / "r"], "500 Hz"),
             ([random_signals_file, "-o", tmp_path / "r", "--mix", "paper=1,glossy=1"], "glossy"),
             ([random_signals_file, "-o", tmp_path / "r", "--train-folds", "1-5", "--val-folds", "5"], "overlap"),
             ([random_signals_file, "-o", tmp_path / "r", "--dpi", "5-900"], "dpi range"),
             ([random_signals_file, "-o", tmp_path / "r", "--init", tmp_path / "none.safetensors"],
              "no restorer weights"),
             ([random_signals_file, "-o", tmp_path / "r", "--init", "shipped", "--width", 8], "keeps its own width"),
             ([random_signals_file, "-o", tmp_path / "r", "--init", tracenet], "not ecgscan restorer weights"),
             ([random_signals_file, "-o", tmp_path / "r", "--resume"], "run.json")]
    for args, words in cases:
        r = _train(args, tmp_path)
        assert r.returncode != 0 and words in r.stderr, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
        assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ctrl_c_while_reading_pages_keeps_the_chunks_written_and_resume_finishes(synth_signals_file, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "ecgscan_cli", "train-restorer", str(synth_signals_file), "-o", str(run),
            "--pages", "32", "--val-pages", "0", "--train-folds", "1-4", "--val-folds", "5", "--steps", "2",
            "--batch-size", "2", "--length", "256", "--mix", "none", "--dpi", "60-70", "-j", "2", "-q"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list((run / "readings").glob("train-*.npz")) and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert p.poll() is None, "the run finished before it could be interrupted"
        os.killpg(p.pid, signal.SIGINT)       # what a terminal does: the whole foreground group
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert (p.returncode, err) == (130, "ecgscan: interrupted\n")
    chunks = sorted((run / "readings").iterdir())
    assert chunks and all(c.name.startswith("train-") and c.suffix == ".npz" for c in chunks)   # no partials
    for c in chunks:
        np.load(c)["reading"]
    r = _train([synth_signals_file, "-o", run, "--resume"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list((run / "readings").glob("train-*.npz"))) == 2 and json.loads(r.stdout)["steps"] == 2


def test_reconstruct_restores_by_default_and_an_untrained_restorer_changes_nothing(tmp_path, one_thread):
    """`reconstruct` runs the shipped restorer; `--restorer` with an untrained one (its last
    layer zero) gives exactly `--no-restore`'s output; contradictions are one line."""
    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app
    from ecgscan_cli.digitize.restore import Restorer, save_restorer
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.synth import synthesize

    run = CliRunner().invoke
    ref = synthesize(1, seed=5)
    write_signals(tmp_path / "truth.h5", ref.signals, ref.ids)
    # a page as a scan shows it (a clean render reads sharp enough to be left as read)
    assert run(app, ["render", str(tmp_path / "truth.h5"), "-o", f"{tmp_path}/pages/", "--augment", "paper",
                     "-q"]).exit_code == 0
    save_restorer(Restorer(), tmp_path / "identity.safetensors")
    outs = {}
    for name, extra in (("default", []), ("raw", ["--no-restore"]),
                        ("identity", ["--restorer", str(tmp_path / "identity.safetensors")])):
        r = run(app, ["reconstruct", str(tmp_path / "pages"), "-o", str(tmp_path / f"{name}.h5"), "--quick", "-q",
                      *extra])
        assert r.exit_code == 0, r.output
        outs[name] = SignalsFile(tmp_path / f"{name}.h5").signal(0)
    np.testing.assert_array_equal(outs["identity"], outs["raw"])
    shown = np.isfinite(outs["raw"])
    assert np.array_equal(np.isfinite(outs["default"]), shown)
    assert np.abs(outs["default"][shown] - outs["raw"][shown]).max() > 0.01
    for extra, words in ((["--no-restore", "--restorer", str(tmp_path / "identity.safetensors")], "--no-restore"),
                         (["--restorer", str(tmp_path / "missing.safetensors")], "not found"),
                         (["--method", "classical", "--restorer", str(tmp_path / "identity.safetensors")], "digitizer")):
        r = run(app, ["reconstruct", str(tmp_path / "pages"), "-o", str(tmp_path / "x.h5"), *extra])
        assert r.exit_code != 0 and words in r.output and "Traceback" not in r.output, r.output
        assert not (tmp_path / "x.h5").exists()
