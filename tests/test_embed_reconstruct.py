"""`embed` and `reconstruct` with a tiny (untrained) checkpoint: formats, inputs, bad input."""

from __future__ import annotations

import h5py
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ecgscan_cli.cli.app import app
from ecgscan_cli.formats.embeddings import EmbeddingsFile
from ecgscan_cli.formats.signals import SignalsFile

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_embed_signals_file_trained_and_random(tiny_checkpoint, random_signals_file, tmp_path):
    out = tmp_path / "emb.h5"
    r = run("embed", tiny_checkpoint, random_signals_file, "-o", out, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    e = EmbeddingsFile(out)
    assert e.embeddings.shape == (6, 64) and e.ids == [f"r{i}" for i in range(6)]
    assert np.allclose(np.linalg.norm(e.embeddings, axis=1), 1, atol=1e-4)
    assert e.classes == ["A", "B"] and e.folds.tolist() == [1, 2, 3, 4, 5, 6] and e.encoder == "trained"
    with h5py.File(out) as f:
        assert f.attrs["ecgscan_format"] == "ecgscan-embeddings/1"
    out0 = tmp_path / "emb0.h5"
    r = run("embed", tiny_checkpoint, random_signals_file, "-o", out0, "--encoder", "random", "--seed", "3", "-q")
    assert r.exit_code == 0, r.output
    e0 = EmbeddingsFile(out0)
    assert e0.encoder == "random" and not np.allclose(e0.embeddings, e.embeddings)
    r = run("embed", tiny_checkpoint, random_signals_file, "-o", out, "-q")
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_embed_folder_counts_corrupt_images(tiny_checkpoint, tmp_path):
    imgs = tmp_path / "scans"
    imgs.mkdir()
    for k, (h, w) in enumerate([(200, 300), (300, 120), (50, 50)]):
        Image.fromarray(np.full((h, w, 3), 200 + k, np.uint8)).save(imgs / f"s{k}.png")
    (imgs / "bad.jpg").write_bytes(b"\xff\xd8\xff junk")
    out = tmp_path / "e.h5"
    r = run("embed", tiny_checkpoint, imgs, "-o", out)
    assert r.exit_code == 0, r.output
    assert "1 unreadable image(s) skipped" in r.output
    assert EmbeddingsFile(out).ids == ["s0", "s1", "s2"]


def test_reconstruct_writes_a_scorable_signals_file(tiny_checkpoint, random_signals_file, tmp_path):
    out, wf, ov = tmp_path / "recon.h5", tmp_path / "wfdb", tmp_path / "overlays"
    r = run("reconstruct", tiny_checkpoint, random_signals_file, "-o", out, "--wfdb", wf, "--overlay", ov,
            "--overlays", "2", "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    s = SignalsFile(out)
    assert len(s) == 6 and s.n_samples == 5000 and s.fs == 500.0 and s.ids[0] == "r0"
    assert np.isfinite(s.signals()).all()
    assert len(list(wf.glob("*.hea"))) == 6 and len(list(ov.glob("*.png"))) == 2
    import wfdb

    rec = wfdb.rdrecord(str(wf / "r0"))
    assert rec.p_signal.shape == (5000, 12) and rec.sig_name[3] == "aVR"
    assert np.allclose(rec.p_signal.T, s.signal(0), atol=2e-3)
    r = run("snr-check", out, "--reference", random_signals_file, "-f", "csv")
    assert r.exit_code == 0, r.output


def test_not_a_checkpoint_and_bad_inputs(tiny_checkpoint, random_signals_file, tmp_path):
    (tmp_path / "folder").mkdir()
    cases = [
        (["embed", tmp_path / "folder", random_signals_file, "-o", tmp_path / "e.h5"], "not an ecgscan checkpoint"),
        (["embed", tmp_path / "none", random_signals_file, "-o", tmp_path / "e.h5"], "no such checkpoint"),
        (["embed", tiny_checkpoint, tmp_path / "nothing.h5", "-o", tmp_path / "e.h5"], "no such file"),
        (["embed", tiny_checkpoint, random_signals_file, "-o", tmp_path / "e.h5", "--encoder", "magic"], "--encoder"),
        (["reconstruct", tmp_path / "folder", random_signals_file, "-o", tmp_path / "r.h5"], "not an ecgscan"),
    ]
    for args, msg in cases:
        r = run(*args, "-q")
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output
    assert [p.name for p in tmp_path.glob("*.h5")] == ["random.h5"] and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_embed_imagenet_and_backbone_features(tiny_checkpoint, random_signals_file, tmp_path):
    """--encoder imagenet loads the tower's pretrained weights (here a local file); random does not."""
    import open_clip
    import torch

    from ecgscan_cli.checkpoint import save_checkpoint
    from ecgscan_cli.model import TINY_VISION, build_model, register_tiny, tiny_config

    # the tiny checkpoint has no pretrained image weights: refused
    r = run("embed", tiny_checkpoint, random_signals_file, "-o", tmp_path / "x.h5", "--encoder", "imagenet", "-q")
    assert r.exit_code == 2 and "no pretrained image weights (image_pretrained is null)" in r.output
    register_tiny()
    torch.manual_seed(5)
    weights = tmp_path / "tower.pt"
    torch.save(open_clip.create_model(TINY_VISION, force_image_size=64).state_dict(), weights)
    cfg = tiny_config(image_size=64, patch=40, image_stem="patch", image_pretrained=str(weights))
    ck = save_checkpoint(tmp_path / "ck", build_model(cfg, load_weights=True))
    emb = {}
    for enc in ("imagenet", "random"):
        for seed in (0, 1):
            out = tmp_path / f"{enc}{seed}.h5"
            r = run("embed", ck, random_signals_file, "-o", out, "--encoder", enc, "--features", "backbone",
                    "--seed", seed, "--device", "cpu", "-q")
            assert r.exit_code == 0, r.output
            emb[enc, seed] = EmbeddingsFile(out)
    e = emb["imagenet", 0]
    assert e.encoder == "imagenet" and e.features == "backbone" and e.pretraining is None
    assert e.embeddings.shape == (6, 64) and not np.allclose(np.linalg.norm(e.embeddings, axis=1), 1, atol=1e-3)
    # the backbone of a patch-stem tower is all pretrained weights: the seed does not matter
    assert np.array_equal(emb["imagenet", 0].embeddings, emb["imagenet", 1].embeddings)
    assert not np.allclose(emb["random", 0].embeddings, emb["random", 1].embeddings)
    assert not np.allclose(emb["imagenet", 0].embeddings, emb["random", 0].embeddings)
    r = run("embed", ck, random_signals_file, "-o", tmp_path / "y.h5", "--features", "pooled", "-q")
    assert r.exit_code == 2 and "--features must be one of projected, backbone" in r.output
