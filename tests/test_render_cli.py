"""`ecgscan render` and the images file: roundtrip, sidecars, bad input (one line, exit 2, nothing left)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.formats.images import ImagesFile, ImagesWriter
from ecgscan_cli.formats.signals import SignalsFile

runner = CliRunner()


def run(*args):
    return runner.invoke(app, ["render", *map(str, args)])


def one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ecgscan: error:"), result.stderr
    assert "Traceback" not in result.output


def test_images_file_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (3, 20, 30, 3), dtype=np.uint8)
    sigs = rng.normal(0, 1, (3, 12, 100)).astype(np.float32)
    sigs[1, 3, :10] = np.nan
    path = tmp_path / "im.h5"
    with ImagesWriter(path, height=20, width=30, n_samples=100, classes=["A", "B"]) as w:
        for i in range(3):
            w.append(f"r{i}", imgs[i], {"width": 30, "i": i}, signal=sigs[i], report=f"rep {i}",
                     label=[i % 2, 1], fold=i + 1)
    f = ImagesFile(path)
    assert len(f) == 3 and f.ids == ["r0", "r1", "r2"] and f.reports[2] == "rep 2"
    assert f.classes == ["A", "B"] and f.labels.tolist() == [[0, 1], [1, 1], [0, 1]]
    assert f.folds.tolist() == [1, 2, 3] and f.has_signals
    assert np.array_equal(f.image(1), imgs[1])
    assert f.layout(2) == {"width": 30, "i": 2}
    np.testing.assert_allclose(f.signal(0), sigs[0], atol=6e-4)
    assert np.isnan(f.signal(1)[3, :10]).all()
    with h5py.File(path) as h:
        assert h.attrs["ecgscan_format"] == "ecgscan-images/1"
        assert h["image"].chunks == (1, 20, 30, 3)
        assert h["signal"].attrs["units"] == "uV" and h["signal"].dtype == np.int16


def test_images_writer_interrupted_leaves_nothing(tmp_path):
    path = tmp_path / "im.h5"
    with pytest.raises(KeyboardInterrupt):
        with ImagesWriter(path, height=4, width=4, with_signals=False) as w:
            w.append("a", np.zeros((4, 4, 3), np.uint8), {})
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_render_h5_chains(random_signals_file, tmp_path):
    out = tmp_path / "pages.h5"
    r = run(random_signals_file, "-o", out, "--limit", "2", "--dpi", "60", "--quiet")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    f = ImagesFile(out)
    s = SignalsFile(random_signals_file)
    assert len(f) == 2 and f.ids == s.ids[:2] and f.classes == s.classes
    assert f.image(0).shape == (int(round(215.9 * 60 / 25.4)), int(round(279.4 * 60 / 25.4)), 3)
    np.testing.assert_allclose(f.signal(1), s.signal(1))
    meta = f.layout(0)
    assert meta["dpi"] == 60 and meta["paper_speed_mm_s"] == 25 and len(meta["leads"]) == 13


def test_render_png_folder_and_model_size(random_signals_file, tmp_path):
    out = tmp_path / "pngs"
    r = run(random_signals_file, "-o", out, "--format", "png", "--limit", "2", "--dpi", "50", "--workers", "2",
            "--augment", "light", "--seed", "1", "-q")
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["r0.json", "r0.png", "r1.json", "r1.png"]   # named after the record id
    side = json.loads((out / "r0.json").read_text())
    assert side["id"] == "r0" and side["labels"].keys() == {"A", "B"} and "leads" in side["layout"]
    out2 = tmp_path / "small.h5"
    r = run(random_signals_file, "-o", out2, "--size", "64", "--augment", "paper", "--seed", "2", "-q")
    assert r.exit_code == 0, r.output
    f = ImagesFile(out2)
    assert len(f) == 6 and f.image(0).shape == (64, 64, 3)
    assert f.layout(0)["width"] == 64
    # seeded: the same command gives the same images
    out3 = tmp_path / "small2.h5"
    assert run(random_signals_file, "-o", out3, "--size", "64", "--augment", "paper", "--seed", "2", "-q").exit_code == 0
    g = ImagesFile(out3)
    assert all(np.array_equal(f.image(i), g.image(i)) for i in range(6))


def test_render_six_row_layouts(random_signals_file, tmp_path):
    for layout, rhythm in (("6x2", []), ("3x4+3", ["V1", "II", "V5"])):
        out = tmp_path / layout
        r = run(random_signals_file, "-o", f"{out}/", "--limit", "1", "--dpi", "50", "--layout", layout, "-q")
        assert r.exit_code == 0, r.output
        leads = json.loads((out / "r0.json").read_text())["layout"]["leads"]
        assert len({round(lead["y_baseline"]) for lead in leads}) == 6
        assert [lead["lead"] for lead in leads if lead["t_end"] - lead["t_start"] > 9.9] == rhythm
        assert len(leads) == 12 + len(rhythm)


def test_render_bad_inputs(random_signals_file, tmp_path):
    before = set(tmp_path.iterdir())
    # wrong file format
    txt = tmp_path / "x.txt"
    txt.write_text("hello")
    one_line_error(run(txt, "-o", tmp_path / "o.h5"))
    # an images file is not a signals file
    # unknown layout options
    for opt in (["--paper", "legal"], ["--speed", "30"], ["--gain", "7"], ["--grid", "plaid"],
                ["--format", "tiff"], ["--augment", "extreme"], ["--dpi", "5"], ["--layout", "5x2"],
                ["--rhythm", "V7"], ["--layout", "6x2", "--rhythm", "II"], ["--rhythm", "II,V1"]):
        one_line_error(run(random_signals_file, "-o", tmp_path / "o.h5", *opt))
    # unwritable / missing output folder
    one_line_error(run(random_signals_file, "-o", tmp_path / "missing" / "o.h5"))
    # existing output without --overwrite
    existing = tmp_path / "exists.h5"
    existing.write_text("keep me")
    one_line_error(run(random_signals_file, "-o", existing))
    assert existing.read_text() == "keep me"
    # bad augment config
    cfg = tmp_path / "aug.yaml"
    cfg.write_text("wobble: {p: 1}\n")
    one_line_error(run(random_signals_file, "-o", tmp_path / "o.h5", "--augment-config", cfg))
    after = set(tmp_path.iterdir())
    assert after - before == {txt, existing, cfg}


def test_render_wrong_shape_and_nan_only_lead(tmp_path):
    from ecgscan_cli.formats import write_signals

    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as h:
        h.attrs["ecgscan_format"] = "ecgscan-signals/1"
        h["signal"] = np.zeros((2, 8, 100), np.int16)
        h["id"] = ["a", "b"]
    one_line_error(run(bad, "-o", tmp_path / "o.h5"))
    x = np.zeros((2, 12, 500), np.float32)
    x[1, 4] = np.nan
    nan_file = tmp_path / "nan.h5"
    write_signals(nan_file, x, ["ok", "hole"])
    for extra in ([], ["--format", "png"], ["--size", "32"]):
        out = tmp_path / ("o" if "--format" in extra else "o.h5")   # pages: a folder; else an .h5 file
        r = run(nan_file, "-o", out, "--dpi", "40", *extra)
        one_line_error(r)
        assert "aVL" in r.stderr
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5", "nan.h5"]
