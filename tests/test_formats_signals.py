import h5py
import numpy as np
import pytest

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats import SignalsFile, SignalsWriter, write_signals
from ecgscan_cli.formats.common import file_kind, open_checked


def test_roundtrip_is_lossless_for_integer_microvolts(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(-5000, 5000, size=(3, 12, 5000)) / 1000.0
    x[1, 4, 10:20] = np.nan
    path = write_signals(tmp_path / "s.h5", x, ["a", "b", "c"], ["r", "", "ü"], labels=[[1, 0], [0, 1], [1, 1]],
                         classes=["X", "Y"], folds=[1, -1, 10])
    f = SignalsFile(path)
    assert len(f) == 3 and f.ids == ["a", "b", "c"] and f.reports == ["r", "", "ü"]
    assert f.classes == ["X", "Y"] and f.labels.tolist() == [[1, 0], [0, 1], [1, 1]]
    assert f.folds.tolist() == [1, -1, 10] and f.fs == 500.0
    got = f.signals()
    assert got.dtype == np.float32
    assert np.isnan(got[1, 4, 10:20]).all() and np.isnan(got).sum() == 10
    ok = ~np.isnan(x)
    assert np.abs(got[ok] - x[ok]).max() < 1e-6
    with h5py.File(path) as h:
        assert h["signal"].dtype == np.int16 and h["signal"].chunks == (1, 12, 5000)
        assert h["signal"].compression == "gzip" and h["signal"].shuffle
        assert file_kind(path) == "signals"


def test_out_of_range_is_an_error_not_wrapped(tmp_path):
    x = np.zeros((1, 12, 5000))
    x[0, 0, 0] = 40.0
    with pytest.raises(EcgscanError, match="int16"):
        write_signals(tmp_path / "s.h5", x, ["a"])
    assert not list(tmp_path.iterdir()), "no partial file may remain"


def test_inf_is_refused(tmp_path):
    x = np.zeros((1, 12, 5000))
    x[0, 0, 0] = np.inf
    with pytest.raises(EcgscanError, match="infinite"):
        write_signals(tmp_path / "s.h5", x, ["a"])


def test_interrupted_writer_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with SignalsWriter(tmp_path / "s.h5") as w:
            w.append("a", np.zeros((12, 5000)))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    p = tmp_path / "s.h5"
    write_signals(p, np.zeros((1, 12, 5000)), ["a"])
    with pytest.raises(EcgscanError, match="--overwrite"):
        write_signals(p, np.zeros((1, 12, 5000)), ["b"])
    assert SignalsFile(p).ids == ["a"]
    write_signals(p, np.zeros((1, 12, 5000)), ["b"], overwrite=True)
    assert SignalsFile(p).ids == ["b"]


def test_missing_output_folder(tmp_path):
    with pytest.raises(EcgscanError, match="does not exist"):
        write_signals(tmp_path / "nope" / "s.h5", np.zeros((1, 12, 5000)), ["a"])


def test_duplicate_ids_refused(tmp_path):
    with pytest.raises(EcgscanError, match="duplicate"):
        write_signals(tmp_path / "s.h5", np.zeros((2, 12, 5000)), ["a", "a"])
    assert list(tmp_path.iterdir()) == []


def test_readers_refuse_foreign_files(tmp_path):
    text = tmp_path / "x.h5"
    text.write_text("hello")
    with pytest.raises(EcgscanError, match="not an HDF5"):
        SignalsFile(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as h:
        h["signal"] = np.zeros((1, 12, 10))
    with pytest.raises(EcgscanError, match="not an ecgscan file"):
        SignalsFile(foreign)
    with pytest.raises(EcgscanError, match="no such file"):
        SignalsFile(tmp_path / "missing.h5")
    with pytest.raises(EcgscanError, match="expected an ecgscan images file"):
        open_checked(tmp_path / "x.h5" if False else _signals(tmp_path), "images")


def _signals(tmp_path):
    return write_signals(tmp_path / "ok.h5", np.zeros((1, 12, 5000)), ["a"])


def test_per_record_values_are_stored_in_record_order_and_checked(tmp_path):
    sig = np.zeros((12, 5000), np.float32)
    with SignalsWriter(tmp_path / "q.h5") as w:
        for rid in ("b", "a", "c"):
            w.append(rid, sig)
        w.add_record_values("digitizer/lead_residual", np.array([0.1, np.nan, 0.7], np.float32), {"note": "x"})
        w.add_record_values("digitizer/quality", ["good", "unknown", "poor"])
        with pytest.raises(EcgscanError, match="2 values for 3 records"):
            w.add_record_values("digitizer/other", [1, 2])
    with h5py.File(tmp_path / "q.h5", "r") as f:
        assert [x.decode() for x in f["id"][()]] == ["b", "a", "c"]
        np.testing.assert_array_equal(f["digitizer/lead_residual"][()], np.array([0.1, np.nan, 0.7], np.float32))
        assert f["digitizer/lead_residual"].attrs["note"] == "x"
        assert [x.decode() for x in f["digitizer/quality"][()]] == ["good", "unknown", "poor"]
        assert "digitizer/other" not in f


def test_writers_refuse_a_label_row_of_the_wrong_length_and_leave_no_file(tmp_path):
    from ecgscan_cli.formats.images import ImagesFile, ImagesWriter

    with SignalsWriter(tmp_path / "s.h5", classes=["X", "Y"]) as w:
        w.append("a", np.zeros((12, 5000)), label=[0, 1], fold=3)
        w.append("b", np.zeros((12, 5000)))                      # no labels given: zeros
    f = SignalsFile(tmp_path / "s.h5")
    assert f.labels.tolist() == [[0, 1], [0, 0]] and f.folds.tolist() == [3, -1]
    page = np.zeros((20, 30, 3), np.uint8)
    with ImagesWriter(tmp_path / "i.h5", height=20, width=30, with_signals=False, classes=["X"]) as w:
        w.append("a", page, {}, label=[1], fold=2)
    images = ImagesFile(tmp_path / "i.h5")
    assert images.labels.tolist() == [[1]] and images.folds.tolist() == [2]
    for make, row in ((lambda: SignalsWriter(tmp_path / "bad.h5", classes=["X", "Y"]), (np.zeros((12, 5000)),)),
                      (lambda: ImagesWriter(tmp_path / "bad.h5", height=20, width=30, with_signals=False,
                                            classes=["X", "Y"]), (page, {}))):
        with pytest.raises(EcgscanError, match="3 labels for 2 classes"):
            with make() as w:
                w.append("a", *row, label=[1, 0, 1])
        assert not (tmp_path / "bad.h5").exists()
