"""The HDF5 signals file: N 12-lead ECGs with ids, reports, labels and folds.

Layout (see docs/formats.md)::

    /signal  [N, 12, T] int16 µV, gzip+shuffle, one record per chunk
             attrs fs, leads, units="uV", nan_sentinel=-32768
    /id      [N] str        /report [N] str (may be empty)
    /label   [N, C] uint8   attrs classes (C may be 0), label_set (its name; may be absent)
    /label_sets/<name> [N, C'] uint8  attr classes (optional: more label sets, e.g. PTB-XL's four)
    /fold    [N] int16      -1 when unknown
    /digitizer/lead_residual [N] float32, /digitizer/quality [N] str  (only in files
             `ecgscan reconstruct` wrote with a digitiser: how far each page's limb leads
             break Einthoven's and Goldberger's relations, NaN where none could be checked,
             and its band good / fair / poor / unknown; docs/reconstruct.md)
    root attrs ecgscan_format="ecgscan-signals/1", source, ecgscan_version, command_line

Readers get float32 millivolts with NaN where samples are absent. Values beyond the
int16 range (±32.767 mV) are refused, never wrapped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from ecgscan_cli import canonical
from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.formats.common import STR_DTYPE, AtomicH5Writer, H5Reader, decode_strings, open_checked
from ecgscan_cli.formats.common import read_strings, write_header
from ecgscan_cli.formats.common import dataset, read_labels_folds, read_sampling_rate, signal_scale
from ecgscan_cli.leads import LEADS

KIND = "signals"
NAN_SENTINEL = np.int16(-32768)
MAX_MV = 32.767
GZIP_LEVEL = 4
MAX_SAMPLES = 10_000_000   # samples per record a reader accepts (over 5 h at 500 Hz)


def mv_to_int16(signal: np.ndarray, record_id: str = "") -> np.ndarray:
    """float mV → int16 µV; NaN → sentinel; ±inf or out-of-range → EcgscanError."""
    signal = np.asarray(signal, dtype=np.float64)
    if np.isinf(signal).any():
        raise EcgscanError(f"record {record_id!r}: signal contains infinite values")
    micro = np.round(signal * 1000.0)
    finite = ~np.isnan(micro)
    if finite.any() and np.abs(micro[finite]).max() > 32767:
        peak = np.abs(signal[finite]).max()
        raise EcgscanError(
            f"record {record_id!r}: amplitude {peak:.1f} mV is beyond the int16 µV range (±{MAX_MV} mV)"
        )
    out = np.where(finite, micro, NAN_SENTINEL).astype(np.int16)
    return out


def int16_to_mv(raw: np.ndarray) -> np.ndarray:
    out = raw.astype(np.float32) / 1000.0
    out[raw == NAN_SENTINEL] = np.nan
    return out


def stored_to_mv(raw: np.ndarray, scale: float = 1e-3) -> np.ndarray:
    """Stored ``/signal`` values → float32 mV (``scale`` from :func:`formats.common.signal_scale`)."""
    if raw.dtype == np.int16 and scale == 1e-3:
        return int16_to_mv(raw)
    out = raw.astype(np.float32) * np.float32(scale)
    if raw.dtype == np.int16:
        out[raw == NAN_SENTINEL] = np.nan
    return out


def check_signal_dataset(f: h5py.File, path) -> tuple[h5py.Dataset, float, float]:
    """The ``/signal`` dataset of a signals or images file, checked: (dataset, fs, scale to mV)."""
    sig = dataset(f, "signal", path)
    if sig.ndim != 3 or sig.shape[1] != 12:
        raise EcgscanError(f"{path}: /signal has shape {tuple(sig.shape)}, expected [N, 12, T]")
    if not 1 <= sig.shape[2] <= MAX_SAMPLES:
        raise EcgscanError(f"{path}: /signal has {sig.shape[2]:,} samples per record, expected 1 to {MAX_SAMPLES:,}")
    scale = signal_scale(sig, path)
    leads = decode_strings(np.atleast_1d(sig.attrs.get("leads", list(LEADS))))
    if tuple(leads) != LEADS:
        raise EcgscanError(f"{path}: leads {leads} are not in the standard order")
    return sig, read_sampling_rate(sig, path), scale


def encode_signal(signal_mv: np.ndarray, record_id: str = "") -> bytes:
    """One record, float mV ``[12, T]``, as the stored bytes of its ``/signal`` chunk.

    The same bytes HDF5's filter pipeline makes (int16 µV, shuffle, then deflate), so
    the costly compression can run in worker processes and the writer only stores them
    (:meth:`SignalsWriter.write_encoded`).
    """
    import zlib

    raw = mv_to_int16(signal_mv, record_id)
    shuffled = np.ascontiguousarray(raw.reshape(-1).view(np.uint8).reshape(-1, raw.itemsize).T)
    return zlib.compress(shuffled.tobytes(), GZIP_LEVEL)


def create_signal_dataset(f: h5py.File, rows: int, n_samples: int, fs: float) -> h5py.Dataset:
    """The resizable ``/signal`` dataset (int16 µV, one record per chunk) with its attrs."""
    sig = f.create_dataset("signal", shape=(rows, 12, n_samples), maxshape=(None, 12, n_samples), dtype="int16",
                           chunks=(1, 12, n_samples), compression="gzip", compression_opts=GZIP_LEVEL, shuffle=True)
    sig.attrs["fs"] = float(fs)
    sig.attrs["leads"] = list(LEADS)
    sig.attrs["units"] = "uV"
    sig.attrs["nan_sentinel"] = int(NAN_SENTINEL)
    return sig


def create_label_fold_datasets(f: h5py.File, rows: int, classes: Sequence[str]) -> None:
    """Resizable ``/label`` [N, C] uint8 (attr classes) and ``/fold`` [N] int16."""
    c = len(classes)
    lab = f.create_dataset("label", shape=(rows, c), maxshape=(None, c), dtype="uint8",
                           chunks=(1024, max(c, 1)) if c else None)
    lab.attrs["classes"] = list(classes)
    f.create_dataset("fold", shape=(rows,), maxshape=(None,), dtype="int16", chunks=(4096,))


class SignalsWriter(AtomicH5Writer):
    """Stream records into a new signals file; the file appears only once closed cleanly.

    >>> with SignalsWriter("out.h5", classes=["NORM", "MI"]) as w:
    ...     w.append("rec1", signal_mv, report="sinus rhythm", label=[1, 0], fold=3)

    Parameters
    ----------
    path : str or path
        The signals file (HDF5) to write.
    fs : float
        Sampling rate of every record, Hz.
    n_samples : int
        Samples per lead of every record.
    classes : sequence of str
        Class names of the labels (none: an unlabelled file).
    overwrite : bool
        Replace an existing signals file.
    source : str, optional
        Where the records come from (stored in the header).
    attrs : dict, optional
        More header attributes.
    expected_rows : int
        Rows to allocate up front (the file grows as needed).
    label_set : str
        Name of the label set (e.g. ``superclass``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fs: float = canonical.FS,
        n_samples: int = canonical.N_SAMPLES,
        classes: Sequence[str] = (),
        overwrite: bool = False,
        source: str | None = None,
        attrs: dict | None = None,
        expected_rows: int = 0,
        label_set: str = "",
    ):
        self.path = Path(path)
        self.fs = float(fs)
        self.n_samples = int(n_samples)
        self.classes = list(classes)
        self.count = 0
        self._open(path, overwrite, KIND)
        try:
            write_header(self._f, KIND, source, **(attrs or {}))
            cap = max(int(expected_rows), 0)
            t = self.n_samples
            create_signal_dataset(self._f, cap, t, self.fs)
            self._f.create_dataset("id", shape=(cap,), maxshape=(None,), dtype=STR_DTYPE, chunks=(1024,))
            self._f.create_dataset("report", shape=(cap,), maxshape=(None,), dtype=STR_DTYPE, chunks=(1024,))
            create_label_fold_datasets(self._f, cap, self.classes)
            if label_set:
                self._f["label"].attrs["label_set"] = str(label_set)
        except BaseException as e:
            self._abort(e)
            raise

    @property
    def file(self) -> h5py.File:
        """The open HDF5 file (for extra datasets, e.g. image layouts)."""
        return self._f

    def append(self, record_id: str, signal, report: str = "", label=None, fold: int = -1) -> None:
        """Add one record.

        Parameters
        ----------
        record_id : str
            Unique id of the record.
        signal : array [12, n_samples]
            mV, leads in :data:`ecgscan_cli.leads.LEADS` order (NaN where absent).
        report : str
            Free-text report.
        label : array [n_classes], optional
            0/1 per class (zeros when None).
        fold : int
            Cross-validation fold (-1: none).
        """
        signal = np.asarray(signal)
        if signal.shape != (12, self.n_samples):
            raise EcgscanError(f"record {record_id!r}: signal shape {signal.shape}, expected (12, {self.n_samples})")
        raw = mv_to_int16(signal, record_id)
        i = self.count
        self._room_for(i, ("signal", "id", "report", "label", "fold"), 256)
        self._dataset("signal")[i] = raw
        self._dataset("id")[i] = str(record_id)
        self._dataset("report")[i] = report or ""
        self._write_label_fold(i, record_id, label, fold)
        self.count += 1

    # Faster path for big imports: signals pre-encoded elsewhere, stored at any row in any
    # order, then the metadata of all the rows kept written in one call per dataset.

    def write_encoded(self, row: int, chunk: bytes) -> None:
        """Store one record's signal, encoded by :func:`encode_signal`, at ``row``.

        Rows may come in any order and leave holes; :meth:`keep_rows` then says which rows
        the file keeps. Do not mix with :meth:`append`.
        """
        ds = self._dataset("signal")
        if ds.shape[0] <= row:
            ds.resize(max(2 * ds.shape[0], row + 1, 256), axis=0)
        ds.id.write_direct_chunk((int(row), 0, 0), chunk)

    def keep_rows(self, rows: Sequence[int], ids: Sequence[str], reports: Sequence[str] | None = None,
                  labels=None, folds: Sequence[int] | None = None) -> None:
        """Keep the signals stored at ``rows`` (increasing), moved up over the holes, with their metadata."""
        rows = [int(r) for r in rows]
        n = len(rows)
        if any(b <= a for a, b in zip(rows, rows[1:])):
            raise ValueError("keep_rows: rows must be strictly increasing")
        if len(ids) != n:
            raise EcgscanError(f"{len(ids)} ids for {n} records")
        sig = self._dataset("signal")
        for new, old in enumerate(rows):
            if new != old:  # new < old: never overwrites a chunk still to be moved
                mask, chunk = sig.id.read_direct_chunk((old, 0, 0))
                sig.id.write_direct_chunk((new, 0, 0), chunk, mask)
        for name in ("signal", "id", "report", "label", "fold"):
            self._dataset(name).resize(n, axis=0)
        if n:
            self._dataset("id")[:] = np.asarray([str(i) for i in ids], dtype=object)
            self._dataset("report")[:] = np.asarray(["" if r is None else str(r) for r in (reports or [""] * n)],
                                              dtype=object)
            if self.classes:
                lab = np.zeros((n, len(self.classes)), np.uint8) if labels is None else np.asarray(labels, np.uint8)
                if lab.shape != (n, len(self.classes)):
                    raise EcgscanError(f"labels of shape {lab.shape}, expected ({n}, {len(self.classes)})")
                self._dataset("label")[:] = lab
            self._dataset("fold")[:] = np.full(n, -1) if folds is None else np.asarray(folds, np.int16)
        self.count = n

    def add_label_set(self, name: str, classes: Sequence[str], labels) -> None:
        """``/label_sets/<name>`` [N, C] uint8 (attr classes): one more label set for the N records written."""
        lab = np.asarray(labels, np.uint8).reshape(self.count, len(classes))
        if lab.shape[1] != len(classes):
            raise EcgscanError(f"label set {name!r}: {lab.shape[1]} columns for {len(classes)} classes")
        ds = self._f.require_group("label_sets").create_dataset(name, data=lab)
        ds.attrs["classes"] = [str(c) for c in classes]
        self._datasets[f"label_sets/{name}"] = ds   # kept open until close (see AtomicH5Writer)

    def add_record_values(self, name: str, values, attrs: dict | None = None) -> None:
        """``/<name>`` [N]: one value (number or str) per record written, in their order."""
        vals = np.asarray(values)
        if vals.shape != (self.count,):
            raise EcgscanError(f"{name}: {vals.size} values for {self.count} records")
        if vals.dtype.kind in "OUS":
            ds = self._f.create_dataset(name, data=np.asarray([str(v) for v in vals], dtype=object), dtype=STR_DTYPE)
        else:
            ds = self._f.create_dataset(name, data=vals)
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v
        self._datasets[name] = ds   # kept open until close (see AtomicH5Writer)

    def close(self) -> Path:
        for name in ("signal", "id", "report", "label", "fold"):
            self._dataset(name).resize(self.count, axis=0)
        ids = decode_strings(self._dataset("id")[()])
        if len(set(ids)) != len(ids):
            dup = next(x for x in ids if ids.count(x) > 1)
            self._abort(None)
            raise EcgscanError(f"duplicate record id {dup!r}: ids must be unique within a file")
        return self._commit()


def write_signals(
    path, signals: Iterable, ids: Sequence[str], reports: Sequence[str] | None = None,
    labels=None, classes: Sequence[str] = (), folds: Sequence[int] | None = None,
    fs: float = canonical.FS, overwrite: bool = False, source: str | None = None,
) -> Path:
    """Write a whole signals file at once.

    Parameters
    ----------
    path : str or path
        The signals file to write.
    signals : array [N, 12, T] or sequence of [12, T]
        mV, leads in :data:`ecgscan_cli.leads.LEADS` order.
    ids : sequence of str
        Unique record ids.
    reports : sequence of str, optional
        Free-text reports.
    labels : array [N, C], optional
        0/1 labels in the order of ``classes``.
    classes : sequence of str
        Class names.
    folds : sequence of int, optional
        Fold of each record (-1 when None).
    fs : float
        Sampling rate, Hz.
    overwrite : bool
        Replace an existing signals file.
    source : str, optional
        Where the records come from.

    Returns
    -------
    Path
        ``path``.
    """
    signals = list(signals) if not isinstance(signals, np.ndarray) else signals
    n_samples = np.asarray(signals[0]).shape[-1] if len(signals) else canonical.N_SAMPLES
    with SignalsWriter(path, fs=fs, n_samples=n_samples, classes=classes, overwrite=overwrite,
                       source=source, expected_rows=len(ids)) as w:
        for i, rid in enumerate(ids):
            w.append(rid, signals[i], report=reports[i] if reports is not None else "",
                     label=None if labels is None else labels[i],
                     fold=-1 if folds is None else int(folds[i]))
    return Path(path)


class SignalsFile(H5Reader):
    """Read a signals file. Metadata is loaded at once; signals one record at a time.

    Safe to pass to DataLoader workers: the HDF5 handle is reopened in each process.

    Parameters
    ----------
    path : str or path
        A signals file written by ``ecgscan import``/``synth`` or :class:`SignalsWriter`.

    Attributes
    ----------
    ids, reports : list of str
        One per record.
    labels : array [N, C] uint8
        0/1 per class of ``classes``.
    classes : list of str
    folds : array [N]
        Fold of each record (-1: none).
    fs : float
        Sampling rate, Hz.
    n_samples : int
        Samples per lead.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        with open_checked(self.path, KIND) as f:
            for name in ("signal", "id"):
                if name not in f:
                    raise EcgscanError(f"{self.path}: not a valid signals file (missing /{name})")
            sig, self.fs, self._scale = check_signal_dataset(f, self.path)
            self.n, _, self.n_samples = (int(x) for x in sig.shape)
            if self.n == 0:
                raise EcgscanError(f"{self.path}: the file holds no records")
            self.ids = read_strings(f, "id", self.n, self.path)
            self.reports = read_strings(f, "report", self.n, self.path)
            self.labels, self.classes, self.folds = read_labels_folds(f, self.n, self.path)
            self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}

    def signal(self, i: int) -> np.ndarray:
        """Record ``i`` as float32 mV ``[12, T]`` (NaN where absent)."""
        return stored_to_mv(self._handle()["signal"][int(i)], self._scale)

    def signals(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Several records as float32 mV ``[n, 12, T]`` (all when ``indices`` is None), read
        one by one (h5py fancy indexing is ~60× slower)."""
        indices = range(self.n) if indices is None else list(indices)
        ds = self._handle()["signal"]
        out = np.empty((len(indices), 12, self.n_samples), np.float32)
        for j, i in enumerate(indices):
            out[j] = stored_to_mv(ds[int(i)], self._scale)
        return out
