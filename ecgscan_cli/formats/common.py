"""What every ecgscan HDF5 file shares: the format tag, provenance, string datasets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np

from ecgscan_cli import __version__
from ecgscan_cli.errors import EcgscanError

FORMAT_ATTR = "ecgscan_format"
FORMAT_VERSION = 1
STR_DTYPE = h5py.string_dtype("utf-8")


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


def read_strings(f: h5py.File, name: str, n: int) -> list[str]:
    if name not in f:
        return [""] * n
    return decode_strings(f[name][()])


def read_classes(dataset) -> list[str]:
    classes = dataset.attrs.get("classes", [])
    return decode_strings(np.atleast_1d(classes)) if len(classes) else []


class AtomicH5Writer:
    """Lifecycle shared by the streaming writers: an HDF5 file under a temporary name that
    is renamed to its real name only by a clean :meth:`close`; any error removes it."""

    path: Path
    _f: h5py.File | None = None

    def _open(self, path: str | os.PathLike, overwrite: bool) -> h5py.File:
        from ecgscan_cli.atomic import atomic_output

        self.path = Path(path)
        self._ctx = atomic_output(self.path, overwrite=overwrite)
        tmp = self._ctx.__enter__()
        try:
            self._f = h5py.File(tmp, "w")
        except BaseException as e:
            self._ctx.__exit__(type(e), e, None)
            raise
        return self._f

    def _commit(self) -> Path:
        self._f.close()
        self._ctx.__exit__(None, None, None)
        return self.path

    def _abort(self, exc) -> None:
        try:
            if self._f is not None and self._f.id.valid:
                self._f.close()
        finally:
            err = exc if exc is not None else EcgscanError("aborted")
            if hasattr(self, "_ctx"):
                try:
                    self._ctx.__exit__(type(err), err, None)
                except BaseException:
                    pass

    def close(self) -> Path:
        return self._commit()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)
