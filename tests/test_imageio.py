"""Loading scans and photos of any kind, and the one input abstraction (folder / images / signals)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.imageio import load_image, open_source


def page(h=300, w=500):
    a = np.full((h, w, 3), 255, np.uint8)
    a[h // 2 - 2:h // 2 + 2, :] = 0   # a horizontal trace: shows orientation
    return a


def test_modes_become_rgb_on_white(tmp_path):
    Image.fromarray(page()).convert("L").save(tmp_path / "gray.png")
    rgba = np.zeros((40, 60, 4), np.uint8)  # fully transparent → white
    rgba[10:20, :, 3] = 255                 # an opaque black band
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(page()).convert("P").save(tmp_path / "pal.png")
    Image.fromarray((np.arange(40 * 60).reshape(40, 60) * 20).astype(np.uint16)).save(tmp_path / "g16.png")
    g = load_image(tmp_path / "gray.png")
    assert g.shape == (300, 500, 3) and g.dtype == np.uint8 and (g[0, 0] == 255).all()
    a = load_image(tmp_path / "rgba.png")
    assert (a[0, 0] == 255).all() and (a[15, 5] == 0).all()
    assert load_image(tmp_path / "pal.png").shape == (300, 500, 3)
    s = load_image(tmp_path / "g16.png")
    assert s.shape == (40, 60, 3) and s.max() == 255 and s.min() == 0


def test_exif_rotation_is_applied(tmp_path):
    im = Image.fromarray(page(300, 500))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW to display"
    im.save(tmp_path / "photo.jpg", exif=exif.tobytes())
    got = load_image(tmp_path / "photo.jpg")
    assert got.shape == (500, 300, 3), "portrait after EXIF transpose"


def test_folder_letterboxes_and_skips_corrupt_files(tmp_path):
    Image.fromarray(page(300, 900)).save(tmp_path / "wide.png")
    Image.fromarray(page(800, 300)).save(tmp_path / "tall.jpg")
    (tmp_path / "sub").mkdir()
    Image.fromarray(page(64, 64)).save(tmp_path / "sub" / "small.PNG")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(tmp_path)
    assert src.kind == "folder" and len(src) == 4 and "sub/small" in src.ids
    out = list(src.batches(3, 96))
    imgs = np.concatenate([b[2].numpy() for b in out])
    ids = [i for b in out for i in b[1]]
    assert imgs.shape == (3, 3, 96, 96) and 0 <= imgs.min() and imgs.max() <= 1
    assert "broken" not in ids and len(src.skipped) == 1 and "broken.png" in src.skipped[0][0]
    wide = imgs[ids.index("wide")]
    assert (wide[:, 0, :] == 1).all() and (wide[:, -1, :] == 1).all(), "wide page padded top and bottom"
    tall = imgs[ids.index("tall")]
    assert (tall[:, :, 0] > 0.98).all(), "tall page padded left and right"


def test_signals_file_is_rendered_on_the_fly(random_signals_file):
    src = open_source(random_signals_file)
    assert src.kind == "signals" and src.has_signals and src.classes == ["A", "B"]
    (idx, ids, imgs), = list(src.batches(8, 64))
    assert imgs.shape == (6, 3, 64, 64) and ids == [f"r{i}" for i in range(6)]
    assert imgs.min() < 0.9, "traces are drawn"
    assert src.signal(0).shape == (12, 5000)


def test_bad_inputs(tmp_path, random_signals_file):
    with pytest.raises(EcgscanError, match="no such file"):
        open_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EcgscanError, match="no usable image"):
        open_source(tmp_path / "empty")
    (tmp_path / "x.h5").write_bytes(b"garbage")
    with pytest.raises(EcgscanError, match="not an image folder"):
        open_source(tmp_path / "x.h5")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(EcgscanError, match="cannot read image"):
        load_image(tmp_path / "bad.jpg")


def test_images_file_is_letterboxed_to_model_size(tmp_path):
    from ecgscan_cli.formats.images import ImagesWriter

    sig = np.zeros((12, 5000), np.float32)
    with ImagesWriter(tmp_path / "im.h5", height=60, width=100, classes=["X"]) as w:
        for k in range(3):
            w.append(f"i{k}", np.full((60, 100, 3), 100 + k, np.uint8), {}, signal=sig, label=[k % 2], fold=k + 1)
    src = open_source(tmp_path / "im.h5")
    assert src.kind == "images" and src.has_signals and src.classes == ["X"] and src.folds.tolist() == [1, 2, 3]
    (idx, ids, imgs), = list(src.batches(4, 50))
    assert imgs.shape == (3, 3, 50, 50) and ids == ["i0", "i1", "i2"]
    assert (imgs[:, :, 0, :] == 1).all() and abs(float(imgs[0, 0, 25, 25]) - 100 / 255) < 0.01
    assert src.signal(1).shape == (12, 5000)
