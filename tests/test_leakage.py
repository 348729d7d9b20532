"""No leakage between pretraining and evaluation: fold splits, recorded ids, embed/probe/zeroshot checks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ecgscan_cli.cli.app import app  # noqa: E402
from ecgscan_cli.data import resolve_fold_split, split_records  # noqa: E402
from ecgscan_cli.errors import EcgscanError  # noqa: E402
from ecgscan_cli.formats.embeddings import EmbeddingsFile  # noqa: E402
from ecgscan_cli.formats.signals import SignalsFile  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MINI = {"max_steps": 2, "batch_size": 8, "teacher_steps": 2, "teacher_batch": 8, "max_val": 16, "eval_every": 100,
        "save_every": 100, "log_every": 1, "augment": "light", "num_workers": 0, "model.text_model": "tiny"}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    from ecgscan_cli.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("leak") / "synth.h5", 60, seed=4)  # folds 1-10, 6 records each


@pytest.fixture(scope="module")
def pretrained(synth_file, tmp_path_factory):
    """A tiny run with every record index that pretraining reads recorded (teacher, training, validation)."""
    import torch

    from ecgscan_cli.train import pretrain, resolve_config

    read: set[int] = set()
    real_signal, real_signals = SignalsFile.signal, SignalsFile.signals

    def signal(self, i):
        read.add(int(i))
        return real_signal(self, i)

    def signals(self, idx=None):
        idx = range(len(self)) if idx is None else [int(i) for i in idx]
        read.update(idx)
        return real_signals(self, idx)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setattr(SignalsFile, "signal", signal)
    mp.setattr(SignalsFile, "signals", signals)
    try:
        run_dir = tmp_path_factory.mktemp("run") / "run"
        res = pretrain(synth_file, run_dir, resolve_config("tiny", overrides=MINI), device="cpu")
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return run_dir, res, read


# ------------------------------------------------------------------ fold resolution

def test_fold_resolution_rule():
    assert resolve_fold_split(range(1, 11)) == (list(range(1, 9)), [9], [10])   # PTB-XL
    assert resolve_fold_split(range(1, 9)) == (list(range(1, 7)), [7], [8])     # our 1-8 archive
    assert resolve_fold_split([-1, 3, 1, 2, 2]) == ([1], [2], [3])
    # unset lists are filled from the highest free fold down
    assert resolve_fold_split(range(1, 9), train=[1, 2, 3]) == ([1, 2, 3], [7], [8])
    assert resolve_fold_split(range(1, 9), test=[1]) == ([2, 3, 4, 5, 6, 7], [8], [1])
    assert resolve_fold_split(range(1, 9), test=[]) == (list(range(1, 8)), [8], [])   # hold out nothing
    with pytest.raises(EcgscanError, match=r"has no test fold 11 \(it has folds 1-8\)"):
        resolve_fold_split(range(1, 9), test=[11])
    with pytest.raises(EcgscanError, match="folds 7 are in both the train and validation"):
        resolve_fold_split(range(1, 9), train=[1, 7], val=[7])
    with pytest.raises(EcgscanError, match="no fold left for training"):
        resolve_fold_split([1, 2])
    with pytest.raises(EcgscanError, match="no fold left for validation"):
        resolve_fold_split([1, 2], train=[1])


def test_split_records_auto_explicit_random(synth_file, tmp_path):
    from ecgscan_cli.formats import write_signals

    sf = SignalsFile(synth_file)
    usable = np.arange(len(sf))
    s = split_records(sf, usable)  # auto, file has folds 1-10
    assert (s.kind, s.train_folds, s.val_folds, s.test_folds) == ("folds", list(range(1, 9)), [9], [10])
    assert set(sf.folds[s.train]) == set(range(1, 9)) and set(sf.folds[s.val]) == {9}
    assert np.array_equal(s.test, np.flatnonzero(sf.folds == 10)) and len(s.test) == 6
    s = split_records(sf, usable, "auto", train_folds=[1, 2, 3], test_folds=[4])
    assert (s.train_folds, s.val_folds, s.test_folds) == ([1, 2, 3], [10], [4])
    with pytest.raises(EcgscanError, match="has no validation fold 12"):
        split_records(sf, usable, "folds", val_folds=[12])
    r = split_records(sf, usable, "random", seed=1)
    assert r.kind == "random" and len(r.test) == 0 and len(r.val) == 6 and len(r.train) == 54
    # no folds in the file: auto is the random split; naming folds is an error
    x = np.zeros((10, 12, 5000), np.float32)
    write_signals(tmp_path / "nofolds.h5", x, [f"n{i}" for i in range(10)], ["sinus"] * 10)
    nf = SignalsFile(tmp_path / "nofolds.h5")
    assert split_records(nf, np.arange(10)).kind == "random"
    with pytest.raises(EcgscanError, match="no folds"):
        split_records(nf, np.arange(10), "auto", test_folds=[10])
    with pytest.raises(EcgscanError, match="no folds"):
        split_records(nf, np.arange(10), "folds")


def test_config_fold_keys_from_strings(tmp_path):
    from ecgscan_cli.train import resolve_config

    cfg = resolve_config("tiny", overrides={"train_folds": "1-6,8", "val_folds": "7", "test_folds": "none"})
    assert (cfg.split, cfg.train_folds, cfg.val_folds, cfg.test_folds) == ("auto", [1, 2, 3, 4, 5, 6, 8], [7], [])
    (tmp_path / "c.yaml").write_text("split: folds\ntest_folds: 10\nval_folds: [9]\n")
    cfg = resolve_config("tiny", str(tmp_path / "c.yaml"))
    assert (cfg.split, cfg.train_folds, cfg.val_folds, cfg.test_folds) == ("folds", None, [9], [10])
    with pytest.raises(EcgscanError, match="split must be auto"):
        resolve_config("tiny", overrides={"split": "kfold"})


def test_cli_absent_fold_is_one_line_exit_2(synth_file, tmp_path):
    r = run("pretrain", synth_file, "-o", tmp_path / "r", "--test-folds", "11", "--text-model", "tiny", "--device",
            "cpu", "-q")
    assert r.exit_code == 2 and "has no test fold 11 (it has folds 1-10)" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ what pretraining reads and records

def test_pretraining_never_reads_the_test_fold(pretrained, synth_file):
    run_dir, res, read = pretrained
    sf = SignalsFile(synth_file)
    folds = sf.folds
    assert read and not any(folds[i] == 10 for i in read)           # the held-out fold is never touched
    assert {int(folds[i]) for i in read} == set(range(1, 10))        # training 1-8 and validation 9 are
    assert {i for i in read if folds[i] == 9} == set(np.flatnonzero(folds == 9))
    cfg = json.loads((run_dir / "run.json").read_text())             # the resolved folds
    assert (cfg["split"], cfg["train_folds"], cfg["val_folds"], cfg["test_folds"]) == \
        ("folds", list(range(1, 9)), [9], [10])
    for ckpt in (res.best, res.last):
        meta = json.loads((ckpt / "ecgscan_checkpoint.json").read_text())["pretraining"]
        assert meta["split"] == "folds" and meta["test_folds"] == [10] and meta["val_folds"] == [9]
        assert (meta["n_train"], meta["n_val"], meta["n_test"], meta["n_ids"]) == (48, 6, 6, 54)
        assert meta["signals"] == os.path.abspath(synth_file)
        ids = (ckpt / "pretrain_ids.txt").read_text().splitlines()
        # the whole training and validation split (a longer run would read all of it), in file order
        assert ids == [sf.ids[i] for i in np.flatnonzero(folds <= 9)]
        assert {sf.ids[i] for i in read} <= set(ids)


def test_embed_records_provenance_and_warns(pretrained, synth_file, tmp_path):
    from ecgscan_cli.demo import _subset_signals

    run_dir, res, _ = pretrained
    out = tmp_path / "emb.h5"
    r = run("embed", res.best, synth_file, "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "54 of 60 records were seen in pretraining (folds 1-8 (train), 9 (validation) of synth.h5); " \
           "evaluate on folds 10" in " ".join(r.output.split())
    e = EmbeddingsFile(out)
    assert e.pretraining.ids == frozenset((res.best / "pretrain_ids.txt").read_text().splitlines())
    assert e.pretraining.test_folds == [10] and e.features == "projected"
    # a random encoder carries no pretraining ids; the features choice is recorded
    r = run("embed", res.best, synth_file, "-o", tmp_path / "emb0.h5", "--encoder", "random", "--features",
            "backbone", "--device", "cpu")
    assert r.exit_code == 0 and "seen in pretraining" not in r.output
    e0 = EmbeddingsFile(tmp_path / "emb0.h5")
    assert e0.pretraining is None and e0.features == "backbone"
    # only test-fold records: nothing to warn about
    sf = SignalsFile(synth_file)
    test_only = _subset_signals(sf, np.flatnonzero(sf.folds == 10), tmp_path / "test.h5")
    r = run("embed", res.best, test_only, "-o", tmp_path / "embt.h5", "--device", "cpu")
    assert r.exit_code == 0 and "seen in pretraining" not in r.output


def test_probe_refuses_a_test_split_seen_in_pretraining(pretrained, synth_file, tmp_path):
    _, res, _ = pretrained
    emb, emb0 = tmp_path / "emb.h5", tmp_path / "emb0.h5"
    assert run("embed", res.best, synth_file, "-o", emb, "--device", "cpu", "-q").exit_code == 0
    assert run("embed", res.best, synth_file, "-o", emb0, "--encoder", "random", "--device", "cpu", "-q").exit_code == 0
    fast = ["--fractions", "1", "--epochs", "2", "--bootstrap", "0"]
    # the held-out fold as test: fine, although training/validation records were pretrained on
    r = run("probe", emb, emb0, *fast, "-q")
    assert r.exit_code == 0, r.output
    # the pretraining's validation fold as test: refused, one line naming the count and folds
    r = run("probe", emb0, emb, *fast, "--val-folds", "10", "--test-folds", "9", "-q")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"{emb}: 6 of 6 test records were seen in pretraining (folds 1-8 (train), 9 (validation)" in r.output
    assert "--allow-overlap" in r.output
    r = run("probe", emb0, emb, *fast, "--val-folds", "10", "--test-folds", "9", "--allow-overlap")
    assert r.exit_code == 0, r.output
    assert "test AUROC is optimistic" in " ".join(r.output.split())
    # the untrained encoder alone: nothing to refuse
    assert run("probe", emb0, *fast, "--val-folds", "10", "--test-folds", "9", "-q").exit_code == 0


def test_zeroshot_warns_when_evaluated_records_were_pretrained(pretrained, synth_file):
    _, res, _ = pretrained
    r = run("zeroshot", res.best, synth_file, "--prompts", "synth", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "54 of 60 records were seen in pretraining" in " ".join(r.output.split())


def test_library_record_and_quiet_embedding(pretrained, synth_file, tmp_path, caplog):
    import logging

    from ecgscan_cli.embed import embed_to_file, pretraining_record

    _, res, _ = pretrained
    rec = pretraining_record(res.best)
    assert rec["test_folds"] == [10] and rec["ids"] == set((res.best / "pretrain_ids.txt").read_text().split())
    logger = logging.getLogger("ecgscan")
    logger.addHandler(caplog.handler)
    try:
        caplog.set_level(logging.WARNING, logger="ecgscan")
        embed_to_file(res.best, synth_file, tmp_path / "a.h5", device="cpu")
        assert "54 of 60 records were seen in pretraining" in caplog.text
        caplog.clear()
        embed_to_file(res.best, synth_file, tmp_path / "b.h5", device="cpu", allow_overlap=True)
        assert "seen in pretraining" not in caplog.text
    finally:
        logger.removeHandler(caplog.handler)
    assert EmbeddingsFile(tmp_path / "b.h5").pretraining.ids == rec["ids"]   # recorded either way
