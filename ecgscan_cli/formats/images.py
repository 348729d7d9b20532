"""The HDF5 images file written by ``ecgscan render``.

Layout::

    /image   [N, H, W, 3] uint8, one image per chunk (gzip level 1)
    /id      [N] str
    /layout  [N] str: JSON layout metadata (see docs/render.md)
    /signal  [N, 12, T] int16 µV, exactly as in the signals file (attrs fs, leads, units,
             nan_sentinel); absent when the images were written without signals
    /report  [N] str     /label [N, C] uint8, attr classes     /fold [N] int16
    root attrs ecgscan_format="ecgscan-images/1", source, ecgscan_version, command_line

Written by :class:`ImagesWriter` one image at a time (never holds all images); the
file appears under its name only once closed cleanly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.common import STR_DTYPE, AtomicH5Writer, H5Reader, open_checked, read_strings, write_header
from ecgscan_cli.formats.common import dataset, read_labels_folds
from ecgscan_cli.formats.signals import (check_signal_dataset, create_label_fold_datasets, create_signal_dataset,
                                         mv_to_int16, stored_to_mv)

KIND = "images"
MAX_SIDE = 16_384   # pixels per side a reader accepts (a 16384² RGB image is 768 MiB)


def stored_image_to_rgb8(image: np.ndarray, where: str = "") -> np.ndarray:
    """One stored image (``H × W × C``, C = 1, 3 or 4; uint8, or float in [0, 1]) → uint8 RGB.

    Other tools write float or RGBA images: floats are scaled from [0, 1] (anything else
    is refused, never cast to garbage), alpha is composited on white paper.
    """
    a = np.asarray(image)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise EcgscanError(f"{where}: float image holds NaN or infinite values")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            raise EcgscanError(f"{where}: float image values span [{lo:g}, {hi:g}]; expected [0, 1] "
                               "(or store uint8)")
        a = a.astype(np.float32) * np.float32(255.0)
    elif a.dtype != np.uint8:
        raise EcgscanError(f"{where}: image holds {a.dtype} values; expected uint8 or float in [0, 1]")
    if a.shape[-1] == 4:
        alpha = a[..., 3:4].astype(np.float32) / 255.0
        a = a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    elif a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return a


class ImagesWriter(AtomicH5Writer):
    """Stream images (and optionally their signals) into a new images file.

    >>> with ImagesWriter("out.h5", height=224, width=224, classes=["A"]) as w:
    ...     w.append("rec1", image, layout, signal=signal_mv, report="...", label=[1], fold=3)
    """

    def __init__(self, path: str | os.PathLike, *, height: int, width: int, with_signals: bool = True,
                 fs: float = canonical.FS, n_samples: int = canonical.N_SAMPLES, classes: Sequence[str] = (),
                 overwrite: bool = False, source: str | None = None, attrs: dict | None = None,
                 expected_rows: int = 0, compression_level: int = 1):
        self.path = Path(path)
        self.height, self.width = int(height), int(width)
        self.with_signals = bool(with_signals)
        self.n_samples = int(n_samples)
        self.classes = list(classes)
        self.count = 0
        self._ids: set[str] = set()
        self._names = ["image", "id", "layout", "report", "label", "fold"] + (["signal"] if with_signals else [])
        self._open(path, overwrite, KIND)
        try:
            write_header(self._f, KIND, source, **(attrs or {}))
            cap = max(int(expected_rows), 0)
            h, w = self.height, self.width
            self._f.create_dataset("image", shape=(cap, h, w, 3), maxshape=(None, h, w, 3), dtype="uint8",
                                   chunks=(1, h, w, 3), compression="gzip", compression_opts=compression_level)
            for name in ("id", "layout", "report"):
                self._f.create_dataset(name, shape=(cap,), maxshape=(None,), dtype=STR_DTYPE, chunks=(1024,))
            create_label_fold_datasets(self._f, cap, self.classes)
            if with_signals:
                create_signal_dataset(self._f, cap, self.n_samples, fs)
        except BaseException as e:
            self._abort(e)
            raise

    def append(self, record_id: str, image: np.ndarray, layout: dict, signal=None, report: str = "",
               label=None, fold: int = -1) -> None:
        image = np.asarray(image)
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise EcgscanError(f"record {record_id!r}: image {image.shape} {image.dtype}, "
                               f"expected ({self.height}, {self.width}, 3) uint8")
        record_id = str(record_id)
        if record_id in self._ids:
            raise EcgscanError(f"duplicate record id {record_id!r}: ids must be unique within a file")
        i = self.count
        self._room_for(i, self._names, 64)
        self._dataset("image")[i] = image
        self._dataset("id")[i] = record_id
        self._dataset("layout")[i] = json.dumps(layout, separators=(",", ":"))
        self._dataset("report")[i] = report or ""
        self._write_label_fold(i, record_id, label, fold)
        if self.with_signals:
            if signal is None:
                raise EcgscanError(f"record {record_id!r}: this images file stores signals; none given")
            signal = np.asarray(signal)
            if signal.shape != (12, self.n_samples):
                raise EcgscanError(f"record {record_id!r}: signal shape {signal.shape}, expected (12, {self.n_samples})")
            self._dataset("signal")[i] = mv_to_int16(signal, record_id)
        self._ids.add(record_id)
        self.count += 1

    def close(self) -> Path:
        for name in self._names:
            self._dataset(name).resize(self.count, axis=0)
        return self._commit()


class ImagesFile(H5Reader):
    """Read an images file: metadata at once, images/signals one at a time.

    Safe to pass to DataLoader workers: the HDF5 handle is reopened in each process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open_checked(self.path, KIND) as f:
            for name in ("image", "id"):
                if name not in f:
                    raise EcgscanError(f"{self.path}: not a valid images file (missing /{name})")
            img = dataset(f, "image", self.path)
            if img.ndim != 4 or img.shape[3] not in (1, 3, 4):
                raise EcgscanError(f"{self.path}: /image has shape {tuple(img.shape)}, expected [N, H, W, 3] "
                                   "(or 1 or 4 channels)")
            if img.dtype != np.uint8 and img.dtype.kind != "f":
                raise EcgscanError(f"{self.path}: /image holds {img.dtype} values, expected uint8 "
                                   "(or float in [0, 1])")
            self.n, self.height, self.width = int(img.shape[0]), int(img.shape[1]), int(img.shape[2])
            if self.n == 0:
                raise EcgscanError(f"{self.path}: the file holds no images")
            if not (1 <= self.height <= MAX_SIDE and 1 <= self.width <= MAX_SIDE):
                raise EcgscanError(f"{self.path}: images are {self.height}×{self.width} pixels; expected 1 to "
                                   f"{MAX_SIDE} per side")
            self.ids = read_strings(f, "id", self.n, self.path)
            self.reports = read_strings(f, "report", self.n, self.path)
            if "layout" in f:
                read_strings(f, "layout", self.n, self.path)   # shape and type only: parsed per image
            self.labels, self.classes, self.folds = read_labels_folds(f, self.n, self.path)
            self.has_signals = "signal" in f
            self._scale = 1e-3
            if self.has_signals:
                sig, self.fs, self._scale = check_signal_dataset(f, self.path)
                if sig.shape[0] != self.n:
                    raise EcgscanError(f"{self.path}: /signal has {sig.shape[0]} records for {self.n} images")
                self.n_samples = int(sig.shape[2])
            else:
                self.fs, self.n_samples = canonical.FS, 0
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``H × W × 3`` (float or RGBA images converted)."""
        return stored_image_to_rgb8(self._handle()["image"][int(i)], f"{self.path}: image {int(i)}")

    def signal(self, i: int) -> np.ndarray:
        """Signal ``i`` as float32 mV ``[12, T]`` (NaN where absent)."""
        if not self.has_signals:
            raise EcgscanError(f"{self.path}: this images file has no signals")
        return stored_to_mv(self._handle()["signal"][int(i)], self._scale)

    def layout(self, i: int) -> dict:
        """Layout metadata of image ``i`` (see docs/render.md)."""
        raw = self._handle()["layout"][int(i)]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
