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

import h5py
import numpy as np

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.common import STR_DTYPE, AtomicH5Writer, decode_strings, open_checked, read_classes, read_strings, write_header
from ecgscan_cli.formats.signals import (create_label_fold_datasets, create_signal_dataset, int16_to_mv,
                                         mv_to_int16)

KIND = "images"


class ImagesWriter(AtomicH5Writer):
    """Stream images (and optionally their signals) into a new images file.

    >>> with ImagesWriter("out.h5", height=224, width=224, classes=["A"]) as w:
    ...     w.append("rec1", image, layout, signal=signal_mv, report="...", label=[1], fold=3)
    """

    def __init__(self, path: str | os.PathLike, *, height: int, width: int, with_signals: bool = True,
                 fs: float = 500.0, n_samples: int = 5000, classes: Sequence[str] = (),
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
        self._open(path, overwrite)
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
        for name in self._names:
            ds = self._f[name]
            if ds.shape[0] <= i:
                ds.resize(max(2 * ds.shape[0], 64), axis=0)
        self._f["image"][i] = image
        self._f["id"][i] = record_id
        self._f["layout"][i] = json.dumps(layout, separators=(",", ":"))
        self._f["report"][i] = report or ""
        if self.classes:
            label = np.zeros(len(self.classes), np.uint8) if label is None else np.asarray(label, np.uint8)
            if label.shape != (len(self.classes),):
                raise EcgscanError(f"record {record_id!r}: {label.size} labels for {len(self.classes)} classes")
            self._f["label"][i] = label
        self._f["fold"][i] = int(fold)
        if self.with_signals:
            if signal is None:
                raise EcgscanError(f"record {record_id!r}: this images file stores signals; none given")
            signal = np.asarray(signal)
            if signal.shape != (12, self.n_samples):
                raise EcgscanError(f"record {record_id!r}: signal shape {signal.shape}, expected (12, {self.n_samples})")
            self._f["signal"][i] = mv_to_int16(signal, record_id)
        self._ids.add(record_id)
        self.count += 1

    def close(self) -> Path:
        for name in self._names:
            self._f[name].resize(self.count, axis=0)
        return self._commit()


class ImagesFile:
    """Read an images file: metadata at once, images/signals one at a time.

    Safe to pass to DataLoader workers: the HDF5 handle is reopened in each process.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open_checked(self.path, KIND) as f:
            for name in ("image", "id"):
                if name not in f:
                    raise EcgscanError(f"{self.path}: not a valid images file (missing /{name})")
            img = f["image"]
            if img.ndim != 4 or img.shape[3] != 3:
                raise EcgscanError(f"{self.path}: /image has shape {img.shape}, expected [N, H, W, 3]")
            self.n, self.height, self.width = int(img.shape[0]), int(img.shape[1]), int(img.shape[2])
            self.ids = read_strings(f, "id", self.n)
            self.reports = read_strings(f, "report", self.n)
            if "label" in f:
                self.labels = f["label"][()].astype(np.uint8).reshape(self.n, -1)
                self.classes = read_classes(f["label"])
            else:
                self.labels = np.zeros((self.n, 0), np.uint8)
                self.classes = []
            self.folds = f["fold"][()].astype(int) if "fold" in f else np.full(self.n, -1)
            self.has_signals = "signal" in f
            if self.has_signals:
                sig = f["signal"]
                self.fs = float(sig.attrs.get("fs", 500.0))
                self.n_samples = int(sig.shape[2])
            else:
                self.fs, self.n_samples = 500.0, 0
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        self._f = None
        self._pid = None

    def __len__(self) -> int:
        return self.n

    def _handle(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._f

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``H × W × 3``."""
        return self._handle()["image"][int(i)]

    def signal(self, i: int) -> np.ndarray:
        """Signal ``i`` as float32 mV ``[12, T]`` (NaN where absent)."""
        if not self.has_signals:
            raise EcgscanError(f"{self.path}: this images file has no signals")
        return int16_to_mv(self._handle()["signal"][int(i)])

    def layout(self, i: int) -> dict:
        """Layout metadata of image ``i`` (see docs/render.md)."""
        raw = self._handle()["layout"][int(i)]
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)

    def index_of(self) -> dict[str, int]:
        return {rid: i for i, rid in enumerate(self.ids)}

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_f"] = None
        state["_pid"] = None
        return state

    def __enter__(self) -> "ImagesFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_layouts(values) -> list[dict]:
    return [json.loads(v) for v in decode_strings(values)]
