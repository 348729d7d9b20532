"""`ecgscan import` of PTB-XL straight from archives (tar.xz beside the CSVs, PhysioNet's zip,
a tar with the CSVs inside), several label sets in one file, and bad archives."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats import SignalsFile
from ecgscan_cli.importing import import_records, parse_label_sets, ptbxl_labels, read_scp_statements

runner = CliRunner()
N_RECORDS = 6
ALL_SETS = ["superclass", "subclass", "form", "rhythm"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(r) -> bool:
    """The error is one line at the end of stderr (after any log lines), without a traceback."""
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("ecgscan: error:")]
    return len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in r.output


def write_csv(sample: Path, dest: Path, ecg_ids, extra_rows: list[dict] = ()) -> None:
    """The sample's ptbxl_database.csv reduced to ``ecg_ids`` (plus made-up rows)."""
    import pandas as pd

    db = pd.read_csv(sample / "ptbxl_database.csv", index_col="ecg_id")
    db = db.loc[list(ecg_ids)]
    if extra_rows:
        extra = pd.DataFrame(extra_rows).set_index("ecg_id")
        db = pd.concat([db, extra])
    dest.mkdir(parents=True, exist_ok=True)
    db.to_csv(dest / "ptbxl_database.csv")
    shutil.copy(sample / "scp_statements.csv", dest / "scp_statements.csv")


def record_files(root: Path, folder: str) -> list[Path]:
    """Record files of ``root/folder`` (records100 or records500), sorted like PTB-XL's archives."""
    return sorted(p for p in (root / folder).rglob("*") if p.is_file())


def make_tar(path: Path, root: Path, files: list[Path], prefix: str = "", mode: str = "w:xz") -> Path:
    with tarfile.open(path, mode) as tf:
        for f in files:
            tf.add(f, arcname=prefix + f.relative_to(root).as_posix())
    return path


def make_zip(path: Path, root: Path, files: list[Path], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, prefix + f.relative_to(root).as_posix())
    return path


@pytest.fixture(scope="module")
def mini(ptbxl_dir, tmp_path_factory):
    """Six PTB-XL records unpacked, and the same records in every archive layout."""
    import pandas as pd

    base = tmp_path_factory.mktemp("mini-ptbxl")
    ids = pd.read_csv(ptbxl_dir / "ptbxl_database.csv", usecols=["ecg_id"])["ecg_id"].tolist()[:N_RECORDS]
    unpacked = base / "unpacked"
    write_csv(ptbxl_dir, unpacked, ids)
    for rate, suffix in (("records100", "lr"), ("records500", "hr")):
        for i in ids:
            for ext in ("hea", "dat"):
                rel = Path(rate, f"{i // 1000 * 1000:05d}", f"{i:05d}_{suffix}.{ext}")
                (unpacked / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ptbxl_dir / rel, unpacked / rel)
    csvs = [unpacked / "ptbxl_database.csv", unpacked / "scp_statements.csv"]
    lr, hr = record_files(unpacked, "records100"), record_files(unpacked, "records500")
    # the shipped layout: CSVs beside records100-*.tar.xz; members in reverse order, so
    # headers come before their .dat and rows must be put back in the CSV's order
    shipped = base / "shipped"
    write_csv(ptbxl_dir, shipped, ids)
    make_tar(shipped / "records100-mini.tar.xz", unpacked, lr[::-1])
    top = "ptb-xl-mini-1.0.3/"
    physionet_zip = make_zip(base / "ptb-xl-mini-1.0.3.zip", unpacked, csvs + lr + hr, prefix=top)
    # CSVs inside a tar, after the records
    (base / "inside").mkdir()
    inside_tar = make_tar(base / "inside" / "ptbxl.tar.gz", unpacked, lr + csvs, prefix="ptbxl/", mode="w:gz")
    return {"ids": [f"{i:05d}" for i in ids], "unpacked": unpacked, "shipped": shipped, "zip": physionet_zip,
            "inside_tar": inside_tar, "base": base}


def read_all(path: Path) -> dict:
    with SignalsFile(path) as f:
        out = {"ids": f.ids, "reports": f.reports, "folds": f.folds.tolist(), "classes": f.classes,
               "labels": f.labels, "signals": f.signals()}
    with h5py.File(path) as h:
        out["label_set"] = h["label"].attrs.get("label_set", "")
        out["label_sets"] = {name: ([str(c) for c in ds.attrs["classes"]], ds[()])
                             for name, ds in h.get("label_sets", {}).items()}
    return out


def assert_same_import(a: dict, b: dict) -> None:
    for key in ("ids", "reports", "folds", "classes", "label_set"):
        assert a[key] == b[key], key
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["signals"], b["signals"])
    assert a["label_sets"].keys() == b["label_sets"].keys()
    for name in a["label_sets"]:
        assert a["label_sets"][name][0] == b["label_sets"][name][0]
        np.testing.assert_array_equal(a["label_sets"][name][1], b["label_sets"][name][1])


@pytest.fixture(scope="module")
def reference(mini, tmp_path_factory):
    """Imports of the unpacked folder, all four label sets: at 100 Hz and at 500 Hz."""
    out = tmp_path_factory.mktemp("ref")
    lr, _ = import_records(mini["unpacked"], out / "lr.h5", sampling_rate=100, label_set="all")
    hr, _ = import_records(mini["unpacked"], out / "hr.h5", sampling_rate=500, label_set="all")
    return {100: read_all(lr), 500: read_all(hr)}


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout, rate", [
    ("shipped", 100),      # folder: CSVs + records100-*.tar.xz, no records100/
    ("shipped_tar", 100),  # SOURCE = the .tar.xz, CSVs beside it
    ("zip", 100),          # PhysioNet's zip, records100/ inside
    ("zip", 500),          # ... and its records500/
    ("inside_tar", 100),   # a tar.gz holding the CSVs (after the records) and records100/
])
def test_archive_layouts_match_the_unpacked_folder(mini, reference, tmp_path, layout, rate):
    source = mini["shipped"] / "records100-mini.tar.xz" if layout == "shipped_tar" else mini[layout]
    out = tmp_path / "out.h5"
    r = run("import", source, "-r", rate, "--labels", "all", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    assert "archive" in r.stderr and "imported" in r.stderr
    got = read_all(out)
    assert got["ids"] == mini["ids"]  # the CSV's order, whatever the archive's
    assert_same_import(got, reference[rate])
    assert not list(mini["shipped"].glob("records100*/"))  # nothing unpacked beside the archive


def test_unpacked_folder_import_is_unchanged(mini, reference, ptbxl_dir):
    """The unpacked import holds what wfdb reads, and PTB-XL's labels for each set."""
    import wfdb

    ref = reference[100]
    assert ref["ids"] == mini["ids"] and ref["label_set"] == "superclass"
    assert ref["classes"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert {k: len(v[0]) for k, v in ref["label_sets"].items()} == {"subclass": 23, "form": 19, "rhythm": 12}
    hr = reference[500]
    rec = wfdb.rdrecord(str(ptbxl_dir / "records500/00000/00001_hr"))
    np.testing.assert_allclose(hr["signals"][0], rec.p_signal.T, atol=1e-6)
    # every label set row is the benchmark's aggregation of that record's scp_codes
    import ast

    import pandas as pd

    db = pd.read_csv(mini["unpacked"] / "ptbxl_database.csv", index_col="ecg_id")
    scp = read_scp_statements(mini["unpacked"])
    for row, (_, codes) in enumerate(db["scp_codes"].items()):
        codes = ast.literal_eval(codes)
        for name in ALL_SETS:
            classes, lab = (ref["classes"], ref["labels"]) if name == "superclass" else ref["label_sets"][name]
            assert [c for c, v in zip(classes, lab[row]) if v] == ptbxl_labels(codes, scp, name)


def test_label_sets_in_the_order_asked(mini, tmp_path):
    path, _ = import_records(mini["zip"], tmp_path / "o.h5", sampling_rate=100, label_set="rhythm,form")
    got = read_all(path)
    assert got["label_set"] == "rhythm" and len(got["classes"]) == 12 and list(got["label_sets"]) == ["form"]
    assert got["labels"][:, got["classes"].index("SR")].sum() >= 1


def test_readers_carry_every_label_set(reference, mini, tmp_path):
    """imageio.open_source (used by embed, zeroshot) sees the four label sets of the signals file."""
    from ecgscan_cli.imageio import open_source

    path, _ = import_records(mini["shipped"], tmp_path / "o.h5", sampling_rate=100, label_set="all")
    src = open_source(path)
    try:
        assert src.label_set == "superclass" and src.classes == reference[100]["classes"]
        assert sorted(src.extra_label_sets) == ["form", "rhythm", "subclass"]
        classes, lab = src.extra_label_sets["form"]
        assert classes == reference[100]["label_sets"]["form"][0]
        np.testing.assert_array_equal(lab, reference[100]["label_sets"]["form"][1])
    finally:
        src.close()


@pytest.mark.slow
def test_embed_keeps_all_four_label_sets(mini, tmp_path):
    import torch

    from ecgscan_cli.checkpoint import save_checkpoint
    from ecgscan_cli.formats.embeddings import EmbeddingsFile
    from ecgscan_cli.model import build_model, tiny_config

    signals, _ = import_records(mini["shipped"], tmp_path / "s.h5", sampling_rate=100, label_set="all")
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", build_model(tiny_config(image_size=64, patch=40), load_weights=False))
    r = run("embed", ckpt, signals, "-o", tmp_path / "e.h5", "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    e = EmbeddingsFile(tmp_path / "e.h5")
    assert e.label_set == "superclass" and sorted(e.label_sets) == sorted(ALL_SETS)
    ref = read_all(signals)
    np.testing.assert_array_equal(e.label_sets["subclass"].labels, ref["label_sets"]["subclass"][1])
    assert e.label_sets["rhythm"].classes == ref["label_sets"]["rhythm"][0]


def test_archive_with_worker_processes_and_limit(mini, reference, tmp_path):
    path, stats = import_records(mini["shipped"], tmp_path / "w.h5", sampling_rate=100, label_set="all", workers=2)
    assert stats.imported == N_RECORDS
    assert_same_import(read_all(path), reference[100])
    # --limit takes the CSV's first rows even when the archive holds them last
    path, stats = import_records(mini["shipped"], tmp_path / "l.h5", sampling_rate=100, limit=2)
    assert read_all(path)["ids"] == mini["ids"][:2] and stats.found == 2


def test_parse_label_sets():
    assert parse_label_sets("all", ptbxl=True) == ALL_SETS
    assert parse_label_sets("auto", ptbxl=True) == ["superclass"]
    assert parse_label_sets("all", ptbxl=False) == ["dx"]
    assert parse_label_sets(" form , rhythm", ptbxl=True) == ["form", "rhythm"]
    assert parse_label_sets("none", ptbxl=True) == []
    for spec, message in [("bogus", "unknown label set"), ("form,form", "twice"), ("none,form", "combined"),
                          ("dx", "SCP codes"), ("all,form", "unknown label set")]:
        with pytest.raises(EcgscanError, match=message):
            parse_label_sets(spec, ptbxl=True)
    with pytest.raises(EcgscanError, match="not a PTB-XL root"):
        parse_label_sets("superclass,form", ptbxl=False)


# ---------------------------------------------------------------- bad input


def test_archives_that_are_not_ptbxl(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    for archive in (make_tar(tmp_path / "x.tar.xz", junk, [junk / "notes.txt"]),
                    make_zip(tmp_path / "x.zip", junk, [junk / "notes.txt"])):
        r = run("import", archive, "-o", tmp_path / "o.h5")
        assert r.exit_code == 2 and one_error_line(r), r.output
        assert "not a PTB-XL archive" in r.stderr
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(b"\xfd7zXZ\x00 not really xz")
    r = run("import", broken, "-o", tmp_path / "o.h5")
    assert r.exit_code == 2 and one_error_line(r) and "cannot read archive" in r.stderr
    assert not (tmp_path / "o.h5").exists()


def test_ptbxl_archive_without_records(ptbxl_dir, mini, tmp_path):
    """CSVs but no record files (or only others): one line, exit 2, no output."""
    src = tmp_path / "csvonly"
    write_csv(ptbxl_dir, src, [1, 2])
    csvs = [src / "ptbxl_database.csv", src / "scp_statements.csv"]
    archive = make_zip(tmp_path / "csvonly.zip", src, csvs, prefix="ptbxl/")
    r = run("import", archive, "-r", "100", "-o", tmp_path / "o.h5")
    assert r.exit_code == 2 and one_error_line(r), r.output
    assert "holds none of the records listed" in r.stderr and "no WFDB header" in r.stderr
    # a folder with the CSVs and neither records100/ nor an archive
    r = run("import", src, "-r", "100", "-o", tmp_path / "o.h5")
    assert r.exit_code == 2 and one_error_line(r) and "no records100/ folder and no archive" in r.stderr
    assert not (tmp_path / "o.h5").exists()


def test_csv_rows_missing_from_the_archive_are_counted(ptbxl_dir, mini, reference, tmp_path):
    shipped = tmp_path / "shipped"
    extra = [{"ecg_id": i, "report": "gone", "scp_codes": "{'NORM': 100.0}", "strat_fold": 1,
              "filename_lr": f"records100/90000/{i}_lr", "filename_hr": f"records500/90000/{i}_hr"}
             for i in (90001, 90002)]
    write_csv(ptbxl_dir, shipped, [int(i) for i in mini["ids"]], extra)
    shutil.copy(mini["shipped"] / "records100-mini.tar.xz", shipped)
    out = tmp_path / "o.h5"
    r = run("import", shipped, "-r", "100", "-o", out)
    assert r.exit_code == 0, r.output
    assert "missing header" in r.stderr
    path, stats = import_records(shipped, tmp_path / "p.h5", sampling_rate=100)
    assert stats.found == N_RECORDS + 2 and stats.imported == N_RECORDS
    assert stats.skipped == {"missing header": 2}
    assert "90001_lr.hea: not in records100-mini.tar.xz" in stats.examples["missing header"]
    assert SignalsFile(path).ids == mini["ids"]
    # a header whose .dat is not in the zip
    unpacked = mini["unpacked"]
    files = [f for f in record_files(unpacked, "records100") if f.name != "00002_lr.dat"]
    archive = make_zip(tmp_path / "nodat.zip", unpacked,
                       [unpacked / "ptbxl_database.csv", unpacked / "scp_statements.csv"] + files)
    path, stats = import_records(archive, tmp_path / "q.h5", sampling_rate=100)
    assert stats.skipped == {"missing signal file": 1}
    got, ref = read_all(path), reference[100]
    keep = [k for k, i in enumerate(ref["ids"]) if i != "00002"]
    assert got["ids"] == [ref["ids"][k] for k in keep]  # the rows after the hole moved up, signals with them
    np.testing.assert_array_equal(got["signals"], ref["signals"][keep])
    np.testing.assert_array_equal(got["labels"], ref["labels"][keep])
    # when no row at all can be read: exit 2, no output
    write_csv(ptbxl_dir, tmp_path / "only-missing", [], extra)
    shutil.copy(mini["shipped"] / "records100-mini.tar.xz", tmp_path / "only-missing")
    r = run("import", tmp_path / "only-missing", "-r", "100", "-o", tmp_path / "none.h5")
    assert r.exit_code == 2 and one_error_line(r) and "holds none of the records listed" in r.stderr
    assert not (tmp_path / "none.h5").exists()


def test_sampling_rate_not_in_the_source(ptbxl_dir, mini, tmp_path):
    unpacked = mini["unpacked"]
    csvs = [unpacked / "ptbxl_database.csv", unpacked / "scp_statements.csv"]
    # an unpacked folder with records500/ only
    hr_only = tmp_path / "hr-only"
    write_csv(ptbxl_dir, hr_only, [int(i) for i in mini["ids"]])
    shutil.copytree(unpacked / "records500", hr_only / "records500")
    r = run("import", hr_only, "-r", "100", "-o", tmp_path / "o.h5")
    assert r.exit_code == 2 and one_error_line(r), r.output
    assert "only records500/" in r.stderr and "use --sampling-rate 500" in r.stderr
    # CSVs beside an archive named for 500 Hz
    named = tmp_path / "named"
    write_csv(ptbxl_dir, named, [int(i) for i in mini["ids"]])
    make_tar(named / "records500-mini.tar.xz", unpacked, record_files(unpacked, "records500"))
    r = run("import", named, "-r", "100", "-o", tmp_path / "o.h5")
    assert r.exit_code == 2 and one_error_line(r) and "use --sampling-rate 500" in r.stderr
    # a zip holding records500/ only: the message shows what it holds and what was looked for
    archive = make_zip(tmp_path / "hr.zip", unpacked, csvs + record_files(unpacked, "records500"), prefix="p/")
    r = run("import", archive, "-r", "100", "-o", tmp_path / "o.h5")
    assert r.exit_code == 2 and one_error_line(r), r.output
    assert "records500/00000/00001_hr.hea" in r.stderr and "records100/00000/00001_lr" in r.stderr
    assert not (tmp_path / "o.h5").exists()
