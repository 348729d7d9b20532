"""What every ecgscan HDF5 file shares: the format tag, provenance, string datasets."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, TypeVar

import h5py
import numpy as np

from ecgscan_cli import __version__, canonical
from ecgscan_cli.errors import EcgscanError

FORMAT_ATTR = "ecgscan_format"
FORMAT_VERSION = 1
STR_DTYPE = h5py.string_dtype("utf-8")
_Reader = TypeVar("_Reader", bound="H5Reader")


def format_tag(kind: str) -> str:
    return f"ecgscan-{kind}/{FORMAT_VERSION}"


def write_header(f: h5py.File, kind: str, source: str | None = None, **extra) -> None:
    """Format tag and provenance (source, ecgscan version, command line)."""
    f.attrs[FORMAT_ATTR] = format_tag(kind)
    f.attrs["ecgscan_version"] = __version__
    f.attrs["command_line"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    f.attrs["source"] = "" if source is None else str(source)
    for key, value in extra.items():
        f.attrs[key] = value


def file_kind(path: str | os.PathLike) -> str | None:
    """'signals', 'images', 'embeddings'... for an ecgscan HDF5 file, else None (never raises)."""
    try:
        if not os.path.isfile(path):   # a FIFO or device would block the read
            return None
        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as f:
            tag = f.attrs.get(FORMAT_ATTR)
    except OSError:
        return None
    if isinstance(tag, bytes):
        tag = tag.decode()
    if not isinstance(tag, str) or not tag.startswith("ecgscan-"):
        return None
    return tag[len("ecgscan-"):].split("/")[0]


def open_checked(path: str | os.PathLike, kind: str | tuple[str, ...]) -> h5py.File:
    """Open an ecgscan HDF5 file read-only, checking it is one of the expected kinds."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    path = Path(path)
    wanted = " or ".join(f"an ecgscan {k} file" for k in kinds)
    if not path.exists():
        raise EcgscanError(f"no such file: {path}")
    if path.is_dir():
        raise EcgscanError(f"{path} is a folder, expected {wanted}")
    if not path.is_file():   # never opened: reading a FIFO or a device blocks forever
        raise EcgscanError(f"{path} is not a regular file (FIFO, device or socket), expected {wanted}")
    if not h5py.is_hdf5(path):
        raise EcgscanError(f"{path} is not an HDF5 file (expected {wanted})")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise EcgscanError(f"cannot open {path}: {e}") from None
    tag = f.attrs.get(FORMAT_ATTR)
    if isinstance(tag, bytes):
        tag = tag.decode()
    found = tag[len("ecgscan-"):].split("/") if isinstance(tag, str) and tag.startswith("ecgscan-") else None
    if found is None:
        f.close()
        raise EcgscanError(f"{path} is an HDF5 file but not an ecgscan file (expected {wanted})")
    if found[0] not in kinds:
        f.close()
        raise EcgscanError(f"{path} is an ecgscan {found[0]} file, expected {wanted}")
    if len(found) > 1 and found[1].isdigit() and int(found[1]) > FORMAT_VERSION:
        f.close()
        raise EcgscanError(f"{path} was written by a newer ecgscan (format version {found[1]}); please upgrade")
    return f


def decode_strings(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


# ---- reading untrusted files: what a file declares is checked before anything is read

MAX_RECORDS = 20_000_000          # far beyond any ECG collection; a bigger N is a damaged file
MAX_CHUNK_BYTES = 512 * 2 ** 20   # one chunk is decompressed whole to read any part of it
READ_ROWS = 65_536                # metadata is read this many rows at a time


def dataset(f: h5py.File, name: str, path: str | os.PathLike) -> h5py.Dataset:
    """``f[name]`` checked against what the file can really hold, before any of it is read.

    A small file can declare a dataset of any size (unwritten chunks read as fill values),
    so reading it blindly can exhaust memory; a dataset can also keep its data in another
    file (external storage, virtual datasets) and so read any file of the system. Both are
    refused in one line.
    """
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise EcgscanError(f"{path}: /{name} is not a dataset")
    ds = obj
    where = f"{path}: /{name}"
    if ds.is_virtual or ds.external:
        raise EcgscanError(f"{where} keeps its data outside the file (external or virtual storage); refused")
    if ds.shape is None:
        raise EcgscanError(f"{where} holds no data (null dataspace)")
    if ds.ndim and ds.shape[0] > MAX_RECORDS:
        raise EcgscanError(f"{where} declares {ds.shape[0]:,} records (more than {MAX_RECORDS:,}): damaged file?")
    itemsize = max(int(ds.dtype.itemsize), 1)
    if ds.size == 0:
        return ds
    if ds.chunks is not None:
        chunk_bytes = int(np.prod(ds.chunks, dtype=np.float64)) * itemsize
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise EcgscanError(f"{where} has chunks of {chunk_bytes / 2 ** 20:.0f} MiB (at most "
                               f"{MAX_CHUNK_BYTES // 2 ** 20} MiB are read at once); damaged file?")
        declared = int(np.prod([-(-s // c) for s, c in zip(ds.shape, ds.chunks)], dtype=np.float64))
        try:
            stored = int(ds.id.get_num_chunks())
        except Exception:  # an HDF5 without chunk queries: fall back on the storage size below
            stored = declared
        if stored < declared:
            raise EcgscanError(f"{where} declares shape {tuple(ds.shape)} but the file stores only {stored:,} of "
                               f"its {declared:,} chunks (truncated, damaged or hostile file)")
    else:
        storage = int(ds.id.get_storage_size())
        if storage < ds.size * min(itemsize, 8):
            raise EcgscanError(f"{where} declares shape {tuple(ds.shape)} ({ds.size * itemsize:,} bytes) but the "
                               f"file stores {storage:,} bytes (truncated, damaged or hostile file)")
        with contextlib.suppress(OSError):
            if storage > os.path.getsize(path):
                raise EcgscanError(f"{where} declares more data than the whole file holds (damaged file?)")
    return ds


def read_rows(ds: h5py.Dataset) -> np.ndarray:
    """A whole (checked) dataset, read :data:`READ_ROWS` rows at a time."""
    n = ds.shape[0] if ds.ndim else 0
    if n <= READ_ROWS:
        return ds[()]
    return np.concatenate([ds[i:i + READ_ROWS] for i in range(0, n, READ_ROWS)])


def read_strings(f: h5py.File, name: str, n: int, path: str | os.PathLike | None = None) -> list[str]:
    """``/name`` as ``n`` strings ("" each when absent); with ``path``, a dataset that is not
    1-D of strings with ``n`` rows is refused in one line."""
    if name not in f:
        return [""] * n
    if path is None:
        return decode_strings(f[name][()])
    ds = dataset(f, name, path)
    if ds.ndim != 1 or ds.shape[0] != n:
        raise EcgscanError(f"{path}: /{name} has shape {tuple(ds.shape)}, expected [{n}] (one per record)")
    if ds.dtype.kind not in ("O", "S", "U"):
        raise EcgscanError(f"{path}: /{name} holds {ds.dtype} values, expected strings")
    try:
        return decode_strings(read_rows(ds))
    except UnicodeDecodeError:
        raise EcgscanError(f"{path}: /{name} holds strings that are not UTF-8") from None


def read_int_rows(f: h5py.File, name: str, n: int, path: str | os.PathLike, *, columns: bool = False) -> np.ndarray:
    """``/name`` as integers, checked to hold ``n`` rows (``[n]``, or ``[n, C]`` with ``columns``)."""
    ds = dataset(f, name, path)
    want = "[N, C]" if columns else "[N]"
    if ds.ndim != (2 if columns else 1) or ds.shape[0] != n:
        raise EcgscanError(f"{path}: /{name} has shape {tuple(ds.shape)}, expected {want} with N = {n} records")
    if ds.dtype.kind not in ("i", "u", "b"):
        raise EcgscanError(f"{path}: /{name} holds {ds.dtype} values, expected integers")
    return read_rows(ds)


def read_sampling_rate(ds: h5py.Dataset, path: str | os.PathLike, default: float = canonical.FS) -> float:
    """The ``fs`` attribute of a signal dataset: a finite number of Hz in a usable range."""
    fs = ds.attrs.get("fs", default)
    try:
        value = float(np.asarray(fs).reshape(-1)[0]) if np.size(fs) == 1 else float("nan")
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and 1.0 <= value <= 100_000.0):
        shown = fs.decode("utf-8", "replace") if isinstance(fs, bytes) else np.asarray(fs).tolist()
        raise EcgscanError(f"{path}: /{ds.name.lstrip('/')} has sampling rate fs={shown!r}; expected a number "
                           "of Hz between 1 and 100000")
    return value


def read_labels_folds(f: h5py.File, n: int, path: str | os.PathLike) -> tuple[np.ndarray, list[str], np.ndarray]:
    """``/label`` [N, C] uint8 with its class names and ``/fold`` [N], each checked against N."""
    if "label" in f:
        labels = read_int_rows(f, "label", n, path, columns=True)
        classes = read_classes(f["label"])
        if len(classes) != labels.shape[1]:
            raise EcgscanError(f"{path}: /label has {labels.shape[1]} columns but {len(classes)} class names")
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise EcgscanError(f"{path}: /label holds values other than 0 and 1")
        labels = labels.astype(np.uint8)
    else:
        labels, classes = np.zeros((n, 0), np.uint8), []
    folds = read_int_rows(f, "fold", n, path).astype(int) if "fold" in f else np.full(n, -1)
    return labels, classes, folds


def signal_scale(ds: h5py.Dataset, path: str | os.PathLike) -> float:
    """Factor from stored ``/signal`` values to mV, from its dtype and ``units`` attribute.

    ecgscan stores int16 µV; float data (other tools) is read in its declared units
    (``mV`` when none are declared), never taken for µV by mistake.
    """
    where = f"{path}: /{ds.name.lstrip('/')}"
    if ds.dtype.kind not in ("i", "u", "f"):
        raise EcgscanError(f"{where} holds {ds.dtype} values, expected numbers (int16 µV or float mV)")
    units = ds.attrs.get("units", "uV" if ds.dtype.kind in "iu" else "mV")
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    unit = str(units).strip().lower().replace("µ", "u").replace("μ", "u")
    scale = {"uv": 1e-3, "mv": 1.0, "v": 1e3}.get(unit)
    if scale is None:
        raise EcgscanError(f"{where} has units {units!r}; expected uV, mV or V")
    return scale


def read_classes(dataset) -> list[str]:
    classes = dataset.attrs.get("classes", [])
    return decode_strings(np.atleast_1d(classes)) if len(classes) else []


def _scratch_fd() -> int:
    """A file descriptor on an anonymous scratch file (in memory where the OS allows)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("ecgscan-discarded-hdf5")
    import tempfile

    fd, name = tempfile.mkstemp(prefix="ecgscan-discarded-")
    os.unlink(name)
    return fd


def discard_h5(f: h5py.File | None) -> None:
    """Close a file being written whose content no longer matters, without writing to its disk.

    HDF5 flushes its caches when a file is closed; after a write error (a full disk) that
    flush fails again, the library keeps the file open, and h5py's object finalizers
    repeat the error thousands of times before the interpreter crashes at exit. So the
    file's descriptor is first pointed at a scratch file: the closing flush goes there,
    every handle is released, and the partial file's blocks are freed once unlinked.
    """
    if f is None:
        return
    try:
        if not f.id.valid:
            return
        fd = f.id.get_vfd_handle()
    except Exception:
        fd = None
    if isinstance(fd, int) and fd >= 0:
        with contextlib.suppress(OSError):
            sink = _scratch_fd()
            os.dup2(sink, fd)
            os.close(sink)
    with contextlib.suppress(Exception):
        f.close()


@contextlib.contextmanager
def h5_output(path: str | os.PathLike, *, overwrite: bool, kind: str) -> Iterator[h5py.File]:
    """A new HDF5 file written whole inside the block, committed atomically; on any error
    (a full disk included: one :class:`EcgscanFailure`) nothing is left behind."""
    from ecgscan_cli.atomic import atomic_output

    with atomic_output(path, overwrite=overwrite, kind=kind) as tmp:
        f = h5py.File(tmp, "w")
        try:
            yield f
            f.flush()   # write errors surface here, as exceptions, not in finalizers
        except BaseException:
            discard_h5(f)
            raise
        try:
            f.close()
        except BaseException:
            discard_h5(f)
            raise


class H5Reader:
    """What the lazily opened readers (``SignalsFile``, ``ImagesFile``) share: a subclass
    reads its metadata in ``__init__`` and sets ``path``, ``n`` and ``ids``; the HDF5 handle
    is opened on first use and again in each process, and never pickled, so a reader is
    safe to pass to DataLoader workers."""

    path: Path
    n: int
    ids: list[str]
    _f: h5py.File | None = None
    _pid: int | None = None

    def __len__(self) -> int:
        return self.n

    def _handle(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._f

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

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AtomicH5Writer:
    """Lifecycle shared by the streaming writers: an HDF5 file under a temporary name that
    is renamed to its real name only by a clean :meth:`close`; any error removes it.

    Datasets are opened once and kept (:meth:`_dataset`): a dataset object dropped after
    each write would flush its chunks from its finalizer, where a write error (a full
    disk) cannot be raised, only printed. Kept open, write errors reach the caller.
    """

    path: Path
    classes: list[str]
    _f: h5py.File | None = None

    def _open(self, path: str | os.PathLike, overwrite: bool, kind: str | None = None) -> h5py.File:
        from ecgscan_cli.atomic import atomic_output

        self.path = Path(path)
        self._datasets: dict[str, h5py.Dataset] = {}
        self._ctx = atomic_output(self.path, overwrite=overwrite, kind=kind)
        tmp = self._ctx.__enter__()
        try:
            self._f = h5py.File(tmp, "w")
        except BaseException as e:
            self._ctx.__exit__(type(e), e, None)
            raise
        return self._f

    def _dataset(self, name: str) -> h5py.Dataset:
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets[name] = self._f[name]
        return ds

    def _room_for(self, row: int, names, minimum: int) -> None:
        """Grow the datasets ``names`` (doubling, at least ``minimum`` rows) to hold ``row``."""
        for name in names:
            ds = self._dataset(name)
            if ds.shape[0] <= row:
                ds.resize(max(2 * ds.shape[0], minimum), axis=0)

    def _write_label_fold(self, row: int, record_id: str, label, fold: int) -> None:
        """Row ``row`` of the ``label`` (0/1 per class of the writer's ``classes``, zeros
        when None; only where the file has classes) and ``fold`` datasets."""
        classes = self.classes
        if classes:
            label = np.zeros(len(classes), np.uint8) if label is None else np.asarray(label, np.uint8)
            if label.shape != (len(classes),):
                raise EcgscanError(f"record {record_id!r}: {label.size} labels for {len(classes)} classes")
            self._dataset("label")[row] = label
        self._dataset("fold")[row] = int(fold)

    def _commit(self) -> Path:
        try:
            self._f.flush()
            self._datasets.clear()
            self._f.close()
        except BaseException as e:
            self._abort(e)
            raise
        self._f = None
        ctx, self._ctx = self._ctx, None
        ctx.__exit__(None, None, None)
        return self.path

    def _abort(self, exc) -> None:
        """Discard the partial file; a full disk is re-raised as one :class:`EcgscanFailure`."""
        from ecgscan_cli.atomic import disk_full_error, is_disk_full

        f, self._f = self._f, None
        datasets, self._datasets = self._datasets, {}
        discard_h5(f)   # before the datasets go: dropping one would flush it to the full disk
        del datasets
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx is not None:
            err = exc if exc is not None else EcgscanError("aborted")
            try:
                ctx.__exit__(type(err), err, None)
            except BaseException:
                pass
        if exc is not None and is_disk_full(exc):
            raise disk_full_error(self.path) from None

    def close(self) -> Path:
        return self._commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)
