"""Hostile and malformed inputs (issue 15, items 7-13): refused in one line, never a
traceback, a hang, a file read outside the input, or a silently wrong result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats import SignalsFile, write_signals
from ecgscan_cli.formats.common import STR_DTYPE

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None, timeout=120, env=None):
    """``python -m ecgscan_cli ARGS`` → CompletedProcess (text)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    full_env.pop("ECGSCAN_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ecgscan_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=full_env)


def one_line_error(proc, code=2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ecgscan: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def small_signals(path: Path, n: int = 3, **kw) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(-2000, 2000, size=(n, 12, 5000)) / 1000.0
    return write_signals(path, x, [f"r{i}" for i in range(n)], labels=rng.integers(0, 2, (n, 2)),
                         classes=["A", "B"], folds=list(range(1, n + 1)), **kw)


def replace_dataset(path: Path, name: str, **create_kw) -> None:
    with h5py.File(path, "a") as f:
        attrs = dict(f[name].attrs) if name in f else {}
        if name in f:
            del f[name]
        ds = f.create_dataset(name, **create_kw)
        for k, v in attrs.items():
            ds.attrs[k] = v


# --------------------------------------------------------------------------------------
# item 7: declared sizes are checked against what the file really stores


def test_signals_file_declaring_millions_of_unwritten_records_is_refused_before_reading(tmp_path):
    path = small_signals(tmp_path / "s.h5")
    n = 2_000_000  # unwritten chunks read as fill values: before the check, ~0.5 GB of empty ids
    replace_dataset(path, "signal", shape=(n, 12, 5000), dtype="int16", chunks=(1, 12, 5000), compression="gzip")
    replace_dataset(path, "id", shape=(n,), dtype=STR_DTYPE, chunks=(1024,))
    assert path.stat().st_size < 1_000_000
    with pytest.raises(EcgscanError, match=r"stores only 0 of its 2,000,000 chunks"):
        SignalsFile(path)


def test_signals_file_declaring_a_billion_records_is_refused(tmp_path):
    path = small_signals(tmp_path / "s.h5")
    replace_dataset(path, "id", shape=(10 ** 9,), maxshape=(None,), dtype=STR_DTYPE, chunks=(1024,))
    with pytest.raises(EcgscanError, match="declares 1,000,000,000 records"):
        SignalsFile(path)


def test_images_file_declaring_huge_images_is_refused(tmp_path):
    from ecgscan_cli.formats.images import ImagesFile

    path = tmp_path / "i.h5"
    with h5py.File(path, "w") as f:
        f.attrs["ecgscan_format"] = "ecgscan-images/1"
        f.create_dataset("image", shape=(12, 60000, 60000, 3), dtype="uint8", chunks=(1, 1000, 1000, 3),
                         compression="gzip")
        f.create_dataset("id", data=np.array([f"r{i}" for i in range(12)], dtype=object), dtype=STR_DTYPE)
    with pytest.raises(EcgscanError, match="60000"):
        ImagesFile(path)


def test_images_file_with_unwritten_images_is_refused(tmp_path):
    from ecgscan_cli.formats.images import ImagesFile

    path = tmp_path / "i.h5"
    with h5py.File(path, "w") as f:
        f.attrs["ecgscan_format"] = "ecgscan-images/1"
        f.create_dataset("image", shape=(12, 4000, 4000, 3), dtype="uint8", chunks=(1, 4000, 4000, 3))
        f.create_dataset("id", data=np.array([f"r{i}" for i in range(12)], dtype=object), dtype=STR_DTYPE)
    with pytest.raises(EcgscanError, match="stores only 0 of its 12 chunks"):
        ImagesFile(path)


def test_dataset_stored_in_another_file_is_refused(tmp_path):
    """HDF5 external storage would read any file of the system (here /etc/hostname-like)."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x01\x00" * 60000 * 3)
    path = small_signals(tmp_path / "s.h5")
    with h5py.File(path, "a") as f:
        del f["signal"]
        f.create_dataset("signal", shape=(3, 12, 5000), dtype="<i2", external=[(str(secret), 0, 360000)])
    with pytest.raises(EcgscanError, match="outside the file"):
        SignalsFile(path)


# --------------------------------------------------------------------------------------
# item 10: malformed files are one-line errors


def test_zero_record_file_from_signals_writer_is_one_line_error(tmp_path):
    from ecgscan_cli.formats import SignalsWriter

    path = tmp_path / "empty.h5"
    with SignalsWriter(path):
        pass
    with pytest.raises(EcgscanError, match="holds no records"):
        SignalsFile(path)
    err = one_line_error(run_cli("snr-check", path))
    assert "holds no records" in err


@pytest.mark.parametrize("fs", [0.0, float("nan"), float("inf"), "fast", -500.0])
def test_bad_sampling_rate_attribute_is_refused(tmp_path, fs):
    path = small_signals(tmp_path / "s.h5")
    with h5py.File(path, "a") as f:
        f["signal"].attrs["fs"] = fs
    with pytest.raises(EcgscanError, match="sampling rate fs="):
        SignalsFile(path)


def test_signal_of_strings_is_refused(tmp_path):
    path = small_signals(tmp_path / "s.h5")
    data = np.array([[["x"] * 10] * 12] * 3, dtype=object)
    replace_dataset(path, "signal", data=data, dtype=STR_DTYPE)
    with pytest.raises(EcgscanError, match="expected numbers"):
        SignalsFile(path)


def test_fewer_ids_than_records_is_refused(tmp_path):
    path = small_signals(tmp_path / "s.h5")
    replace_dataset(path, "id", data=np.array(["r0", "r1"], dtype=object), dtype=STR_DTYPE)
    with pytest.raises(EcgscanError, match=r"/id has shape \(2,\), expected \[3\]"):
        SignalsFile(path)


def test_label_with_wrong_row_count_is_refused(tmp_path):
    path = small_signals(tmp_path / "s.h5")
    replace_dataset(path, "label", data=np.ones((5, 2), np.uint8))
    with pytest.raises(EcgscanError, match="/label has shape"):
        SignalsFile(path)


def test_zero_by_zero_images_are_refused(tmp_path):
    from ecgscan_cli.formats.images import ImagesFile

    path = tmp_path / "i.h5"
    with h5py.File(path, "w") as f:
        f.attrs["ecgscan_format"] = "ecgscan-images/1"
        f.create_dataset("image", shape=(2, 0, 0, 3), dtype="uint8")
        f.create_dataset("id", data=np.array(["a", "b"], dtype=object), dtype=STR_DTYPE)
    with pytest.raises(EcgscanError, match="0×0 pixels"):
        ImagesFile(path)


# --------------------------------------------------------------------------------------
# item 11: no silently wrong results


def test_float_millivolt_signal_is_read_as_millivolts(tmp_path):
    path = small_signals(tmp_path / "s.h5")
    truth = SignalsFile(path).signals()
    with h5py.File(path, "a") as f:
        attrs = dict(f["signal"].attrs)
        del f["signal"]
        ds = f.create_dataset("signal", data=truth.astype(np.float32))
        for k, v in attrs.items():
            if k != "units":
                ds.attrs[k] = v    # float data without units: millivolts, not µV
    got = SignalsFile(path).signals()
    assert np.allclose(got, truth, atol=1e-6) and np.abs(got).max() > 1.0
    with h5py.File(path, "a") as f:
        f["signal"].attrs["units"] = "furlongs"
    with pytest.raises(EcgscanError, match="units 'furlongs'"):
        SignalsFile(path)


def _images_file(path: Path, images: np.ndarray, ids) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["ecgscan_format"] = "ecgscan-images/1"
        f.create_dataset("image", data=images, chunks=(1, *images.shape[1:]))
        f.create_dataset("id", data=np.array(ids, dtype=object), dtype=STR_DTYPE)
    return path


def test_images_file_with_fewer_ids_than_images_is_refused(tmp_path):
    from ecgscan_cli.formats.images import ImagesFile

    path = _images_file(tmp_path / "i.h5", np.zeros((12, 8, 8, 3), np.uint8), ["only-one"])
    with pytest.raises(EcgscanError, match=r"/id has shape \(1,\), expected \[12\]"):
        ImagesFile(path)


def test_float_and_rgba_images_are_converted_not_cast(tmp_path):
    from ecgscan_cli.formats.images import ImagesFile

    floats = np.full((2, 4, 4, 3), 0.5, np.float32)
    f = ImagesFile(_images_file(tmp_path / "f.h5", floats, ["a", "b"]))
    img = f.image(0)
    assert img.dtype == np.uint8 and img.shape == (4, 4, 3) and (img == 128).all()
    rgba = np.zeros((1, 4, 4, 4), np.uint8)
    rgba[0, :, :2, 3] = 255          # left half opaque black, right half transparent → white paper
    g = ImagesFile(_images_file(tmp_path / "a.h5", rgba, ["a"]))
    img = g.image(0)
    assert img.shape == (4, 4, 3) and (img[:, :2] == 0).all() and (img[:, 2:] == 255).all()
    bad = ImagesFile(_images_file(tmp_path / "b.h5", np.full((1, 4, 4, 3), 200.0, np.float32), ["a"]))
    with pytest.raises(EcgscanError, match=r"expected \[0, 1\]"):
        bad.image(0)


# --------------------------------------------------------------------------------------
# items 8, 9, 11: WFDB headers, special files, the import summary


def wfdb_record(folder: Path, name: str, seconds: float = 10.0, fs: int = 500) -> Path:
    import wfdb

    from ecgscan_cli.leads import LEADS

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * fs)) / fs
    sig = np.stack([0.5 * np.sin(2 * np.pi * (1 + k / 10) * t) for k in range(12)], axis=1)
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 12, sig_name=list(LEADS), p_signal=sig, fmt=["16"] * 12,
                write_dir=str(folder))
    return folder / f"{name}.hea"


def rename_signal_file(header: Path, new_name: str) -> None:
    lines = header.read_text().splitlines()
    old = lines[1].split()[0]
    header.write_text("\n".join([lines[0]] + [ln.replace(old, new_name, 1) for ln in lines[1:]]) + "\n")


@pytest.mark.parametrize("target", ["../outside.dat", "ABSOLUTE"])
def test_header_naming_a_file_outside_its_folder_is_skipped(tmp_path, target):
    from ecgscan_cli.importing import import_records

    folder = tmp_path / "db"
    wfdb_record(folder, "good")
    bad = wfdb_record(folder, "bad")
    outside = tmp_path / "outside.dat"
    (folder / "bad.dat").rename(outside)          # a valid signal file, but not the record's to read
    rename_signal_file(bad, str(outside) if target == "ABSOLUTE" else target)
    path, stats = import_records(folder, tmp_path / "out.h5", label_set="none", workers=1)
    assert stats.imported == 1 and SignalsFile(path).ids == ["good"]
    assert stats.skipped == {"signal file outside the record's folder": 1}
    assert stats.skipped_names["signal file outside the record's folder"] == ["bad"]


def test_fifo_named_hea_is_skipped_not_read(tmp_path):
    folder = tmp_path / "db"
    wfdb_record(folder, "good")
    os.mkfifo(folder / "x.hea")
    out = tmp_path / "out.h5"
    proc = run_cli("import", folder, "-o", out, "--labels", "none", "-j", "1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "not a regular file" in proc.stderr
    assert SignalsFile(out).ids == ["good"]


def test_fifo_signals_file_is_refused_not_read(tmp_path):
    fifo = tmp_path / "x.h5"
    os.mkfifo(fifo)
    err = one_line_error(run_cli("snr-check", fifo, timeout=60))
    assert "not a regular file" in err


def test_fifo_named_png_in_an_image_folder_is_skipped_with_a_reason(tmp_path):
    from PIL import Image

    from ecgscan_cli.imageio import open_source

    Image.new("RGB", (20, 10), "white").save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    source = open_source(tmp_path)
    assert source.ids == ["a"]
    assert len(source.skipped) == 1 and "not a regular file" in source.skipped[0][1]


def test_cropped_and_header_shorter_records_are_counted_in_the_summary(tmp_path):
    from ecgscan_cli.importing import import_records

    folder = tmp_path / "db"
    wfdb_record(folder, "long", seconds=60)
    short = wfdb_record(folder, "lying", seconds=20)
    lines = short.read_text().splitlines()
    rec = lines[0].split()
    rec[3] = "2500"                                  # 5 s announced, 20 s in the file
    short.write_text("\n".join([" ".join(rec)] + lines[1:]) + "\n")
    path, stats = import_records(folder, tmp_path / "out.h5", label_set="none", workers=1)
    rows = {r["item"]: r["count"] for r in stats.rows()}
    assert stats.imported == 2
    assert rows["cropped to the first 10 s"] == 1
    assert rows["header shorter than its signal file"] == 1
    assert rows["padded to 10 s"] == 1               # read as the header says: 5 s, then padded


def test_verbose_import_lists_every_skipped_record(tmp_path):
    folder = tmp_path / "db"
    wfdb_record(folder, "good")
    for k in range(5):
        (folder / f"broken{k}.hea").write_text("this is not a header\n")
    proc = run_cli("import", folder, "-o", tmp_path / "out.h5", "--labels", "none", "-j", "1", "--verbose")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("skipped: unreadable header"))
    assert all(f"broken{k}" in line for k in range(5)), line


# --------------------------------------------------------------------------------------
# item 12: argument bounds, checked before any work


@pytest.mark.parametrize("args, option", [
    (["synth", "-n", "99999999999999999999"], "--n-records"),
    (["synth", "--seed", "-1"], "--seed"),
    (["synth", "--seed", "100000000000000000000000"], "--seed"),
    (["synth", "--noise", "inf"], "--noise"),
    (["probe", "EMB", "--bootstrap", "1000000000"], "--bootstrap"),
    (["probe", "EMB", "--epochs", "1000000000"], "--epochs"),
    (["snr-check", "EMB", "-j", "100000"], "--workers"),
    (["import", "EMB", "-j", "100000", "-o", "OUT"], "--workers"),
])
def test_out_of_range_arguments_are_one_line_errors(tmp_path, args, option):
    args = [str(tmp_path / "e.h5") if a == "EMB" else str(tmp_path / "o.h5") if a == "OUT" else a for a in args]
    if args[0] == "synth":
        args += ["-o", str(tmp_path / "s.h5")]
    err = one_line_error(run_cli(*args, "-q"))
    assert option in err
    assert not list(tmp_path.iterdir())


def test_synth_library_refuses_infinite_noise(tmp_path):
    from ecgscan_cli.synth import write_synth

    with pytest.raises(EcgscanError, match="noise"):
        write_synth(tmp_path / "s.h5", 2, noise=float("inf"))
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------
# item 13: escaped messages, quiet warnings


def test_terminal_escape_sequences_in_file_names_are_escaped(tmp_path):
    name = tmp_path / "\x1b]0;owned\x07\x1b[31mred.h5"
    proc = run_cli("snr-check", name)
    err = one_line_error(proc)
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert "\\x1b[31mred.h5" in err


def test_quiet_silences_python_warnings(tmp_path):
    code = ("import warnings; from ecgscan_cli.cli.common import setup_logging; setup_logging({q}); "
            "warnings.warn('noisy library', UserWarning)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    loud = subprocess.run([sys.executable, "-c", code.format(q=False)], capture_output=True, text=True, env=env)
    quiet = subprocess.run([sys.executable, "-c", code.format(q=True)], capture_output=True, text=True, env=env)
    assert "noisy library" in loud.stderr
    assert quiet.stderr == ""


# --------------------------------------------------------------------------------------
# item 13: reconstruct's outputs (names, all committed together)


HOSTILE_IDS = ["-", "-rf", "a/b", "a b", "a_b", "A_B", "x" * 5000, "\x1b[31mred", "..", "", "é", "a_b_2"]


def test_reconstruct_writes_one_safe_distinct_file_per_id(tiny_checkpoint, tmp_path, one_thread):
    images = _images_file(tmp_path / "in.h5", np.full((12, 64, 64, 3), 255, np.uint8), HOSTILE_IDS)
    from typer.testing import CliRunner

    from ecgscan_cli.cli.app import app

    out, wf, ov = tmp_path / "r.h5", tmp_path / "wfdb", tmp_path / "ov"
    r = CliRunner().invoke(app, ["reconstruct", str(tiny_checkpoint), str(images), "-o", str(out), "--wfdb", str(wf),
                                 "--overlay", str(ov), "--overlays", "12", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert SignalsFile(out).ids == HOSTILE_IDS
    pngs = sorted(p.name for p in ov.glob("*.png"))
    heas = sorted(p.name for p in wf.glob("*.hea"))
    assert len(pngs) == 12 and len(heas) == 12
    for name in pngs + heas:
        assert not name.startswith("-") and len(name) <= 90, name
        assert all(c.isalnum() or c in "_-." for c in name), name
    assert len({n.lower() for n in pngs}) == 12


def test_reconstruct_failure_in_the_last_output_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch, one_thread):
    import errno

    from ecgscan_cli import reconstruct as R

    images = _images_file(tmp_path / "in.h5", np.full((2, 64, 64, 3), 255, np.uint8), ["a", "b"])

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(R, "overlay_plot", disk_full)
    out_dir = tmp_path / "outs"
    out_dir.mkdir()
    with pytest.raises((OSError, EcgscanError)):
        R.reconstruct_to_file(tiny_checkpoint, images, out_dir / "r.h5", wfdb_dir=out_dir / "wfdb",
                              overlay_dir=out_dir / "ov", device="cpu")
    assert sorted(p.name for p in out_dir.iterdir()) == []


class _Evil:
    def __reduce__(self):
        return (print, ("PWNED",))


def test_pickled_text_encoder_weights_are_a_one_line_error(tiny_checkpoint, tmp_path):
    import pickle
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    text = ckpt / "text_encoder"
    for p in text.glob("*.safetensors"):
        p.unlink()
    (text / "pytorch_model.bin").write_bytes(pickle.dumps(_Evil()))
    signals = small_signals(tmp_path / "s.h5")
    proc = run_cli("embed", ckpt, signals, "-o", tmp_path / "e.h5", "--device", "cpu", "-q", timeout=300)
    err = one_line_error(proc)
    assert "weights are a pickle" in err and "PWNED" not in proc.stdout + proc.stderr
    assert not (tmp_path / "e.h5").exists()


# --------------------------------------------------------------------------------------
# gaps found by benchmarks/attack_inputs.py: items 6, 9 and 12 through the command line


def test_fifo_named_hea_is_skipped_by_snr_check_too(tmp_path):
    """Item 9 names snr-check beside import: a FIFO among the headers must not block it."""
    folder = tmp_path / "db"
    wfdb_record(folder, "good")
    os.mkfifo(folder / "x.hea")
    proc = run_cli("snr-check", folder, "-f", "csv", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "not a regular file" in proc.stderr
    header, *rows = [ln.split(",") for ln in proc.stdout.splitlines() if ln.strip()]
    assert header[0] == "lead" and header[-1] == "n"
    assert rows and all(row[-1] == "1" for row in rows), rows   # the one real record, scored


def test_bootstrap_written_in_exponent_form_is_one_line(tmp_path):
    """`--bootstrap 1e9` (the issue's spelling) is not an integer: one line, nothing written."""
    err = one_line_error(run_cli("probe", tmp_path / "e.h5", "--bootstrap", "1e9", "-q"))
    assert "--bootstrap" in err
    assert not list(tmp_path.iterdir())


def test_unknown_image_model_is_refused_before_any_work(tmp_path):
    """Item 12: before, `--image-model ViT-Nope` failed after the teacher stage (103 s) and
    left a run folder; now it is refused before the output or the teacher is touched."""
    from ecgscan_cli.synth import write_synth

    signals = write_synth(tmp_path / "s.h5", 24, seed=3)
    proc = run_cli("pretrain", signals, "-o", tmp_path / "run", "--preset", "tiny", "--text-model", "tiny",
                   "--max-steps", "2", "--set", "teacher_steps=2", "--batch-size", "8", "--set", "num_workers=0",
                   "--device", "cpu", "--image-model", "ViT-Nope", timeout=300)
    err = one_line_error(proc)
    assert "unknown image model 'ViT-Nope'" in err
    assert "teacher" not in proc.stderr          # not a single teacher step was run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]
