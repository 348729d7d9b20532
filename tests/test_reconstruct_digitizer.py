"""`ecgscan reconstruct` with the digitiser: inputs, outputs (signals file, WFDB with NaN,
overlays), method choices, and bad input skipped in one line while the rest is reconstructed.

Most tests run a stand-in digitiser (``fake``) whose output is a known function of the image
(the fraction of dark pixels), so that every record can be checked against its own file.
The tests marked ``real`` run the weights shipped in the package, when present.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.signals import SignalsFile
from ecgscan_cli.leads import LEADS

REPO = Path(__file__).resolve().parents[1]
GRID_ROWS = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


class FakeDigitizeError(EcgscanError):
    """Stands for digitize.pipeline.DigitizeError (an EcgscanError)."""


BLUE, GREEN, RED = (0, 0, 255), (0, 255, 0), (255, 0, 0)   # corner markers: unknown layout, a bug, Ctrl-C


def fake_digitize(image, net=None, *, method="net", refine=True, printout=None, restorer=None, refine_side=None):
    """3×4 + II layout: lead k shows its 2.5-s column, II the whole 10 s; every shown sample
    is (dark-pixel fraction) × (k + 1) mV. Rows in render-sidecar form (pixels of ``image``)."""
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    fake_digitize.calls.append((image.shape, method, net))
    fake_digitize.refine.append(refine)
    fake_digitize.printouts.append(printout)
    fake_digitize.restorers.append(restorer)
    fake_digitize.refine_sides.append(refine_side)
    corner = tuple(int(v) for v in image[0, 0])
    if corner == BLUE:
        raise FakeDigitizeError("unknown layout (6 rows of traces)")
    if corner == GREEN:
        raise IndexError("index 7 is out of bounds for axis 0 with size 7")
    if corner == RED:
        raise KeyboardInterrupt
    dark = image.mean(-1) < 100
    if not dark.any():
        raise FakeDigitizeError("no ECG trace found")
    if dark.all():
        raise FakeDigitizeError("grid not found")
    level = float(dark.mean())
    h, w = image.shape[:2]
    sig = np.full((12, 5000), np.nan, np.float32)
    rows = []
    for r, names in enumerate(GRID_ROWS):
        for c, name in enumerate(names):
            k = LEADS.index(name)
            sig[k, 1250 * c:1250 * (c + 1)] = level * (k + 1)
            rows.append({"lead": name, "t_start": 2.5 * c, "t_end": 2.5 * (c + 1), "x_start": w * c / 4,
                         "x_end": w * (c + 1) / 4, "y_baseline": h * (r + 1) / 5})
    sig[1] = level * 2
    rows.append({"lead": "II", "t_start": 0.0, "t_end": 10.0, "x_start": 0.0, "x_end": float(w),
                 "y_baseline": h * 4 / 5})
    # a darker page "wins" the second reading at the image's resolution and was levelled
    # first (for the summary lines)
    reading = "refined" if refine and level >= 0.5 else "working"
    return types.SimpleNamespace(signal=sig, fs=500.0, layout="3x4+II", px_per_mm=(w / 280, h / 200),
                                 rotation_deg=0.0, rows=rows, reading=reading, tilt_deg=-25.0 if level >= 0.5 else 0.0)


def expected(level: float) -> np.ndarray:
    return fake_digitize(_page(level), None).signal


@pytest.fixture
def fake(monkeypatch):
    """The digitiser interface (digitize.image) replaced by :func:`fake_digitize`."""
    loaded = []
    mod = types.ModuleType("ecgscan_cli.digitize.image")
    mod.load_digitizer = lambda weights=None, device="cpu": loaded.append((weights, device)) or "NET"
    mod.digitize_image = fake_digitize
    fake_digitize.calls = []
    fake_digitize.refine = []
    fake_digitize.printouts = []
    fake_digitize.restorers = []
    fake_digitize.refine_sides = []
    monkeypatch.setitem(sys.modules, "ecgscan_cli.digitize.image", mod)
    return types.SimpleNamespace(loaded=loaded, calls=fake_digitize.calls)


def _page(level: float, h: int = 200, w: int = 300, corner=None) -> np.ndarray:
    """A white page whose top ``level`` fraction of rows is black (dark fraction = level)."""
    img = np.full((h, w, 3), 255, np.uint8)
    img[: int(round(level * h))] = 0
    if corner is not None:
        img[0, 0] = corner
    return img


def _save(path: Path, img: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kw)
    return path


# ------------------------------------------------------------------ the happy path


def test_default_method_is_the_digitizer_and_records_are_named_after_files(fake, tmp_path):
    scans = tmp_path / "scans"
    _save(scans / "a.png", _page(0.1))
    _save(scans / "sub" / "b.png", _page(0.25))
    _save(scans / "c.tif", _page(0.5))
    out = tmp_path / "recon.h5"
    r = run("reconstruct", scans, "-o", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    assert "reconstructed 3 of 3 image(s) with the digitiser" in r.stderr
    assert fake.loaded == [(None, "cpu")]                    # the shipped weights, no checkpoint
    assert [c[1:] for c in fake.calls] == [("net", "NET")] * 3
    from ecgscan_cli.digitize.restore import Restorer

    assert all(isinstance(x, Restorer) for x in fake_digitize.restorers)     # the shipped restorer
    s = SignalsFile(out)
    assert s.ids == ["a", "c", "sub/b"] and s.fs == 500.0 and s.n_samples == 5000
    for rid, level in (("a", 0.1), ("c", 0.5), ("sub/b", 0.25)):
        got = s.signal(s.ids.index(rid))
        want = expected(level)
        assert np.array_equal(np.isnan(got), np.isnan(want))          # NaN where a lead is not shown
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=1e-3)
    import h5py

    with h5py.File(out) as f:
        assert f.attrs["reconstruction_method"] == "digitizer"


def test_second_readings_are_counted_and_quick_skips_them(fake, tmp_path):
    scans = tmp_path / "scans"
    _save(scans / "a.png", _page(0.1))
    _save(scans / "b.png", _page(0.5))
    r = run("reconstruct", scans, "-o", tmp_path / "full.h5", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert fake_digitize.refine == [True, True]
    flat = " ".join(r.stderr.split())        # the log wraps long lines
    assert ("second readings kept (a sharp image read finer, or the limb-lead relations agreed better): "
            "read at the image's resolution 1") in flat
    assert "layouts: 3x4+II 2" in flat          # (the stand-in's own layout name)
    assert "pages whose rows tilted beyond 15° (levelled before reading): 1" in flat
    fake_digitize.refine.clear()
    r = run("reconstruct", scans, "-o", tmp_path / "quick.h5", "--device", "cpu", "--quick")
    assert r.exit_code == 0, r.output
    assert fake_digitize.refine == [False, False] and "second readings" not in r.stderr
    assert np.array_equal(SignalsFile(tmp_path / "full.h5").signal(0), SignalsFile(tmp_path / "quick.h5").signal(0),
                          equal_nan=True)


def test_weights_and_classical_method_reach_the_digitizer(fake, tmp_path):
    scans = tmp_path / "scans"
    _save(scans / "a.png", _page(0.1))
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"stand-in")
    r = run("reconstruct", scans, "-o", tmp_path / "w.h5", "--weights", weights, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    assert fake.loaded == [(str(weights), "cpu")]
    r = run("reconstruct", scans, "-o", tmp_path / "c.h5", "--method", "classical", "-q")
    assert r.exit_code == 0, r.output
    assert len(fake.loaded) == 1 and fake.calls[-1][1:] == ("classical", None)   # no network loaded


def test_large_photo_reaches_the_digitizer_shrunk(fake, tmp_path):
    from ecgscan_cli.reconstruct import DIGITIZE_MAX_SIDE

    img = np.full((3000, 4000, 3), 255, np.uint8)
    img[:600] = 0
    _save(tmp_path / "photo.jpg", img, quality=92)
    r = run("reconstruct", tmp_path / "photo.jpg", "-o", tmp_path / "p.h5", "-q")
    assert r.exit_code == 0, r.output
    assert fake.calls[0][0] == (DIGITIZE_MAX_SIDE * 3 // 4, DIGITIZE_MAX_SIDE, 3)
    np.testing.assert_allclose(SignalsFile(tmp_path / "p.h5").signal(0)[1], 0.2 * 2, atol=0.01)


def test_max_side_decodes_and_reads_a_large_image_finer(fake, tmp_path):
    from ecgscan_cli.reconstruct import DIGITIZE_MAX_SIDE

    img = np.full((2550, 3300, 3), 255, np.uint8)        # a 300-dpi letter scan
    img[:500] = 0
    _save(tmp_path / "scan.png", img)
    r = run("reconstruct", tmp_path / "scan.png", "-o", tmp_path / "a.h5", "-q")
    assert r.exit_code == 0, r.output
    r = run("reconstruct", tmp_path / "scan.png", "-o", tmp_path / "b.h5", "-q", "--max-side", "3400")
    assert r.exit_code == 0, r.output
    assert [c[0] for c in fake.calls] == [(1855, DIGITIZE_MAX_SIDE, 3), (2550, 3300, 3)]
    assert fake_digitize.refine_sides == [DIGITIZE_MAX_SIDE, 3400]
    for bad in ("500", "9000"):
        r = run("reconstruct", tmp_path / "scan.png", "-o", tmp_path / "c.h5", "--max-side", bad)
        assert r.exit_code == 2 and "--max-side" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "c.h5").exists()


def test_images_file_input_scores_against_its_signals(fake, tmp_path):
    from ecgscan_cli.formats.images import ImagesWriter

    path = tmp_path / "pages.h5"
    truths = [expected(0.1), expected(0.3)]
    with ImagesWriter(path, height=200, width=300, with_signals=True) as w:
        for rid, level, truth in (("rec1", 0.1, truths[0]), ("rec2", 0.3, truths[1])):
            w.append(rid, _page(level), {}, signal=np.nan_to_num(truth))
    r = run("reconstruct", path, "-o", tmp_path / "r.h5", "--overlays", tmp_path / "ov")
    assert r.exit_code == 0, r.output
    assert SignalsFile(tmp_path / "r.h5").ids == ["rec1", "rec2"]
    assert "mean SNR vs ground truth:" in r.stderr
    assert sorted(p.name for p in (tmp_path / "ov").glob("*.png")) == ["rec1.png", "rec2.png"]


def test_signals_file_input_is_drawn_as_pages_then_digitized(fake, random_signals_file, tmp_path):
    from ecgscan_cli.reconstruct import DIGITIZE_MAX_SIDE

    r = run("reconstruct", random_signals_file, "-o", tmp_path / "r.h5")
    assert r.exit_code == 0, r.output
    s = SignalsFile(tmp_path / "r.h5")
    assert s.ids == [f"r{i}" for i in range(6)] and s.classes == ["A", "B"] and s.folds.tolist() == [1, 2, 3, 4, 5, 6]
    shapes = {c[0] for c in fake.calls}
    assert len(shapes) == 1 and max(shapes.pop()[:2]) == min(2200, DIGITIZE_MAX_SIDE)   # whole 200-dpi pages (2200 px)
    assert "mean SNR vs ground truth:" in r.stderr


# ------------------------------------------------------------------ outputs


def test_each_page_is_told_how_far_its_limb_leads_agree(monkeypatch, tmp_path):
    """The output says, per page, how far the reading breaks Einthoven's and Goldberger's
    relations (signals file, WFDB header, a warning naming the poor pages)."""
    import h5py
    import wfdb

    from ecgscan_cli.digitize.consistency import lead_relation_residual
    from ecgscan_cli.render.layout import as_shown
    from ecgscan_cli.synth import synthesize

    shown = as_shown(synthesize(1, seed=3).signals[0].astype(np.float64)).astype(np.float32)
    misread = shown.copy()
    misread[LEADS.index("III")] *= -1            # a lead read upside down
    flat = np.where(np.isnan(shown), np.nan, 0.5).astype(np.float32)   # nothing to check
    by_level = {10: shown, 30: misread, 50: flat}

    def digitize(image, net=None, *, method="net", refine=True, printout=None, restorer=None, refine_side=None):
        sig = by_level[int(round(100 * (image.mean(-1) < 100).mean()))]
        return types.SimpleNamespace(signal=sig, fs=500.0, layout="3x4+II", px_per_mm=(1.0, 1.0),
                                     rotation_deg=0.0, rows=[], reading="working")

    mod = types.ModuleType("ecgscan_cli.digitize.image")
    mod.load_digitizer = lambda weights=None, device="cpu": "NET"
    mod.digitize_image = digitize
    monkeypatch.setitem(sys.modules, "ecgscan_cli.digitize.image", mod)
    scans = tmp_path / "scans"
    for name, level in (("good", 0.1), ("misread", 0.3), ("flat", 0.5)):
        _save(scans / f"{name}.png", _page(level))
    out, wf = tmp_path / "r.h5", tmp_path / "wfdb"
    r = run("reconstruct", scans, "-o", out, "--wfdb", wf)
    assert r.exit_code == 0, r.output
    err = " ".join(r.stderr.split())
    assert "reading quality (limb-lead relations, /digitizer/quality in the output): good 1, poor 1, unknown 1" in err
    joined = "".join(err.split())            # (the console wraps long paths)
    assert "1 page(s) read poorly" in err and "misread.png" in joined.split("readpoorly")[1]
    assert "good.png" not in joined.split("readpoorly")[1]
    s = SignalsFile(out)
    with h5py.File(out) as f:
        quality = dict(zip(s.ids, (q.decode() for q in f["digitizer/quality"][()])))
        residual = dict(zip(s.ids, f["digitizer/lead_residual"][()]))
    assert quality == {"good": "good", "misread": "poor", "flat": "unknown"}
    assert np.isnan(residual["flat"])
    for rid in ("good", "misread"):      # a function of the stored signal: anyone can recompute it
        assert residual[rid] == pytest.approx(lead_relation_residual(s.signal(s.ids.index(rid))), rel=1e-3)
    assert residual["good"] < 1e-3 and residual["misread"] > 1.0
    assert wfdb.rdheader(str(wf / "misread")).comments == [
        f"ecgscan reading quality: poor (limb-lead residual {residual['misread']:.3f})"]
    assert wfdb.rdheader(str(wf / "flat")).comments == ["ecgscan reading quality: unknown"]
    # with some true signals, snr-check says how each band scored
    from ecgscan_cli.formats import write_signals

    noise = np.random.default_rng(0).normal(0, 0.005, shown.shape)           # (an exact match scores +inf)
    truth = np.stack([np.where(np.isnan(shown), 0.0, shown) + noise] * 3)
    write_signals(tmp_path / "truth.h5", truth, ["good", "misread", "flat"])
    r = run("snr-check", out, "--reference", tmp_path / "truth.h5", "--shown-only", "-f", "json")
    assert r.exit_code == 0, r.output
    line = " ".join(r.stderr.split())
    good = float(line.split("good ")[1].split(" dB")[0])
    poor = float(line.split("poor ")[1].split(" dB")[0])
    assert "mean SNR by reading quality" in line and "(1 record)" in line
    assert good > 25 and poor < good - 2, line            # the misread page's III (1 lead of 12) is inverted


def test_wfdb_keeps_nan_as_the_invalid_sample(tmp_path):
    import wfdb

    from ecgscan_cli.reconstruct import write_wfdb

    rng = np.random.default_rng(0)
    sig = rng.normal(0, 0.8, (2, 12, 5000)).astype(np.float32)
    sig[0, 3, :1250] = np.nan          # a stretch not shown
    sig[0, 5] = np.nan                 # a lead not shown at all (wfdb's own scaling fails on it)
    write_wfdb(tmp_path, ["a", "b"], sig, 500.0)
    for j, name in enumerate(["a", "b"]):
        rec = wfdb.rdrecord(str(tmp_path / name))
        back = rec.p_signal.T
        assert rec.sig_name == list(LEADS) and rec.fs == 500 and rec.units == ["mV"] * 12
        assert np.array_equal(np.isnan(back), np.isnan(sig[j]))
        np.testing.assert_allclose(back[~np.isnan(back)], sig[j][~np.isnan(sig[j])], atol=5e-4 + 1e-6)
    raw = wfdb.rdrecord(str(tmp_path / "a"), physical=False).d_signal
    assert (raw[:, 5] == -32768).all() and (raw[:1250, 3] == -32768).all()


def test_cli_writes_wfdb_with_nan_and_overlays_with_the_image(fake, tmp_path):
    import wfdb

    scans = tmp_path / "scans"
    for k in range(3):
        _save(scans / f"p{k}.png", _page(0.1 * (k + 1)))
    out, wf, ov = tmp_path / "r.h5", tmp_path / "wfdb", tmp_path / "ov"
    r = run("reconstruct", scans, "-o", out, "--wfdb", wf, "--overlays", ov, "--max-overlays", "2", "-q")
    assert r.exit_code == 0, r.output
    s = SignalsFile(out)
    rec = wfdb.rdrecord(str(wf / "p1"))
    assert np.array_equal(np.isnan(rec.p_signal.T), np.isnan(s.signal(1)))
    np.testing.assert_allclose(np.nan_to_num(rec.p_signal.T), np.nan_to_num(s.signal(1)), atol=1e-6)
    pngs = sorted(ov.glob("*.png"))
    assert [p.name for p in pngs] == ["p0.png", "p1.png"]
    with_image = Image.open(pngs[0]).size
    # the decoder's overlay (no image) is 14×10 in at 90 dpi; the image adds its height on top
    assert with_image[0] == 14 * 90 and with_image[1] > 10 * 90 + 14 * 90 * 200 / 300 * 0.9


def test_trace_paths_put_samples_where_the_rows_say():
    from ecgscan_cli.reconstruct import trace_paths

    sig = np.full((12, 5000), np.nan, np.float32)
    sig[0, :1250] = np.linspace(-1, 1, 1250)
    sig[4, 2500:3750] = 0.5
    d = types.SimpleNamespace(fs=500.0, px_per_mm=(4.0, 5.0), rows=[
        {"y_baseline": 100.0, "leads": [{"lead": "I", "t_start": 0.0, "t_end": 2.5, "x_start": 10.0, "x_end": 260.0}]},
        {"lead": 4, "x_start": 500.0, "x_end": 750.0, "y_baseline": 300.0},   # no times: its shown samples
        {"lead": "XYZ", "x_start": 0, "x_end": 1, "y_baseline": 0},           # not a lead: ignored
    ])
    paths = trace_paths(d, sig)
    assert [p[0] for p in paths] == [0, 4]
    k, xs, ys = paths[0]
    assert xs[0] == 10.0 and xs[-1] == 260.0 and len(xs) == 1250
    np.testing.assert_allclose(ys[[0, -1]], [100 + 1 * 50, 100 - 1 * 50])   # 10 mm/mV × 5 px/mm
    k, xs, ys = paths[1]
    assert len(xs) == 1250 and xs[0] == 500.0 and np.allclose(ys, 300 - 0.5 * 50)


def test_trace_paths_read_the_digitizer_rows_and_undo_its_deskew():
    """Rows as digitize.pipeline writes them (y, x0, x1, px_per_mv, leads left to right, in
    deskewed working pixels) land on the page pixels they came from."""
    pytest.importorskip("ecgscan_cli.digitize.geometry")
    from ecgscan_cli.digitize.geometry import rotate_map
    from ecgscan_cli.reconstruct import to_page_pixels, trace_paths

    sig = np.full((12, 5000), np.nan, np.float32)
    sig[0, :1250] = 0.0
    sig[LEADS.index("aVR"), 1250:2500] = 1.0
    d = types.SimpleNamespace(fs=500.0, px_per_mm=(4.0, 4.0), rotation_deg=0.0, rows=[
        {"y": 100.0, "px_per_mv": 40.0, "x0": 50.0, "x1": 50.0 + 4999 / 500 * 100, "leads": ["I", "aVR", "V1", "V4"],
         "calibration": True}])
    paths = trace_paths(d, sig)
    assert [p[0] for p in paths] == [0, LEADS.index("aVR"), LEADS.index("V1"), LEADS.index("V4")]
    _, xs, ys = paths[1]                       # aVR: the second quarter, 1 mV above the baseline
    assert xs[0] == pytest.approx(50 + 2.5 * 100) and xs[-1] == pytest.approx(50 + 5.0 * 100)
    assert np.allclose(ys, 100 - 40)
    assert np.isnan(paths[2][2]).all()         # V1 has no samples: drawn as nothing
    # deskew undone: a dot at page (600, 400) found in the rotated working map maps back there
    h, w = 800, 1200
    from ecgscan_cli.digitize.image import working_size

    wh, ww = working_size(h, w)
    for angle in (6.0, -11.0):
        m = np.zeros((wh, ww), np.float32)
        y0, x0 = int(400 * wh / h), int(600 * ww / w)
        m[y0 - 2:y0 + 3, x0 - 2:x0 + 3] = 1.0
        r = rotate_map(m, angle)
        yy, xx = np.nonzero(r > 0.5 * r.max())
        px, py = to_page_pixels(np.array([xx.mean()]), np.array([yy.mean()]),
                                types.SimpleNamespace(map_shape=(wh, ww), to_image=np.diag([w / ww, h / wh, 1.0]),
                                                      rotation_deg=angle))
        assert abs(px[0] - x0 * w / ww) < 0.5 and abs(py[0] - y0 * h / wh) < 0.5, (angle, px, py)


def test_failure_in_an_output_leaves_nothing(fake, tmp_path, monkeypatch):
    import errno

    from ecgscan_cli import reconstruct as R

    scans = tmp_path / "scans"
    _save(scans / "a.png", _page(0.1))

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(R, "overlay_plot", disk_full)
    outs = tmp_path / "outs"
    outs.mkdir()
    with pytest.raises(OSError):
        R.reconstruct_to_file(None, scans, outs / "r.h5", wfdb_dir=outs / "wfdb", overlay_dir=outs / "ov",
                              device="cpu")
    assert list(outs.iterdir()) == []


def test_ctrl_c_while_digitizing_leaves_no_output(fake, tmp_path):
    scans = tmp_path / "scans"
    _save(scans / "a.png", _page(0.1))
    _save(scans / "b.png", _page(0.1, corner=RED))
    outs = tmp_path / "outs"
    outs.mkdir()
    r = run("reconstruct", scans, "-o", outs / "r.h5", "--wfdb", outs / "wfdb", "--overlays", outs / "ov")
    assert r.exit_code == 130 and "interrupted" in r.stderr, r.output
    assert list(outs.iterdir()) == []


# ------------------------------------------------------------------ bad input


def test_bad_files_are_skipped_in_one_line_and_the_rest_reconstructed(fake, tmp_path):
    scans = tmp_path / "scans"
    _save(scans / "good.png", _page(0.2))
    _save(scans / "good2.jpg", _page(0.4), quality=95)
    _save(scans / "blank.png", _page(0.0))                          # no ECG
    _save(scans / "black.png", _page(1.0))                          # no grid
    _save(scans / "six_rows.png", _page(0.3, corner=BLUE))          # unknown layout
    _save(scans / "bug.png", _page(0.3, corner=GREEN))              # the digitiser raises a bug
    _save(scans / "dot.png", np.zeros((1, 1, 3), np.uint8))         # 1×1
    full = _save(tmp_path / "full.png", _page(0.3)).read_bytes()
    (scans / "truncated.png").write_bytes(full[: len(full) // 2])
    (scans / "notanimage.jpg").write_bytes(b"\xff\xd8\xff\xe0 certainly not a JPEG")
    (scans / "report.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    (scans / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    Image.new("1", (12_000, 9_000)).save(scans / "bomb.png")        # 108 MP, a few kB on disk
    os.mkfifo(scans / "pipe.png")
    (scans / "notes.txt").write_text("not an image, not counted")
    r = run("reconstruct", scans, "-o", tmp_path / "r.h5", "--wfdb", tmp_path / "wfdb")
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert SignalsFile(tmp_path / "r.h5").ids == ["good", "good2"]
    np.testing.assert_allclose(SignalsFile(tmp_path / "r.h5").signal(0)[1], 0.4, atol=1e-3)
    reasons = {
        "blank.png": "no ECG trace found", "black.png": "grid not found", "six_rows.png": "unknown layout",
        "bug.png": "the digitiser failed (IndexError", "dot.png": "too small", "truncated.png": "cannot read image",
        "notanimage.jpg": "cannot read image", "report.pdf": "PDF is not read", "drawing.svg": "SVG is not read",
        "bomb.png": "over the limit of 100 megapixels", "pipe.png": "not a regular file",
    }
    # stderr goes through rich, which wraps long lines at the console width: compare without whitespace
    flat = "".join(r.stderr.split())
    for name, reason in reasons.items():
        assert flat.count(f"skipped{scans / name}:".replace(" ", "")) == 1, (name, r.stderr)
    assert f"{len(reasons)} image(s) skipped (reasons above)" in r.stderr
    assert f"reconstructed 2 of {2 + len(reasons)} image(s)" in r.stderr
    assert "notes.txt" not in flat
    # the reasons themselves: one line each, naming the file
    from ecgscan_cli.reconstruct import reconstruct_to_file

    _, _, summary = reconstruct_to_file(None, scans, tmp_path / "r2.h5", device="cpu")
    assert summary["n"] == 2 and summary["skipped"] == len(reasons)
    got = {Path(name).name: why for name, why in summary["skipped_reasons"]}
    assert set(got) == set(reasons)
    for name, why in got.items():
        assert "\n" not in why and name in why and reasons[name] in why, (name, why)
    assert sorted(p.name for p in (tmp_path / "wfdb").glob("*.hea")) == ["good.hea", "good2.hea"]


def test_a_folder_with_no_usable_image_exits_2(fake, tmp_path):
    scans = tmp_path / "scans"
    _save(scans / "blank.png", _page(0.0))
    (scans / "report.pdf").write_bytes(b"%PDF-1.4\n")
    only_docs = tmp_path / "docs"
    only_docs.mkdir()
    (only_docs / "a.pdf").write_bytes(b"%PDF-1.4\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, why in ((scans, "no usable image (2 skipped"), (only_docs, "no usable image"), (empty, "no usable image")):
        r = run("reconstruct", folder, "-o", tmp_path / "r.h5", "--wfdb", tmp_path / "w", "--overlays", tmp_path / "o")
        assert r.exit_code == 2, r.output
        errors = [line for line in r.stderr.splitlines() if line.startswith("ecgscan: error:")]
        assert len(errors) == 1 and why in errors[0] and "Traceback" not in r.output, r.output
        assert not (tmp_path / "r.h5").exists() and not (tmp_path / "w").exists() and not (tmp_path / "o").exists()
    assert "PDF is not read" in run("reconstruct", only_docs, "-o", tmp_path / "r.h5").stderr


def test_single_bad_files_are_one_line_errors(fake, tmp_path):
    pdf = tmp_path / "scan.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    blank = _save(tmp_path / "blank.png", _page(0.0))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    for path, why in ((pdf, "pdftoppm"), (blank, "no ECG trace found"), (bad, "cannot read image")):
        r = run("reconstruct", path, "-o", tmp_path / "r.h5")
        assert r.exit_code == 2 and why in r.stderr and "Traceback" not in r.output, r.output


# ------------------------------------------------------------------ methods and the old form


def test_method_choices_are_checked(fake, tmp_path):
    _save(tmp_path / "a.png", _page(0.1))
    cases = [
        (["--method", "decoder"], "needs a checkpoint"),
        (["--method", "magic"], "--method must be one of"),
        (["--checkpoint", tmp_path, "--method", "classical"], "--checkpoint is for --method decoder"),
        (["--weights", tmp_path / "none.safetensors"], "no such file"),
        (["--weights", tmp_path / "a.png", "--method", "classical"], "--weights is for --method digitizer"),
        (["--checkpoint", tmp_path, "--quick"], "--quick is the digitiser's"),
    ]
    for extra, why in cases:
        r = run("reconstruct", tmp_path / "a.png", "-o", tmp_path / "r.h5", *extra)
        assert r.exit_code == 2 and why in r.stderr, (extra, r.output)
    assert not (tmp_path / "r.h5").exists()


def test_decoder_old_and_new_forms_agree(tiny_checkpoint, fake, tmp_path, one_thread):
    _save(tmp_path / "scans" / "a.png", _page(0.1))
    old = run("reconstruct", tiny_checkpoint, tmp_path / "scans", "-o", tmp_path / "old.h5", "--device", "cpu")
    assert old.exit_code == 0, old.output
    assert "old form" in old.stderr and "--checkpoint" in old.stderr
    new = run("reconstruct", tmp_path / "scans", "--checkpoint", tiny_checkpoint, "-o", tmp_path / "new.h5",
              "--device", "cpu", "-q")
    assert new.exit_code == 0, new.output
    np.testing.assert_array_equal(SignalsFile(tmp_path / "old.h5").signals(), SignalsFile(tmp_path / "new.h5").signals())
    assert fake.calls == [] and fake.loaded == []             # the decoder ran, not the digitiser
    r = run("reconstruct", tiny_checkpoint, tmp_path / "scans", "--checkpoint", tiny_checkpoint, "-o", tmp_path / "x.h5")
    assert r.exit_code == 2 and "give the checkpoint once" in r.stderr


# ------------------------------------------------------------------ reading images


def test_load_image_refuses_bombs_from_the_header_and_shrinks_jpegs_while_decoding(tmp_path):
    from ecgscan_cli.imageio import load_image

    Image.new("L", (11_000, 10_000)).save(tmp_path / "bomb.png")
    with pytest.raises(EcgscanError, match="11000×10000 pixels is over the limit"):
        load_image(tmp_path / "bomb.png", max_side=2000)
    img = np.full((1200, 1600, 3), 255, np.uint8)
    img[:, :400] = 0
    _save(tmp_path / "p.jpg", img, quality=95)
    small = load_image(tmp_path / "p.jpg", max_side=500)
    assert small.shape == (375, 500, 3)
    assert small[:, :90].mean() < 20 and small[:, 160:].mean() > 235   # the page, not noise
    a16 = (np.arange(300 * 400).reshape(300, 400) % 60000 + 1000).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    g = load_image(tmp_path / "g16.png", max_side=200)
    assert g.shape == (150, 200, 3) and g.max() > 200          # 16-bit range stretched, not clipped


def test_a_20_megapixel_jpeg_is_decoded_in_bounded_memory(tmp_path):
    rng = np.random.default_rng(0)
    img = np.repeat(np.repeat(rng.integers(0, 255, (500, 400, 3), dtype=np.uint8), 10, 0), 10, 1)   # 5000×4000
    _save(tmp_path / "photo.jpg", img, quality=85)
    del img
    # VmHWM (peak resident memory since exec; ru_maxrss would carry pytest's own peak over exec)
    code = ("import re, sys\n"
            "from ecgscan_cli.imageio import load_image\n"
            "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "load_image(sys.argv[2], max_side=8)\n"          # libraries loaded: the baseline
            "base = hwm()\n"
            "a = load_image(sys.argv[1], max_side=2000)\n"
            "print(a.shape, (hwm() - base) // 1024)\n")
    _save(tmp_path / "tiny.jpg", np.zeros((16, 16, 3), np.uint8))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "photo.jpg"), str(tmp_path / "tiny.jpg")],
                         capture_output=True, text=True, env=env, check=True)
    shape, grown_mb = res.stdout.rsplit(" ", 1)
    assert shape == "(2000, 1600, 3)"
    # decoded at full size it grows by ~270 MB (RGBX 80 MB, the RGB copy, the resize); shrunk
    # while decoding (JPEG DCT scaling to 2500×2000) by ~50 MB
    assert int(grown_mb) < 100, res.stdout


# ------------------------------------------------------------------ the real pipeline


@pytest.fixture
def page_and_maps(monkeypatch):
    """A 200-dpi page of a synthetic record, rotated by ``angle``, and the digitiser with
    TraceNet replaced by that page's exact trace/grid targets (rotated alike): the real
    pipeline after the network runs. Returns ``make(angle) -> (page, truth)``."""
    image_mod = pytest.importorskip("ecgscan_cli.digitize.image")
    pytest.importorskip("ecgscan_cli.digitize.pipeline")
    from ecgscan_cli.render.page import render_page
    from ecgscan_cli.render.targets import page_targets
    from ecgscan_cli.synth import synthesize

    truth = synthesize(1, seed=3).signals[0]
    state = {}

    def make(angle: float):
        page, _ = render_page(truth, dpi=200)
        maps = page_targets(truth, dpi=200)
        im = Image.fromarray(page).rotate(angle, resample=Image.Resampling.BILINEAR, expand=True,
                                          fillcolor=(255, 255, 255))
        state["maps"] = [Image.fromarray(m).rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
                         for m in maps]
        return np.asarray(im).copy(), truth

    def predict(net, work):
        h, w = work.shape[:2]
        if work.min() > 250:                       # a blank page: no ink at all
            return np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
        trace, grid = (np.asarray(m.resize((w, h), Image.Resampling.BILINEAR), np.float32) for m in state["maps"])
        if np.abs(work[2, 2].astype(int) - BLUE).max() < 20:   # two rows only: a layout the pipeline does not know
            trace = trace.copy()
            trace[h // 2:] = 0
        return trace, grid

    monkeypatch.setattr(image_mod, "predict_maps", predict)
    monkeypatch.setattr(image_mod, "load_digitizer", lambda weights=None, device="cpu": "NET")
    return make


@pytest.mark.parametrize("angle", [0.0, 5.0])
def test_traces_are_drawn_where_the_pipeline_found_them(page_and_maps, angle):
    """Overlay alignment with the real pipeline: every drawn trace point lies on the page's ink,
    upright or rotated (the pipeline's working scale and deskew are undone)."""
    from ecgscan_cli.reconstruct import digitize_page, to_page_pixels, trace_paths

    page, truth = page_and_maps(angle)
    sig, d = digitize_page(page, "NET")
    assert d.layout.startswith("3x4") and abs(abs(d.rotation_deg) - angle) < 0.5   # (the deskew applied: −angle)
    gray = page.mean(-1)
    paths = trace_paths(d, sig)
    assert sorted({k for k, _, _ in paths}) == list(range(12))
    hits = total = 0
    for _, xs, ys in paths:
        px, py = to_page_pixels(xs, ys, d)
        ok = np.isfinite(px) & np.isfinite(py)
        xi, yi = np.round(px[ok]).astype(int), np.round(py[ok]).astype(int)
        inside = (xi >= 2) & (yi >= 2) & (xi < page.shape[1] - 2) & (yi < page.shape[0] - 2)
        xi, yi = xi[inside], yi[inside]
        near = np.min([gray[yi + dy, xi + dx] for dy in (-2, -1, 0, 1, 2) for dx in (-2, -1, 0, 1, 2)], axis=0)
        hits += int((near < 110).sum())
        total += xi.size
    assert total > 8000 and hits / total > 0.9, (hits, total)


def test_real_pipeline_failures_are_skipped_and_the_rest_reconstructed(page_and_maps, tmp_path):
    page, truth = page_and_maps(0.0)
    scans = tmp_path / "scans"
    _save(scans / "page.png", page)
    _save(scans / "blank.png", np.full((600, 800, 3), 255, np.uint8))
    two_rows = page.copy()
    two_rows[:30, :30] = BLUE                       # a corner block survives the shrink to working size
    _save(scans / "two_rows.png", two_rows)
    r = run("reconstruct", scans, "-o", tmp_path / "r.h5", "--overlays", tmp_path / "ov", "--device", "cpu")
    assert r.exit_code == 0, r.output
    flat = "".join(r.stderr.split())
    assert "blank.png:noECGtracefound" in flat and "two_rows.png:" in flat and "Traceback" not in r.output
    assert SignalsFile(tmp_path / "r.h5").ids == ["page"]
    got = SignalsFile(tmp_path / "r.h5").signal(0)
    shown = np.isfinite(got)
    assert shown.sum(1).min() >= 1000 and shown[1].sum() > 4900      # every lead its column; II the whole strip
    err = np.nanmean((got - truth) ** 2, axis=1)
    power = np.array([np.mean(truth[k][shown[k]] ** 2) for k in range(12)])
    snr = 10 * np.log10(power / err)          # on the shown samples; measured 11-21 dB, median 18
    assert np.median(snr) > 12 and snr.min() > 6, snr   # exact maps: the right millivolts in the right leads
    assert (tmp_path / "ov" / "page.png").is_file()


# ------------------------------------------------------------------ the real digitiser


def _real_weights() -> Path | None:
    import importlib.util

    if importlib.util.find_spec("ecgscan_cli.digitize.image") is None:
        return None
    path = REPO / "ecgscan_cli" / "digitize" / "weights" / "tracenet.safetensors"
    return path if path.is_file() else None


@pytest.mark.skipif(_real_weights() is None, reason="the digitiser and its shipped weights are not in this tree")
def test_real_digitizer_reconstructs_a_rendered_page(tmp_path, one_thread):
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.synth import synthesize

    ref = synthesize(2, seed=5)
    write_signals(tmp_path / "truth.h5", ref.signals, ref.ids)
    r = run("render", tmp_path / "truth.h5", "-o", f"{tmp_path}/pages/", "-q")
    assert r.exit_code == 0, r.output
    (tmp_path / "pages" / "truncated.png").write_bytes((tmp_path / "pages" / next(iter(
        sorted(p.name for p in (tmp_path / "pages").glob("*.png"))))).read_bytes()[:200])   # truncated copy
    r = run("reconstruct", tmp_path / "pages", "-o", tmp_path / "r.h5", "--overlays", tmp_path / "ov",
            "--wfdb", tmp_path / "wfdb", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "truncated.png:" in "".join(r.stderr.split()) and "Traceback" not in r.output
    s = SignalsFile(tmp_path / "r.h5")
    assert sorted(s.ids) == sorted(ref.ids)
    import h5py

    with h5py.File(tmp_path / "r.h5") as f:    # clean printouts read well: their limb leads agree
        assert [q.decode() for q in f["digitizer/quality"][()]] == ["good", "good"], f["digitizer/lead_residual"][()]
    r = run("snr-check", tmp_path / "r.h5", "--reference", tmp_path / "truth.h5", "--align", "-f", "json")
    assert r.exit_code == 0, r.output
    import json

    rows = {row["lead"]: row for row in json.loads(r.stdout)}
    # plumbing, not the digitiser's accuracy (its own tests and benchmark): a flat or
    # missing reconstruction scores 0 dB on this metric
    assert rows["all"]["mean_db"] > 1, rows["all"]


@pytest.mark.skipif(_real_weights() is None, reason="the digitiser and its shipped weights are not in this tree")
@pytest.mark.parametrize("layout", ["6x2", "3x4+3"])
def test_real_digitizer_reads_six_row_printouts(tmp_path, one_thread, layout):
    """`render --layout` pages through `reconstruct`: each lead where the layout shows it."""
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.render.layout import LayoutOptions, as_shown
    from ecgscan_cli.snr import reconstruction_snr
    from ecgscan_cli.synth import synthesize

    ref = synthesize(1, seed=8)
    write_signals(tmp_path / "truth.h5", ref.signals, ref.ids)
    r = run("render", tmp_path / "truth.h5", "-o", f"{tmp_path}/pages/", "--layout", layout, "-q")
    assert r.exit_code == 0, r.output
    r = run("reconstruct", tmp_path / "pages", "-o", tmp_path / "r.h5", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert {"6x2": "layouts: 6×2 1", "3x4+3": "layouts: 3×4 + 3 rhythm strips 1"}[layout] in " ".join(r.stderr.split())
    got = SignalsFile(tmp_path / "r.h5").signal(0)
    want = as_shown(ref.signals[0].astype(np.float64), LayoutOptions(layout=layout))
    assert (np.abs(np.isfinite(got).sum(axis=1) - np.isfinite(want).sum(axis=1)) < 60).all()
    assert np.nanmean(reconstruction_snr(want, got, 500.0, align=True)) > 15.0


def test_heic_phone_photos_are_read_upright_where_pillow_heif_is_installed(fake, tmp_path, monkeypatch):
    pytest.importorskip("pillow_heif")
    from ecgscan_cli import imageio

    assert imageio.heif_readable()          # registers the HEIF plugin with PIL (also for saving)
    scans = tmp_path / "scans"
    scans.mkdir()
    # a portrait photo of a landscape page, as an iPhone stores it: pixels sideways, the
    # turn in the file (EXIF orientation 6, which libheif writes as the container's rotation)
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(scans / "IMG_0001.HEIC", np.rot90(_page(0.3), 1).copy(), exif=exif.tobytes(), quality=95)
    _save(scans / "b.jpg", _page(0.6), quality=95)
    r = run("reconstruct", scans, "-o", tmp_path / "r.h5")
    assert r.exit_code == 0, r.output
    sf = SignalsFile(tmp_path / "r.h5")
    assert sf.ids == ["IMG_0001", "b"]
    # upright: the page's top 30 % is dark, so the fake reads 0.3 × (k + 1) mV
    np.testing.assert_allclose(sf.signal(0)[1], 0.6, atol=0.03)
    shapes = [shape for shape, _, _ in fake.calls]
    assert shapes[0][:2] == (200, 300)
    upright = imageio.load_image(scans / "IMG_0001.HEIC")
    assert upright.shape == (200, 300, 3) and upright[:50].mean() < 40 and upright[-100:].mean() > 215
    # without pillow-heif: skipped in one line that says what to install
    monkeypatch.setattr(imageio, "_HEIF", False)
    r = run("reconstruct", scans, "-o", tmp_path / "r2.h5")
    assert r.exit_code == 0, r.output
    assert SignalsFile(tmp_path / "r2.h5").ids == ["b"]
    assert "ecgscan[heic]" in "".join(r.stderr.split()).replace("'", "")


@pytest.mark.skipif(_real_weights() is None, reason="the digitiser and its shipped weights are not in this tree")
def test_real_digitizer_reads_50_mm_s_printouts_when_told_the_speed(tmp_path, one_thread):
    """A 50 mm/s printout shows 5 s; read as 25 mm/s (the default) its time axis is doubled
    and it scores ~0 dB, told --speed 50 it reads like a 25 mm/s page."""
    from ecgscan_cli.formats import write_signals
    from ecgscan_cli.render.layout import LayoutOptions, as_shown
    from ecgscan_cli.snr import reconstruction_snr
    from ecgscan_cli.synth import synthesize

    ref = synthesize(1, seed=3)
    write_signals(tmp_path / "truth.h5", ref.signals, ref.ids)
    r = run("render", tmp_path / "truth.h5", "-o", f"{tmp_path}/pages/", "--speed", "50", "-q")
    assert r.exit_code == 0, r.output
    want = as_shown(ref.signals[0].astype(np.float64), LayoutOptions(speed=50.0))
    scores = {}
    for speed in ("50", "25"):
        r = run("reconstruct", tmp_path / "pages", "-o", tmp_path / f"r{speed}.h5", "--speed", speed, "--device", "cpu")
        assert r.exit_code == 0, r.output
        got = SignalsFile(tmp_path / f"r{speed}.h5").signal(0)
        scores[speed] = float(np.nanmean(reconstruction_snr(want, got, 500.0, align=True)))
        if speed == "50":   # each lead where the page shows it: 1.25 s panels, II over 5 s
            assert (np.abs(np.isfinite(got).sum(axis=1) - np.isfinite(want).sum(axis=1)) < 30).all()
    assert scores["50"] > 15.0 and scores["25"] < 5.0, scores


def test_speed_and_gain_are_checked(fake, tmp_path, random_signals_file):
    _save(tmp_path / "scans" / "a.png", _page(0.1))
    for args, why in ((["--speed", "30"], "--speed must be one of 25, 50"),
                      (["--gain", "7"], "--gain must be one of 5, 10, 20"),
                      (["--speed", "50", "--method", "decoder", "--checkpoint", tmp_path], "the digitiser's")):
        r = run("reconstruct", tmp_path / "scans", "-o", tmp_path / "r.h5", *args)
        assert r.exit_code == 2 and why in r.stderr and "Traceback" not in r.output, r.output
        assert not (tmp_path / "r.h5").exists()
    r = run("reconstruct", random_signals_file, "-o", tmp_path / "r.h5", "--speed", "50")
    assert r.exit_code == 2 and "render it with" in r.stderr, r.output
    assert not (tmp_path / "r.h5").exists()
    r = run("reconstruct", tmp_path / "scans", "-o", tmp_path / "r.h5", "--speed", "50", "--gain", "20")
    assert r.exit_code == 0, r.output
    from ecgscan_cli.digitize.pipeline import Printout

    assert fake_digitize.printouts[-1] == Printout(speed_mm_s=50.0, gain_mm_mv=20.0)
