"""WFDB signal files → physical units: ``.dat`` (format 16 read here, any other format through
wfdb-python) and PhysioNet/CinC challenge ``.mat``, from a folder or from an archive in memory.

Reads are bounded by what the header declares: a truncated file is a :class:`RecordError`,
a file holding more than its header says is read as the header says (and flagged).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ecgscan_cli.archives import RecordFiles
from ecgscan_cli.importing.errors import RecordError
from ecgscan_cli.importing.wfdb_header import (
    Header, check_regular_file, parse_header, parse_header_text, signal_file_inside,
)

MIN_FS = 50.0
MAX_FS = 20000.0


# bytes per sample of the WFDB formats, to count the samples a signal file really holds
_BYTES_PER_SAMPLE = {"8": 1.0, "80": 1.0, "16": 2.0, "61": 2.0, "160": 2.0, "24": 3.0, "32": 4.0,
                     "212": 1.5, "310": 4 / 3, "311": 4 / 3}


def _samples_in_file(header: Header, nbytes: int) -> int | None:
    """How many samples per signal a single signal file of ``nbytes`` holds (None: unknown)."""
    fmts = set(header.fmt)
    if len(fmts) != 1 or any(s != 1 for s in header.spf) or len(set(header.byte_offset)) != 1:
        return None
    bps = _BYTES_PER_SAMPLE.get(next(iter(fmts)))
    if bps is None:
        return None
    return int((nbytes - header.byte_offset[0]) // (bps * header.n_sig))


def read_wfdb(record: str | os.PathLike | RecordFiles, flags: Counter | None = None,
              ) -> tuple[np.ndarray, list[str], float, list[str]]:
    """Read a WFDB record (``.dat`` or challenge ``.mat``) → (signal [L, T] mV, names, fs, comments).

    ``record`` is a path (with or without ``.hea``) or a record's files already in memory
    (:class:`archives.RecordFiles`, read from an archive). A header announcing fewer
    samples than its signal file holds is read as the header says and counted in
    ``flags["header_shorter"]``.
    """
    if isinstance(record, RecordFiles):
        name = record.key
        text = record.files.get(record.header_name)
        if text is None:
            where = f"not in {record.archive}" if record.archive else "not found"
            raise RecordError("missing header", f"{name}.hea: {where}")
        header = parse_header_text(text.decode("latin-1"), f"{name}.hea")
        exists, load = record.files.__contains__, record.files.__getitem__
        size = lambda file_name: len(record.files[file_name])  # noqa: E731
    else:
        name = str(record)
        if name.endswith(".hea"):
            name = name[:-4]
        header = parse_header(name)
        folder = os.path.dirname(name)
        for file_name in dict.fromkeys(header.file_name):
            signal_file_inside(folder, file_name)

        def exists(file_name: str) -> bool:
            target = os.path.join(folder, file_name)
            if os.path.lexists(target):
                check_regular_file(target, "signal file")
                return True
            return False

        def load(file_name: str) -> bytes:
            return Path(folder, file_name).read_bytes()

        def size(file_name: str) -> int:
            return os.path.getsize(os.path.join(folder, file_name))
    files = list(dict.fromkeys(header.file_name))
    for file_name in files:
        if not exists(file_name):
            raise RecordError("missing signal file", f"{name}.hea: signal file {file_name} does not exist")
    fs = header.fs
    if not (math.isfinite(fs) and MIN_FS <= fs <= MAX_FS):
        raise RecordError("bad sampling rate", f"{name}: sampling rate {fs:g} Hz is not usable "
                          f"(need {MIN_FS:g} to {MAX_FS:g} Hz)")
    in_file = None
    if len(files) == 1 and files[0].lower().endswith(".mat"):
        sig = _read_mat(name, header, files[0], load(files[0]))
        in_file = sig.shape[1]
        if header.sig_len and sig.shape[1] > header.sig_len:
            sig = sig[:, :header.sig_len]
    elif (len(files) == 1 and all(f == "16" for f in header.fmt) and all(s == 1 for s in header.spf)
          and not any(header.skew) and len(set(header.byte_offset)) == 1):
        sig = _read_fmt16(name, header, files[0], load(files[0]))
    elif isinstance(record, RecordFiles):
        sig = _read_in_memory_with_wfdb(record, header)
    else:
        sig = _read_with_wfdb(name, header)
    n = header.sig_len
    if in_file is None and len(files) == 1:
        in_file = _samples_in_file(header, size(files[0]))
    if n and in_file is not None and in_file > n and flags is not None:
        flags["header_shorter"] += 1
    if n and sig.shape[1] < n:
        raise RecordError("unreadable signal", f"{name}: signal file holds {sig.shape[1]} samples, "
                          f"header says {n} (truncated?)")
    if sig.shape[1] == 0:
        raise RecordError("empty record", f"{name}: no samples")
    return sig, header.sig_name, fs, header.comments


def _physical(digital: np.ndarray, header: Header) -> np.ndarray:
    """[L, T] digital → mV (NaN where the value is WFDB's invalid-sample code)."""
    scale = (_unit_scale(header.units, header.n_sig) / np.asarray(header.adc_gain, np.float64))[:, None]
    base = np.asarray(header.baseline, np.float64)[:, None]
    out = (digital - base.astype(np.float32)) * scale.astype(np.float32)
    out = out.astype(np.float32, copy=False)
    invalid = digital == -32768
    if invalid.any():
        out[invalid] = np.nan
    return out


def _read_fmt16(record: str, header: Header, file_name: str, data: bytes) -> np.ndarray:
    offset = header.byte_offset[0]
    size = len(data) - offset
    frame = 2 * header.n_sig
    n = header.sig_len if header.sig_len else max(size, 0) // frame
    if size < n * frame:
        raise RecordError("unreadable signal", f"{record}: {file_name} is truncated "
                          f"({max(size, 0)} bytes, expected {n * frame})")
    raw = np.frombuffer(data, dtype="<i2", count=n * header.n_sig, offset=offset)
    return _physical(raw.reshape(n, header.n_sig).T, header)


def _read_with_wfdb(record: str, header: Header) -> np.ndarray:
    import wfdb

    try:
        rec = wfdb.rdrecord(record, physical=True, return_res=32)
    except Exception as e:
        raise RecordError("unreadable signal", f"{record}: cannot read signal file ({e}); "
                          "missing or truncated?") from None
    if rec.p_signal is None:
        raise RecordError("unreadable signal", f"{record}: no samples")
    return (np.asarray(rec.p_signal, np.float64) * _unit_scale(header.units, header.n_sig)).astype(np.float32).T


def _read_in_memory_with_wfdb(record: RecordFiles, header: Header) -> np.ndarray:
    """Formats other than 16 from an archive: wfdb reads files, so lend it a temporary folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ecgscan-record-") as tmp:
        for file_name, data in record.files.items():
            Path(tmp, file_name).write_bytes(data)
        return _read_with_wfdb(os.path.join(tmp, record.header_name[:-4]), header)


def _read_mat(record: str, header, file_name: str, data: bytes) -> np.ndarray:
    import io

    from scipy.io import loadmat

    try:
        val = loadmat(io.BytesIO(data))["val"]
    except Exception as e:
        raise RecordError("unreadable signal", f"{record}: cannot read {file_name} ({e})") from None
    val = np.asarray(val)
    if val.ndim != 2 or val.shape[0] != header.n_sig:
        raise RecordError("unreadable signal", f"{record}: {file_name} holds {val.shape}, "
                          f"header lists {header.n_sig} signals")
    return _physical(val, header)


def _unit_scale(units: Sequence[str] | None, n: int) -> np.ndarray:
    units = [str(u).lower() if u else "mv" for u in (units or ["mV"] * n)]
    return np.array([1e-3 if u in ("uv", "µv") else 1e3 if u == "v" else 1.0 for u in units])

