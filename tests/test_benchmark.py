"""`ecgscan benchmark`: the baseline rows on the folds a checkpoint held out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app

pytestmark = pytest.mark.usefixtures("one_thread")

MINI = {"max_steps": 2, "batch_size": 8, "teacher_steps": 2, "teacher_batch": 8, "max_val": 16, "eval_every": 100,
        "save_every": 100, "log_every": 1, "augment": "light", "num_workers": 0, "model.text_model": "tiny"}
FAST = ["--bootstrap", "50", "--probe-epochs", "5", "-q"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from ecgscan_cli.synth import write_synth
    from ecgscan_cli.train import pretrain, resolve_config

    d = tmp_path_factory.mktemp("bench")
    signals = write_synth(d / "synth.h5", 100, seed=5)  # folds 1-10
    cfg = resolve_config("tiny", overrides=MINI)
    res = pretrain(signals, d / "run", cfg, device="cpu")
    return d, signals, res.best


def test_rows_on_held_out_fold(setup):
    d, signals, best = setup
    r = run("benchmark", best, signals, "-o", d / "b1", "-f", "json", *FAST)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    got = {(x["row"], x["task"]) for x in rows}
    for row in ("untrained", "signal", "ecgscan"):
        for task in ("probe 1%", "probe 10%", "probe 100%"):
            assert (row, task) in got
    assert ("ecgscan", "zero-shot") in got
    assert not any(x["row"] in ("imagenet", "image-to-signal") for x in rows)  # n/a, and asked for by name only
    results = json.loads((d / "b1" / "results.json").read_text())
    assert results["test_folds"] == [10]  # the fold pretraining held out
    assert "imagenet" in results["pending"] and "image-to-signal" not in results["pending"]
    n_test = {x["n_test"] for x in rows if x["task"].startswith("probe")}
    from ecgscan_cli.formats.signals import SignalsFile

    assert n_test == {int((np.asarray(SignalsFile(signals).folds) == 10).sum())}
    assert all(0 <= x["macro_auroc"] <= 100 for x in rows)
    table = (d / "b1" / "table.md").read_text()
    assert "| imagenet |" in table and "image-to-signal" not in table


def test_rows_match_probe_and_teacher(setup):
    """The table is the probe of the written embeddings; the signal row is the teacher on true signals."""
    import torch

    from ecgscan_cli.encoders import load_signal_encoder
    from ecgscan_cli.formats.embeddings import EmbeddingsFile
    from ecgscan_cli.formats.signals import SignalsFile
    from ecgscan_cli.probe import ProbeConfig, run_probe, splits_from_folds

    d, signals, best = setup
    out = d / "b2"
    r = run("benchmark", best, signals, "-o", out, "--rows", "untrained,signal", "--fractions", "1", "-f", "json",
            *FAST)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    files = [EmbeddingsFile(out / "untrained.h5"), EmbeddingsFile(out / "signal.h5")]
    splits = splits_from_folds(files[0].ids, files[0].folds, list(range(1, 9)), [9], [10])
    direct = run_probe(files, None, splits, ProbeConfig(fractions=(1.0,), epochs=5, bootstrap=50),
                       names=["untrained", "signal"])
    for res in direct:
        row = next(x for x in rows if x["row"] == res.encoder)
        assert row["macro_auroc"] == pytest.approx(100 * res.auroc, abs=1e-3)
    sf = SignalsFile(signals)
    teacher = load_signal_encoder(best.parent / "teacher")
    with torch.no_grad():
        want = teacher(torch.from_numpy(sf.signals([0, 1]))).numpy()
    np.testing.assert_allclose(files[1].embeddings[:2], want, rtol=1e-5, atol=1e-5)


def test_refuses_test_records_seen_in_pretraining(setup):
    d, signals, best = setup
    r = run("benchmark", best, signals, "-o", d / "b3", "--test-folds", "8", "--val-folds", "9",
            "--train-folds", "1-7", "--rows", "untrained", *FAST)
    assert r.exit_code == 2
    assert "were in the pretraining" in r.output and "--allow-overlap" in r.output
    assert not (d / "b3").exists() and not list(d.glob(".b3.partial-*"))
    r = run("benchmark", best, signals, "-o", d / "b3", "--test-folds", "8", "--val-folds", "9",
            "--train-folds", "1-7", "--rows", "ecgscan", "--no-zeroshot", "--allow-overlap", *FAST)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, message", [
    (["--labels", "rhythm"], "no label set rhythm"),
    (["--test-folds", "12"], "not in the signals file"),
    (["--rows", "ecgscan,bogus"], "unknown benchmark rows"),
    (["--features", "pixels"], "backbone or projected"),
])
def test_bad_input_one_line(setup, args, message):
    d, signals, best = setup
    r = run("benchmark", best, signals, "-o", d / "bad", *args, *FAST)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (d / "bad").exists()


def test_overwrite_only_replaces_a_benchmark_folder(setup):
    d, signals, best = setup
    precious = d / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    r = run("benchmark", best, signals, "-o", precious, "--overwrite", "--rows", "untrained", *FAST)
    assert r.exit_code == 2 and "not an ecgscan benchmark folder" in r.output
    assert (precious / "notes.txt").read_text() == "mine"


def test_zeroshot_from_backbone_equals_projected_pass(setup):
    """Zero-shot projects the stored backbone features with the checkpoint's head: same as encode_image."""
    d, signals, best = setup
    scores = {}
    for features in ("backbone", "projected"):
        r = run("benchmark", best, signals, "-o", d / f"z-{features}", "--rows", "ecgscan", "--features", features,
                "--fractions", "1", "-f", "json", *FAST)
        assert r.exit_code == 0, r.output
        scores[features] = next(x["macro_auroc"] for x in json.loads(r.stdout) if x["task"] == "zero-shot")
    assert scores["backbone"] == pytest.approx(scores["projected"], abs=1e-3)


def test_image_to_signal_row_digitises_every_record(setup, tmp_path):
    """The row is the teacher on signals read back from rendered pages by a TraceNet."""
    from ecgscan_cli.digitize.model import TraceNet, TraceNetConfig, save_tracenet

    d, signals, best = setup
    weights = tmp_path / "tiny.safetensors"
    save_tracenet(TraceNet(TraceNetConfig(widths=(4, 8))), weights)   # untrained: reads little, fast
    r = run("benchmark", best, signals, "-o", d / "b_i2s", "--rows", "signal,image-to-signal", "--fractions", "1",
            "--no-zeroshot", "--digitizer-weights", weights, "-f", "json", *FAST)
    assert r.exit_code == 0, r.output
    rows = {x["row"]: x for x in json.loads(r.stdout)}
    assert set(rows) == {"signal", "image-to-signal"}
    assert rows["image-to-signal"]["n_test"] == rows["signal"]["n_test"] > 0
    results = json.loads((d / "b_i2s" / "results.json").read_text())
    assert 0 <= results["timings_s"]["digitiser refused pages"] <= 100
    from ecgscan_cli.formats.embeddings import EmbeddingsFile

    a = EmbeddingsFile(d / "b_i2s" / "signal.h5").embeddings
    b = EmbeddingsFile(d / "b_i2s" / "image-to-signal.h5").embeddings
    assert a.shape == b.shape and not np.allclose(a, b)   # digitised signals are not the true ones


def test_image_to_signal_digitises_only_the_records_the_probes_read_on_worker_processes(setup, tmp_path):
    """Without fraction 1 the row digitises validation, test and the small training subsets
    alone; two worker processes give exactly what one process gives."""
    from ecgscan_cli.benchmark import embed_digitised_with_teacher
    from ecgscan_cli.digitize.model import TraceNet, TraceNetConfig, save_tracenet
    from ecgscan_cli.formats.embeddings import EmbeddingsFile
    from ecgscan_cli.imageio import open_source
    from ecgscan_cli.probe import RecordLabels, records_read, splits_from_folds

    d, signals, best = setup
    weights = tmp_path / "tiny.safetensors"
    save_tracenet(TraceNet(TraceNetConfig(widths=(4, 8))), weights)
    r = run("benchmark", best, signals, "-o", tmp_path / "b", "--rows", "image-to-signal", "--fractions", "0.2",
            "--no-zeroshot", "--digitizer-weights", weights, "-j", "2", "-f", "json", *FAST)
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["row"] == "image-to-signal" and row["n_test"] == 10
    source = open_source(signals)
    labels = RecordLabels.of_source(source)
    splits = splits_from_folds(source.ids, source.folds, range(1, 9), [9], [10])
    read = records_read(labels, list(labels.label_sets), splits, [0.2])
    got = EmbeddingsFile(tmp_path / "b" / "image-to-signal.h5")
    assert set(got.ids) == read and 20 < len(read) < 60 < len(source)
    assert json.loads((tmp_path / "b" / "results.json").read_text())["timings_s"]["digitised pages"] == len(read)
    one, _ = embed_digitised_with_teacher(best, signals, tmp_path / "one.h5", 64, "cpu", str(weights), only=read)
    ref = EmbeddingsFile(one)
    assert ref.ids == got.ids and np.array_equal(ref.embeddings, got.embeddings)


def test_image_to_signal_refuses_missing_weights_before_work(setup, tmp_path):
    d, signals, best = setup
    r = run("benchmark", best, signals, "-o", tmp_path / "x", "--rows", "image-to-signal",
            "--digitizer-weights", tmp_path / "none.safetensors", *FAST)
    assert r.exit_code == 2 and "digitiser weights not found" in r.output
    assert not (tmp_path / "x").exists()
