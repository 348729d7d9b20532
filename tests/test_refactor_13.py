"""Issue #13, items 6-9: shared helpers in one place, nothing dead or pretending, one document
on stdout, an explicit public API."""

from __future__ import annotations

import ast
import csv
import io
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

import ecgscan_cli
from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError

PACKAGE = Path(ecgscan_cli.__file__).parent
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _imports(path: Path) -> set[str]:
    """Every module a source file imports (at any depth, in functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _library_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts[:1]
            and p.name != "__main__.py"]


def _defines(name: str) -> list[str]:
    """The package's modules that define a function ``name`` at module level."""
    out = []
    for p in PACKAGE.rglob("*.py"):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body):
            out.append(str(p.relative_to(PACKAGE)))
    return sorted(out)


# ---------------------------------------------------------------- 6: one place for each helper

def test_metrics_module_gives_known_aurocs():
    from ecgscan_cli.metrics import auroc_per_class, macro_auroc, threshold_metrics

    scores = np.array([[0.1, 0.9], [0.4, 0.8], [0.35, 0.2], [0.8, 0.1]])
    y = np.array([[0, 0], [0, 1], [1, 1], [1, 1]])
    per = auroc_per_class(scores, y)
    # class 0: of the 4 (positive, negative) pairs, 3 are ranked right (0.35 < 0.4) -> 0.75;
    # class 1: the one negative (0.9) outranks every positive -> 0
    assert per[0] == pytest.approx(0.75) and per[1] == pytest.approx(0.0)
    assert macro_auroc(scores, y) == pytest.approx(0.375)
    assert np.isnan(auroc_per_class(scores, np.zeros((4, 2)))).all()
    t = threshold_metrics(scores, y, ["a", "b"])
    a = next(r for r in t if r["class"] == "a")
    # Youden-optimal threshold of class a is 0.8 (sens 0.5, spec 1.0) or 0.35 (sens 1, spec 0.5): J = 0.5 either way
    assert a["sensitivity"] + a["specificity"] - 1 == pytest.approx(0.5)


def test_zeroshot_does_not_import_the_probe():
    code = ("import sys, numpy as np; from ecgscan_cli.zeroshot import score; "
            "r = score(np.eye(4, dtype='float32'), np.eye(4, dtype='float32')[:2], "
            "np.array([[1,0],[0,1],[0,0],[1,1]]), ['a','b']); "
            "print(round(r.macro_auroc, 4), 'ecgscan_cli.probe' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    # each class: its positive with score 1 outranks both negatives, its positive with score 0
    # ties with them (0.5 each): (2 + 1) / 4 = 0.75
    assert out == ["0.75", "False"]


def test_library_never_imports_the_cli():
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in _imports(p) if m.startswith("ecgscan_cli.cli"))
                 for p in _library_files()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_device_and_checkpoint_loading_each_live_in_one_module():
    assert _defines("resolve_device") == ["device.py"]
    assert _defines("load_checkpoint") == ["checkpoint.py"]
    for p in _library_files():
        if p.name != "checkpoint.py":   # every caller goes through load_checkpoint
            assert "load_model_weights" not in p.read_text(encoding="utf-8") or "training" in p.parts, p


def test_resolve_device_accepts_names_and_devices():
    import torch

    from ecgscan_cli.device import resolve_device

    cpu = torch.device("cpu")
    assert resolve_device(cpu) is cpu
    assert resolve_device("CPU") == cpu
    assert resolve_device(None).type in ("cpu", "cuda")
    with pytest.raises(EcgscanError, match="auto, cpu or cuda"):
        resolve_device("tpu")


def test_load_checkpoint_errors_are_one_line(tmp_path):
    from ecgscan_cli.checkpoint import load_checkpoint

    with pytest.raises(EcgscanError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(EcgscanError, match="not an ecgscan checkpoint"):
        load_checkpoint(tmp_path)


def test_tables_are_library_code():
    from ecgscan_cli.tables import auroc_cell, markdown_table, wide_rows

    r = lambda enc, f, auc, lo, hi: SimpleNamespace(encoder=enc, label_set="syn", fraction=f, auroc=auc,
                                                    ci_low=lo, ci_high=hi)
    rows, cols = wide_rows([r("a", 1.0, 0.8123, 0.75, 0.86), r("a", 0.1, 0.7, float("nan"), float("nan")),
                            r("b", 1.0, float("nan"), float("nan"), float("nan"))])
    assert cols == ["encoder", "label_set", "10%", "100%"]
    assert rows[0] == {"encoder": "a", "label_set": "syn", "100%": "81.2 [75.0-86.0]", "10%": "70.0"}
    assert rows[1]["100%"] == "nan"
    assert auroc_cell(None) == "nan"
    md = markdown_table([{"x": 1.234, "y": "s"}, {"x": float("nan")}], ["x", "y"])
    assert md.splitlines() == ["| x | y |", "|---|---|", "| 1.23 | s |", "| nan |  |"]


# ---------------------------------------------------------------- 7: nothing dead or pretending

def test_import_options_hold_only_what_is_read():
    from ecgscan_cli.canonical import FS as FS_OUT, N_SAMPLES as N_OUT
    from ecgscan_cli.importing import ImportOptions, canonicalize
    from ecgscan_cli.leads import LEADS

    assert {f.name for f in fields(ImportOptions)} == {"derive_limb_leads", "pad"}
    t = np.arange(2500) / 250.0   # 10 s at 250 Hz
    sig = np.stack([np.sin(2 * np.pi * 1.0 * t) * (k + 1) for k in range(12)])
    out = canonicalize(sig, list(LEADS), 250.0)
    assert out.shape == (12, N_OUT) and FS_OUT == 500.0
    # resampled to 500 Hz: sample 1000 is t = 2 s, where the sine is 0; sample 2625 is t = 5.25 s (a peak)
    assert abs(out[0, 1000]) < 0.02 and out[3, 2625] == pytest.approx(4.0, abs=0.02)


@pytest.mark.parametrize("train,val,test,expect", [
    ([1, 2, 3, 4, 5, 6, 7, 8], [9], [10], "--train-folds 1-8 --val-folds 9 --test-folds 10"),
    ([1, 2, 3, 5], [6, 7], [9], "--train-folds 1-3,5 --val-folds 6-7 --test-folds 9"),
])
def test_demo_rerun_commands_use_the_folds_and_file_of_the_run(train, val, test, expect):
    from ecgscan_cli.demo import rerun_commands
    from ecgscan_cli.probe import parse_folds

    cmds = rerun_commands("work/signals_folds.h5", train, val, test)
    probe = next(c for c in cmds if c.startswith("ecgscan probe"))
    assert probe.endswith(expect)
    args = probe.split()
    assert [parse_folds(args[args.index(o) + 1]) for o in ("--train-folds", "--val-folds", "--test-folds")] \
        == [train, val, test]
    assert all("work/signals_folds.h5" in c for c in cmds if c.startswith("ecgscan embed"))


def test_heldout_names_the_fresh_init():
    from ecgscan_cli import heldout

    assert hasattr(heldout, "trained_vs_fresh_init") and not hasattr(heldout, "trained_vs_step0")


# ---------------------------------------------------------------- 8: stdout is one document

def _embeddings(tmp_path, dim=24, n=200, classes=("A", "B"), projected=False, seed=0, noise=0.7):
    from ecgscan_cli.formats.embeddings import write_embeddings

    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(classes))) < 0.4).astype(np.uint8)
    x = y @ rng.normal(size=(len(classes), dim)) + rng.normal(size=(n, dim)) * noise
    if projected:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    folds = np.tile(np.arange(1, 11), n // 10 + 1)[:n]
    return write_embeddings(tmp_path / f"e{seed}.h5", x.astype(np.float32), [f"r{i}" for i in range(n)], y,
                            list(classes), folds, label_set="syn", features="projected" if projected else "backbone")


def test_probe_roc_plot_path_is_inside_the_one_json_and_csv_document(tmp_path):
    emb = _embeddings(tmp_path)
    png = tmp_path / "roc.png"
    common = ["--fractions", "1", "--epochs", "5", "--bootstrap", "0", "-q"]
    r = run("probe", emb, *common, "-f", "json", "--roc-plot", png)
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)          # the whole of stdout is one JSON document
    assert len(rows) == 1 and rows[0]["roc_plot"] == str(png) and 50 < rows[0]["macro_auroc"] <= 100
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = run("probe", emb, *common, "-f", "csv", "--roc-plot", png, "--overwrite")
    table = list(csv.reader(io.StringIO(r.stdout)))
    assert table[0][-1] == "roc_plot" and len(table) == 2 and table[1][-1] == str(png)
    r = run("probe", emb, *common, "--roc-plot", png, "--overwrite")
    assert r.stdout.count("┏") == 1 and str(png) in r.stdout   # one table, the path in its title


def test_probe_per_class_is_one_document(tmp_path):
    emb = _embeddings(tmp_path, noise=4.0)   # hard enough that the CI is not 100-100
    r = run("probe", emb, "--fractions", "1", "--epochs", "5", "--bootstrap", "20", "-q", "-f", "json",
            "--per-class")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["class"] for x in rows] == ["macro", "A", "B"]
    assert rows[0]["auroc"] == pytest.approx((rows[1]["auroc"] + rows[2]["auroc"]) / 2, abs=1e-3)
    assert 0 < rows[0]["ci_low"] < rows[0]["ci_high"] <= 100 and rows[1]["ci_low"] is None


def test_zeroshot_json_with_thresholds_is_one_document(tmp_path):
    import torch

    from ecgscan_cli.checkpoint import save_checkpoint
    from ecgscan_cli.model import build_model, tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(image_size=64), load_weights=False)
    ck = save_checkpoint(tmp_path / "ck", model)
    emb = _embeddings(tmp_path, dim=model.embed_dim, projected=True)
    prompts = tmp_path / "ab.json"
    prompts.write_text(json.dumps({"classes": {"A": "an ECG of class A", "B": "an ECG of class B"}}))
    r = run("zeroshot", ck, emb, "--prompts", prompts, "-f", "json", "-q", "--thresholds")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)          # the whole of stdout is one JSON document
    assert [x["class"] for x in rows] == ["macro", "A", "B"]
    assert rows[0]["threshold"] is None and 0 <= rows[0]["auroc"] <= 100
    for x in rows[1:]:
        assert 0 <= x["sensitivity"] <= 1 and 0 <= x["specificity"] <= 1 and 0 <= x["f1"] <= 1
        assert x["sensitivity"] + x["specificity"] >= 1.0   # Youden-optimal: never below chance
    r = run("zeroshot", ck, emb, "--prompts", prompts, "-f", "csv", "-q", "--thresholds")
    table = list(csv.reader(io.StringIO(r.stdout)))
    assert table[0] == ["class", "auroc", "positives", "threshold", "sensitivity", "specificity", "f1"]
    assert len(table) == 4 and all(len(row) == 7 for row in table)


# ---------------------------------------------------------------- 9: public API

def test_every_public_name_resolves():
    assert "load_checkpoint" in ecgscan_cli.__all__ and "render_batch" in ecgscan_cli.__all__
    for name in ecgscan_cli.__all__:
        assert getattr(ecgscan_cli, name) is not None, name
    from ecgscan_cli.checkpoint import load_checkpoint
    from ecgscan_cli.formats.signals import SignalsFile

    assert ecgscan_cli.load_checkpoint is load_checkpoint and ecgscan_cli.SignalsFile is SignalsFile
    assert set(ecgscan_cli.__all__) <= set(dir(ecgscan_cli))
    with pytest.raises(AttributeError):
        ecgscan_cli.no_such_name  # noqa: B018


def test_public_functions_have_numpydoc_parameters():
    for name in ("load_checkpoint", "resolve_device", "load_encoder", "embed_source", "embed_to_file",
                 "write_signals", "lead_snr_db"):
        doc = getattr(ecgscan_cli, name).__doc__
        assert "Parameters\n    ----------" in doc and "Returns\n    -------" in doc, name
    for name in ("SignalsFile", "SignalsWriter", "EmbeddingsFile"):
        assert "Parameters\n    ----------" in getattr(ecgscan_cli, name).__doc__, name


def test_import_ecgscan_cli_does_not_import_torch():
    code = "import sys, ecgscan_cli; print(sorted(m for m in ('torch', 'numpy', 'ecgscan_cli.cli') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, ecgscan_cli; ecgscan_cli.SignalsFile; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"   # reading signals files does not need torch either


def test_pretrain_accepts_the_augmentation_files_render_accepts(tmp_path):
    """#13.2: `pretrain --augment` takes a preset (photo included) or a render augmentation file."""
    from ecgscan_cli.errors import EcgscanError
    from ecgscan_cli.training.config import TrainConfig, check_config

    good = tmp_path / "aug.yaml"
    good.write_text("preset: paper\nrotation: {p: 1.0, strength: 2.0}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: paper\nsparkles: {p: 1.0}\n")
    for augment in ("photo", str(good)):
        check_config(TrainConfig(augment=augment))
    for augment in ("glossy", str(bad)):
        with pytest.raises(EcgscanError):
            check_config(TrainConfig(augment=augment))


def test_numpy_parts_of_the_library_import_without_torch():
    """Page layout, the page renderer, the digitiser's pipeline after the network and the
    importer are numpy code: importing them (through their packages) must not load torch
    (~2 s), which only the batch renderer, the augmentations and the models need."""
    code = ("import sys, ecgscan_cli.render.layout, ecgscan_cli.render.page, ecgscan_cli.digitize.pipeline, "
            "ecgscan_cli.digitize.rectify, ecgscan_cli.digitize.consistency, ecgscan_cli.importing; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
