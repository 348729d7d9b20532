"""Linear probing: protocol (subsets, selection on validation), AUROC, bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.embeddings import EmbeddingsFile, write_embeddings
from ecgscan_cli.metrics import auroc_per_class, bootstrap_macro_auroc
from ecgscan_cli.probe import (
    ProbeConfig, parse_folds, run_probe, splits_from_file, splits_from_folds, training_subset,
)

runner = CliRunner()
CLASSES = ["A", "B", "C", "D"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def make_data(n=500, d=24, seed=0, separable=True):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(np.uint8)
    if separable:
        x = y @ rng.normal(size=(len(CLASSES), d)) * 1.5 + rng.normal(size=(n, d)) * 0.5
    else:
        x = rng.normal(size=(n, d))
    folds = np.tile(np.arange(1, 11), n // 10 + 1)[:n]
    ids = [f"rec{i:04d}" for i in range(n)]
    return x.astype(np.float32), y, folds, ids


@pytest.fixture(scope="module")
def emb_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("emb")
    x, y, folds, ids = make_data()
    good = write_embeddings(d / "good.h5", x, ids, y, CLASSES, folds, label_set="syn")
    xr, _, _, _ = make_data(separable=False, seed=1)
    perm = np.random.default_rng(3).permutation(len(ids))  # same records, another order
    rand = write_embeddings(d / "rand.h5", xr[perm], [ids[i] for i in perm], y[perm], CLASSES, folds[perm],
                            label_set="syn", encoder="random")
    return good, rand


FAST = ProbeConfig(fractions=(0.1, 1.0), epochs=30, patience=10, bootstrap=100)


def test_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 3))
    s = rng.normal(size=(200, 3)) + y
    s[:, 2] = np.round(s[:, 2])  # ties
    got = auroc_per_class(s, y)
    want = [roc_auc_score(y[:, j], s[:, j]) for j in range(3)]
    assert np.allclose(got, want)
    y[:, 1] = 0
    assert np.isnan(auroc_per_class(s, y)[1])
    lo, hi = bootstrap_macro_auroc(s, rng.integers(0, 2, size=(200, 3)), 200)
    assert 0 < lo < hi < 1


def test_separable_embeddings_probe_well_and_random_ones_do_not(emb_files):
    good, rand = emb_files
    files = [EmbeddingsFile(good), EmbeddingsFile(rand)]
    splits = splits_from_folds(files[0].ids, files[0].folds, range(1, 9), [9], [10])
    res = run_probe(files, None, splits, FAST)
    by = {(r.encoder, r.fraction): r for r in res}
    assert by[("good", 1.0)].auroc > 0.95 and by[("good", 0.1)].auroc > 0.9
    assert 0.3 < by[("rand", 1.0)].auroc < 0.7
    r = by[("good", 1.0)]
    assert r.ci_low <= r.auroc <= r.ci_high and r.n_train == 400 and r.n_test == 50
    assert 1 <= r.best_epoch <= r.epochs_run <= 30


def test_subsets_are_fixed_identical_across_order_and_cover_classes():
    x, y, folds, ids = make_data(n=1000)
    a = training_subset(ids, y, 0.01, seed=0)
    perm = np.random.default_rng(5).permutation(len(ids))
    b = training_subset([ids[i] for i in perm], y[perm], 0.01, seed=0)
    assert a == b and 10 <= len(a) <= 10 + len(CLASSES)
    rows = [ids.index(r) for r in a]
    assert y[rows].any(axis=0).all(), "each class needs a positive in the subset"
    assert training_subset(ids, y, 0.01, seed=1) != a
    assert set(training_subset(ids, y, 0.1, seed=0)) != set(a)
    assert len(training_subset(ids, y, 1.0)) == 1000


def test_model_selection_never_sees_test_labels(emb_files, tmp_path):
    good, _ = emb_files
    f = EmbeddingsFile(good)
    x = f.embeddings
    y = f.labels.copy()
    test = f.folds == 10
    y[test] = 1 - y[test]  # flip every test label
    flipped = write_embeddings(tmp_path / "flipped.h5", x, f.ids, y, CLASSES, f.folds, label_set="syn")
    cfg = ProbeConfig(fractions=(1.0,), epochs=15, patience=0, bootstrap=0)
    for files in ([f], [EmbeddingsFile(flipped)]):
        splits = splits_from_folds(files[0].ids, files[0].folds, range(1, 9), [9], [10])
        r = run_probe(files, None, splits, cfg)[0]
        if files[0] is f:
            ref = r
    assert r.best_epoch == ref.best_epoch and r.val_auroc == ref.val_auroc
    assert abs(r.auroc - (1 - ref.auroc)) < 1e-9  # same classifier, mirrored test score


def test_class_without_training_positive_is_skipped_and_reported(tmp_path):
    x, y, folds, ids = make_data()
    y[folds <= 8, 3] = 0  # class D: no positive in training
    p = write_embeddings(tmp_path / "e.h5", x, ids, y, CLASSES, folds, label_set="syn")
    r = run("probe", p, "--fractions", "1", "--epochs", "5", "--bootstrap", "0", "-f", "json", "-q")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert rows[0]["n_classes"] == 3 and "D: no positive in the training split" in rows[0]["skipped"]


def test_cli_table_csv_roc_and_custom_folds(emb_files, tmp_path):
    good, rand = emb_files
    png = tmp_path / "roc.png"
    r = run("probe", good, rand, "--fractions", "0.1,1", "--epochs", "10", "--bootstrap", "50",
            "--train-folds", "1-6", "--val-folds", "7", "--test-folds", "8", "--roc-plot", png, "-q")
    assert r.exit_code == 0, r.output
    assert "good" in r.stdout and "rand" in r.stdout and "100%" in r.stdout and str(png) in r.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = run("probe", good, "--fractions", "1", "--epochs", "5", "--bootstrap", "0", "-f", "csv", "-q")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("encoder,label_set,fraction") and len(lines) == 2


def test_split_file(emb_files, tmp_path):
    good, _ = emb_files
    f = EmbeddingsFile(good)
    sp = tmp_path / "split.csv"
    names = {**{k: "train" for k in range(1, 8)}, 8: "val", 9: "test", 10: "test"}
    sp.write_text("id,split\n" + "".join(f"{i},{names[fo]}\n" for i, fo in zip(f.ids, f.folds)))
    s = splits_from_file(sp, f.ids)
    assert len(s.train) == 350 and len(s.val) == 50 and len(s.test) == 100
    r = run("probe", good, "--split-file", sp, "--fractions", "1", "--epochs", "5", "--bootstrap", "0", "-q")
    assert r.exit_code == 0, r.output
    sp.write_text("id,split\nrec0000,bogus\n")
    with pytest.raises(EcgscanError, match="not train, val or test"):
        splits_from_file(sp, f.ids)


def test_bad_input_is_one_line_exit_2(emb_files, tmp_path):
    good, _ = emb_files
    x, y, folds, ids = make_data(n=100)
    other = write_embeddings(tmp_path / "other.h5", x, [f"x{i}" for i in range(100)], y, CLASSES, folds)
    cases = [
        (["probe", good, "--labels", "nope"], "no label set 'nope'"),
        (["probe", good, other], "different records"),
        (["probe", good, "--test-folds", "11"], "no records in the test folds"),
        (["probe", good, "--train-folds", "1-9"], "both the train and validation"),
        (["probe", good, "--fractions", "2"], "fractions"),
        (["probe", tmp_path / "missing.h5"], "no such file"),
    ]
    for args, msg in cases:
        r = run(*args, "--epochs", "2", "--bootstrap", "0", "-q")
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output
    assert parse_folds("1-3,7") == [1, 2, 3, 7]


def test_embeddings_format_errors(tmp_path):
    with pytest.raises(EcgscanError, match="labels have shape"):
        write_embeddings(tmp_path / "a.h5", np.zeros((3, 4)), ["a", "b", "c"], np.zeros((2, 2)), ["X", "Y"])
    with pytest.raises(EcgscanError, match="expected \\[3, D\\]"):
        write_embeddings(tmp_path / "a.h5", np.zeros((4, 4)), ["a", "b", "c"])
    p = write_embeddings(tmp_path / "b.h5", np.ones((3, 4)), ["a", "b", "c"], np.eye(3, 2), ["X", "Y"], [1, 2, 3],
                         label_set="s", encoder="random", checkpoint="ck")
    f = EmbeddingsFile(p)
    assert f.dim == 4 and f.encoder == "random" and f.label_set == "s" and f.folds.tolist() == [1, 2, 3]
    with h5py.File(p, "a") as h:  # break it: one label row too few
        lab = h["label"][()]
        del h["label"]
        h.create_dataset("label", data=lab[:2]).attrs["classes"] = ["X", "Y"]
    with pytest.raises(EcgscanError, match="rows for 3 embeddings"):
        EmbeddingsFile(p)
    from ecgscan_cli.formats.signals import write_signals

    s = write_signals(tmp_path / "s.h5", np.zeros((1, 12, 5000)), ["a"])
    with pytest.raises(EcgscanError, match="signals file, expected an ecgscan embeddings"):
        EmbeddingsFile(s)


def test_a_file_of_only_the_records_read_probes_exactly_like_the_whole_file(emb_files, tmp_path):
    """records_read names every record run_probe reads: a file cut down to them (with the
    labels taken from the whole set) gives the same probes; one record fewer is refused."""
    from ecgscan_cli.probe import RecordLabels, records_read

    f = EmbeddingsFile(emb_files[0])
    splits = splits_from_folds(f.ids, f.folds, range(1, 9), [9], [10])
    labels = RecordLabels(str(f.path), list(f.ids), dict(f.label_sets))
    cfg = ProbeConfig(fractions=(0.05, 0.2), epochs=10, patience=0, bootstrap=20)
    read = records_read(labels, ["syn"], splits, cfg.fractions, cfg.seed)
    assert set(splits.val) | set(splits.test) <= read and len(read) < len(f.ids)
    keep = [i for i, rid in enumerate(f.ids) if rid in read]
    cut = write_embeddings(tmp_path / "cut.h5", f.embeddings[keep], [f.ids[i] for i in keep], f.labels[keep],
                           CLASSES, f.folds[keep], label_set="syn")
    whole = run_probe([f], None, splits, cfg)
    part = run_probe([EmbeddingsFile(cut)], ["syn"], splits, cfg, labels=labels)
    assert [(r.fraction, r.n_train, r.auroc, r.ci_low) for r in whole] == \
        [(r.fraction, r.n_train, r.auroc, r.ci_low) for r in part]
    missing = sorted(read - set(splits.val) - set(splits.test))[0]
    keep2 = [i for i in keep if f.ids[i] != missing]
    short = write_embeddings(tmp_path / "short.h5", f.embeddings[keep2], [f.ids[i] for i in keep2],
                             f.labels[keep2], CLASSES, f.folds[keep2], label_set="syn")
    with pytest.raises(EcgscanError, match=f"record '{missing}' is missing"):
        run_probe([EmbeddingsFile(short)], ["syn"], splits, cfg, labels=labels)
