"""The README's main job: `ecgscan demo` runs the whole chain and writes a report."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.demo import choose_folds

runner = CliRunner()


def test_choose_folds():
    import numpy as np

    assert choose_folds(np.arange(1, 11)) == (list(range(1, 9)), [9], [10])
    assert choose_folds(np.array([1, 2, 3, 4, 5, 6, 7, 8, 8])) == ([1, 2, 3, 4, 5, 6], [7], [8])


@pytest.mark.slow
def test_demo_small_end_to_end(tmp_path):
    out = tmp_path / "report"
    r = runner.invoke(app, ["demo", "-o", str(out), "-n", "120", "--steps", "10", "--probe-epochs", "20",
                            "--bootstrap", "50", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    md = (out / "README.md").read_text()
    for section in ("## Linear probe", "## Zero-shot", "## Reconstruction", "ECG-Scan (pretrained)",
                    "untrained encoder", "figures/renders.png", "figures/loss_curves.png"):
        assert section in md, section
    # the re-run commands name the folds the demo used (synth: 1-8 / 9 / 10) and its signals file
    assert "ecgscan probe emb.h5 emb0.h5 --train-folds 1-8 --val-folds 9 --test-folds 10" in md
    assert "ecgscan embed work/run/best work/signals.h5 -o emb.h5" in md
    for fig in ("renders.png", "page.png", "loss_curves.png", "probe_roc.png"):
        assert (out / "figures" / fig).read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "figures" / "overlays").glob("*.png"))) == 3
    assert (out / "work" / "run" / "best").is_dir() and (out / "work" / "recon.h5").is_file()
    import json

    best = json.loads((out / "work" / "run" / "best" / "ecgscan_checkpoint.json").read_text())
    assert f"best checkpoint `work/run/best` (step {best['step']}, validation loss {best['val_loss']:.4f};" in md
    r = runner.invoke(app, ["demo", "-o", str(out), "-q"])
    assert r.exit_code == 2 and "--overwrite" in r.output
