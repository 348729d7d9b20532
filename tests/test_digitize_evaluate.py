"""The digitiser benchmark's evaluation (digitize/evaluate.py): pages, exact maps, scores."""

from __future__ import annotations

import numpy as np
import pytest

from ecgscan_cli.errors import EcgscanError


@pytest.fixture(scope="module")
def synth_file(tmp_path_factory):
    from ecgscan_cli.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("eval") / "synth.h5", 10, seed=5)


@pytest.fixture(scope="module")
def record(synth_file):
    from ecgscan_cli.formats.signals import SignalsFile

    sf = SignalsFile(synth_file)
    return np.nan_to_num(sf.signal(0).astype(np.float64)), sf.fs


def test_a_page_with_targets_is_the_page_without(record):
    from ecgscan_cli.digitize.evaluate import render_condition

    signal, fs = record
    _, clean_maps = render_condition(signal, fs, "clean", seed=3, dpi=100, targets=True)
    for condition in ("clean", "paper"):
        page = render_condition(signal, fs, condition, seed=3, dpi=100)
        same, maps = render_condition(signal, fs, condition, seed=3, dpi=100, targets=True)
        assert np.array_equal(page, same)
        assert maps.shape == (2, *page.shape[:2]) and maps.dtype == np.float32
        # the trace map moved with the page: its ink lies on dark pixels
        grey = page.astype(np.float64).mean(axis=-1)
        on, off = grey[maps[0] > 0.5].mean(), grey[maps[0] < 0.01].mean()
        assert on < off - 80, (condition, on, off)       # unmoved maps on the paper page: 224 vs 238
    assert np.abs(maps - clean_maps).mean() > 0.05          # this draw moves the page
    other = render_condition(signal, fs, "paper", seed=4, dpi=100)
    assert not np.array_equal(other, page)


def test_exact_maps_score_what_the_steps_after_the_maps_make_of_a_page(synth_file):
    from ecgscan_cli.digitize.evaluate import evaluate_digitizer, summarize_scores

    from ecgscan_cli.formats.signals import SignalsFile

    folds = sorted({int(f) for f in SignalsFile(synth_file).folds})[:2]
    scores = evaluate_digitizer(synth_file, folds=folds, conditions=("clean", "paper"), method="exact", dpi=150)
    assert len(scores) == 2 * len(folds) and {s.condition for s in scores} == {"clean", "paper"}
    clean = [s for s in scores if s.condition == "clean"]
    assert all(not s.error for s in clean)
    assert min(s.aligned_db for s in clean) > 18.0, [s.aligned_db for s in clean]
    rows = summarize_scores(scores)
    assert [r["condition"] for r in rows] == ["clean", "paper"]
    assert rows[0]["aligned_db"] == pytest.approx(np.mean([s.aligned_db for s in clean]), abs=0.01)


def test_an_unknown_method_is_one_line(synth_file):
    from ecgscan_cli.digitize.evaluate import evaluate_digitizer

    with pytest.raises(EcgscanError, match="unknown evaluation method 'nett'"):
        evaluate_digitizer(synth_file, folds=(1,), method="nett")


def test_start_selects_later_records_with_the_same_pages(synth_file):
    """A record's page does not depend on which records are selected around it, so a later
    slice of the held-out fold can serve as a second, untouched test set."""
    from ecgscan_cli.digitize.evaluate import evaluate_digitizer
    from ecgscan_cli.formats.signals import SignalsFile

    folds = sorted({int(f) for f in SignalsFile(synth_file).folds})
    both = evaluate_digitizer(synth_file, folds=folds, conditions=("paper",), method="exact", dpi=100, limit=2)
    later = evaluate_digitizer(synth_file, folds=folds, conditions=("paper",), method="exact", dpi=100,
                               start=1, limit=1)
    assert len(both) == 2 and len(later) == 1
    assert later[0].record == both[1].record and later[0].record != both[0].record
    assert later[0].aligned_db == both[1].aligned_db


def test_paired_comparison_script(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    def pages(path, scores):
        path.write_text("".join(json.dumps({"method": "net", "condition": "paper", "record": r, "dpi": 200.0,
                                            "aligned_db": v}) + "\n" for r, v in scores.items()))
    pages(tmp_path / "a.jsonl", {"r1": 10.0, "r2": 4.0, "r3": 7.0, "only_a": 0.0})
    pages(tmp_path / "b.jsonl", {"r1": 12.0, "r2": 3.0, "r3": 10.0})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_digitize_pages.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                         capture_output=True, text=True, check=True).stdout
    row = out.splitlines()[1].split(" | ")
    assert row[:5] == ["net", "paper", "3", "7.00", "8.33"]
    assert row[5].startswith("+1.33 [") and row[6:] == ["2", "1"]


def test_summary_script_pools_runs_and_leaves_out_records(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from ecgscan_cli.formats.signals import write_signals

    def pages(path, scores):
        path.write_text("".join(json.dumps({"method": "net", "condition": c, "record": r, "dpi": 200.0,
                                            "aligned_db": v, "physionet2024_db": v - 5.0, "seconds": 1.0 + v / 10,
                                            "error": "" if v else "unknown layout: 2 trace rows"}) + "\n"
                                for (c, r), v in scores.items()))
    pages(tmp_path / "a.jsonl", {("photo", "r1"): 10.0, ("photo", "r2"): 0.0, ("heavy", "r1"): 6.0})
    pages(tmp_path / "b.jsonl", {("photo", "r3"): 2.0, ("photo", "r4"): 12.0})
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize_digitize_pages.py"
    run = [sys.executable, str(script), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    out = subprocess.run(run, capture_output=True, text=True, check=True).stdout.splitlines()
    photo = out[1].split(" | ")
    assert photo[:3] == ["net", "photo", "4"] and photo[3].startswith("6.00 [")
    lo, hi = map(float, photo[3][len("6.00 ["):-1].split(", "))
    assert 0.0 <= lo < 6.0 < hi <= 12.0
    assert photo[4:] == ["1.00", "1", "2", "1.60"]       # mean PhysioNet, refused, below 3 dB, median s
    assert out[2].split(" | ")[:4] == ["net", "heavy", "1", "6.00 [6.00, 6.00]"]
    signals = tmp_path / "known.h5"
    write_signals(signals, np.zeros((2, 12, 5000), np.float32), ids=["r1", "r4"])
    out = subprocess.run(run + ["--without", str(signals)], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[1].split(" | ")[:4] == ["net", "photo", "2", "1.00 [0.00, 2.00]"]
    assert len(out.splitlines()) == 2                     # heavy's only record left out
