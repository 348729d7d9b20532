"""PTB-XL (folders or archives) and WFDB folders → canonical 12 × 5000 records in a signals file.

Canonical form: leads reordered by name (case-insensitive, :func:`leads.canonical_lead_name`)
to ``I II III aVR aVL aVF V1..V6``, resampled to 500 Hz (polyphase), the first 10 s kept
(shorter records padded with zeros, or NaN with ``pad="nan"``), millivolts.

Two kinds of input:

* **PTB-XL** (``ptbxl_database.csv`` + ``records100/`` / ``records500/``, or the records
  in archives: see :mod:`ptbxl_source`): the report text, ``strat_fold`` as fold, and the
  SCP codes mapped to the four label sets of the PTB-XL benchmark (Strodthoff et al.)
  through ``scp_statements.csv``: ``superclass`` (diagnostic_class, 5), ``subclass``
  (diagnostic_subclass, 23), ``form`` (19) and ``rhythm`` (12), one or several per file
  (the first in ``/label``, the others in ``/label_sets/<name>``). As in the benchmark
  code every listed code counts whatever its likelihood (``min_likelihood=0``); a
  threshold applies to diagnostic statements only (form/rhythm statements always carry
  likelihood 0 in PTB-XL). Records without a label of the (first) set keep an all-zero
  row (the benchmark drops them; so does ``drop_unlabelled=True``). Rows follow the CSV.
* **any folder of WFDB records** (searched recursively for ``.hea``), signal files
  ``.dat`` (any WFDB format) or ``.mat`` (PhysioNet/CinC 2020-2021 challenges: MATLAB
  ``val`` matrix + header). ``# Dx:`` SNOMED CT codes in the header comments become the
  labels (classes = the codes found, sorted) and a short report naming them.

Bad records (missing/truncated signal file, missing or unknown leads, unusable sampling
rate, infinite values, amplitudes beyond ±32.767 mV) are skipped and counted by reason,
or stop the import with ``strict=True``. Big imports are read, resampled and compressed
by a pool of processes; the parent only reads archives and stores the compressed chunks.
"""

from __future__ import annotations

import ast
import functools
import logging
import math
import os
import re
import stat
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ecgscan_cli.archives import RecordFiles
from ecgscan_cli.errors import EcgscanError, EcgscanFailure
from ecgscan_cli.leads import LEADS, canonical_lead_name

log = logging.getLogger("ecgscan.import")

FS_OUT = 500.0
N_OUT = 5000
MIN_FS = 50.0
MAX_FS = 20000.0
LABEL_SETS = ("superclass", "subclass", "form", "rhythm", "dx", "none")
PTBXL_LABEL_SETS = ("superclass", "subclass", "form", "rhythm")
LIMB = ("I", "II", "III", "aVR", "aVL", "aVF")
# each limb lead as a combination of (I, II)
_LIMB_COEF = {"I": (1.0, 0.0), "II": (0.0, 1.0), "III": (-1.0, 1.0), "aVR": (-0.5, -0.5),
              "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0)}

# SNOMED CT codes scored in the PhysioNet/CinC 2020-2021 challenges (for readable reports)
SNOMED_NAMES = {
    "164889003": "atrial fibrillation", "164890007": "atrial flutter", "6374002": "bundle branch block",
    "426627000": "bradycardia", "733534002": "complete left bundle branch block",
    "713427006": "complete right bundle branch block", "270492004": "first degree av block",
    "713426002": "incomplete right bundle branch block", "39732003": "left axis deviation",
    "445118002": "left anterior fascicular block", "164909002": "left bundle branch block",
    "251146004": "low qrs voltages", "698252002": "nonspecific intraventricular conduction disorder",
    "426783006": "sinus rhythm", "284470004": "premature atrial contraction", "10370003": "pacing rhythm",
    "365413008": "poor r wave progression", "427172004": "premature ventricular contractions",
    "164947007": "prolonged pr interval", "111975006": "prolonged qt interval", "164917005": "q wave abnormal",
    "47665007": "right axis deviation", "59118001": "right bundle branch block", "427393009": "sinus arrhythmia",
    "426177001": "sinus bradycardia", "427084000": "sinus tachycardia",
    "63593006": "supraventricular premature beats", "164934002": "t wave abnormal",
    "59931005": "t wave inversion", "17338001": "ventricular premature beats",
}


def _printable(text: str) -> str:
    """Control characters (terminal escape sequences in file names) shown escaped."""
    from ecgscan_cli.errors import printable

    return printable(text)


class RecordError(EcgscanError):
    """One record cannot be imported; ``reason`` is a short category for the summary."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class ImportOptions:
    derive_limb_leads: bool = False
    pad: str = "zero"             # zero | nan


@dataclass
class ImportStats:
    found: int = 0
    imported: int = 0
    skipped: Counter = field(default_factory=Counter)   # reason -> count
    resampled: int = 0
    padded: int = 0
    derived: int = 0
    cropped: int = 0          # longer than 10 s: only the first 10 s kept
    header_shorter: int = 0   # the header announces fewer samples than the signal file holds
    examples: dict = field(default_factory=dict)        # reason -> first message
    skipped_names: dict = field(default_factory=dict)   # reason -> every record id skipped for it

    def skip(self, reason: str, message: str, record_id: str) -> None:
        """Count one skipped record; the first three of a reason are logged, all are kept."""
        self.skipped[reason] += 1
        self.examples.setdefault(reason, message)
        self.skipped_names.setdefault(reason, []).append(record_id)
        if self.skipped[reason] <= 3:
            log.warning("skipped %s", _printable(message))

    def skipped_lines(self) -> list[str]:
        """``reason: id id id ...`` for every skip reason, with every record id."""
        return [f"{reason} ({len(ids)}): {' '.join(_printable(i) for i in ids)}"
                for reason, ids in sorted(self.skipped_names.items())]

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def rows(self) -> list[dict]:
        rows = [{"item": "records found", "count": self.found}, {"item": "imported", "count": self.imported},
                {"item": "skipped", "count": self.n_skipped}]
        rows += [{"item": f"  skipped: {r}", "count": c} for r, c in sorted(self.skipped.items())]
        rows += [{"item": "resampled to 500 Hz", "count": self.resampled},
                 {"item": "padded to 10 s", "count": self.padded},
                 {"item": "limb leads derived", "count": self.derived},
                 {"item": "cropped to the first 10 s", "count": self.cropped},
                 {"item": "header shorter than its signal file", "count": self.header_shorter}]
        return rows


@dataclass
class Task:
    """One record to read: header path without suffix (or path inside an archive), id, metadata."""

    record: str
    id: str
    report: str = ""
    fold: int = -1


# --------------------------------------------------------------------------------------
# reading one record


def _parse_dx(comments: Iterable[str]) -> list[str]:
    codes: list[str] = []
    for c in comments:
        m = re.match(r"\s*#?\s*dx\s*:\s*(.*)$", c, flags=re.IGNORECASE)
        if m:
            codes += [x.strip() for x in re.split(r"[,;\s]+", m.group(1)) if x.strip()]
    return list(dict.fromkeys(codes))


def dx_report(codes: Sequence[str]) -> str:
    return "; ".join(SNOMED_NAMES.get(c, f"snomed {c}") for c in codes)


@dataclass
class Header:
    """The parts of a WFDB header that import needs."""

    n_sig: int
    fs: float
    sig_len: int | None
    file_name: list[str]
    fmt: list[str]
    byte_offset: list[int]
    spf: list[int]
    skew: list[int]
    adc_gain: list[float]
    baseline: list[int]
    units: list[str]
    sig_name: list[str]
    comments: list[str]


_SIG_FMT = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+0-9.eE]+)(?:\(([-+]?\d+)\))?(?:/(\S+))?$")


MAX_HEADER_BYTES = 1 << 20   # a 12-lead header is about 1 KB; PTB-XL's longest under 4 KB


def _check_regular(path: str, what: str) -> None:
    """Refuse (skip) anything but a regular file before opening it: reading a FIFO or a
    device would block the import forever."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "missing header" if what == "header" else "missing signal file"
        raise RecordError(reason, f"{path}: no such file") from None
    except OSError as e:
        raise RecordError(f"unreadable {what}", f"{path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RecordError("not a regular file", f"{path}: not a regular file (FIFO, device or socket); skipped")


def _inside(folder: str, file_name: str) -> str:
    """The path of a header's signal file, which must resolve inside the record's folder:
    a header naming ``/etc/...`` or ``../../x`` must not make import read that file."""
    base = os.path.realpath(folder or ".")
    target = os.path.realpath(os.path.join(base, file_name))
    if os.path.isabs(file_name) or os.path.commonpath([base, target]) != base:
        raise RecordError("signal file outside the record's folder",
                          f"{os.path.join(folder, '')}: header names signal file {file_name!r}, which is outside "
                          "the record's folder; skipped")
    return target


def parse_header(record: str) -> Header:
    """Parse ``record.hea`` (single-segment WFDB header) without pandas: fast for big folders."""
    path = record + ".hea"
    _check_regular(path, "header")
    try:
        with open(path, encoding="latin-1") as f:
            text = f.read(MAX_HEADER_BYTES + 1)
        if len(text) > MAX_HEADER_BYTES:
            raise RecordError("unreadable header", f"{path}: larger than {MAX_HEADER_BYTES // 1024} KB, "
                              "not a WFDB header")
    except FileNotFoundError:
        raise RecordError("missing header", f"{path}: no such file") from None
    except OSError as e:
        raise RecordError("unreadable header", f"{path}: {e.strerror}") from None
    return parse_header_text(text, path)


def parse_header_text(text: str, path: str) -> Header:
    """Parse the text of a WFDB header; ``path`` names it in messages."""
    comments, lines = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
        else:
            lines.append(stripped.split("#", 1)[0].split())
    bad = f"{path}: not a valid WFDB header"
    if not lines or len(lines[0]) < 2:
        raise RecordError("unreadable header", bad + " (no record line)")
    rec = lines[0]
    if "/" in rec[0]:
        raise RecordError("unsupported record", f"{path}: multi-segment records are not supported")
    try:
        n_sig = int(rec[1])
        fs = float(re.split(r"[/(]", rec[2])[0]) if len(rec) > 2 else 250.0
        sig_len = int(rec[3]) if len(rec) > 3 else None
    except ValueError:
        raise RecordError("unreadable header", bad + f" (record line {' '.join(rec)!r})") from None
    if n_sig <= 0:
        raise RecordError("empty record", f"{path}: no signals")
    if len(lines) - 1 < n_sig:
        raise RecordError("unreadable header", bad + f" ({n_sig} signals announced, {len(lines) - 1} described)")
    h = Header(n_sig, fs, sig_len, [], [], [], [], [], [], [], [], [], comments)
    for k, fields in enumerate(lines[1:n_sig + 1]):
        if len(fields) < 2:
            raise RecordError("unreadable header", bad + f" (signal line {k + 1})")
        m = _SIG_FMT.match(fields[1])
        if not m:
            raise RecordError("unreadable header", bad + f" (signal format {fields[1]!r})")
        h.file_name.append(fields[0])
        h.fmt.append(m.group(1))
        h.spf.append(int(m.group(2) or 1))
        h.skew.append(int(m.group(3) or 0))
        h.byte_offset.append(int(m.group(4) or 0))
        gain, baseline, units = 200.0, None, "mV"
        if len(fields) > 2:
            g = _GAIN.match(fields[2])
            if not g:
                raise RecordError("unreadable header", bad + f" (gain {fields[2]!r})")
            try:
                gain = float(g.group(1)) or 200.0
            except ValueError:
                raise RecordError("unreadable header", bad + f" (gain {fields[2]!r})") from None
            baseline = int(g.group(2)) if g.group(2) is not None else None
            units = g.group(3) or "mV"
        adc_zero = int(fields[4]) if len(fields) > 4 and fields[4].lstrip("-+").isdigit() else 0
        h.adc_gain.append(gain)
        h.baseline.append(adc_zero if baseline is None else baseline)
        h.units.append(units)
        h.sig_name.append(" ".join(fields[8:]) if len(fields) > 8 else f"signal{k}")
    return h


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
            _inside(folder, file_name)

        def exists(file_name: str) -> bool:
            target = os.path.join(folder, file_name)
            if os.path.lexists(target):
                _check_regular(target, "signal file")
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


def canonicalize(sig: np.ndarray, names: Sequence[str], fs: float, *, record_id: str = "",
                 options: ImportOptions | None = None, flags: Counter | None = None) -> np.ndarray:
    """[L, T] mV with lead ``names`` at ``fs`` → [12, N_OUT] float32 at ``FS_OUT`` in LEADS order
    (the signals file's fixed rate and length)."""
    opt = options or ImportOptions()
    flags = flags if flags is not None else Counter()
    sig = np.asarray(sig)
    if sig.dtype not in (np.float32, np.float64):
        sig = sig.astype(np.float64)
    all_finite = bool(np.isfinite(sig).all())
    if not all_finite and np.isinf(sig).any():
        raise RecordError("infinite values", f"{record_id}: signal contains infinite values")
    by_name: dict[str, np.ndarray] = {}
    unknown = []
    for i, name in enumerate(names):
        canon = canonical_lead_name(name)
        if canon is None:
            unknown.append(str(name))
        elif canon not in by_name and (all_finite or not np.isnan(sig[i]).all()):
            by_name[canon] = sig[i]
    missing = [ld for ld in LEADS if ld not in by_name]
    if missing and opt.derive_limb_leads:
        limb_missing = [ld for ld in missing if ld in LIMB]
        present = [ld for ld in LIMB if ld in by_name]
        basis = None
        for a in range(len(present)):
            for b in range(a + 1, len(present)):
                m = np.array([_LIMB_COEF[present[a]], _LIMB_COEF[present[b]]])
                if abs(np.linalg.det(m)) > 1e-9:
                    basis = (present[a], present[b], np.linalg.inv(m))
                    break
            if basis:
                break
        if limb_missing and basis:
            la, lb, inv = basis
            a, b = by_name[la].astype(np.float64), by_name[lb].astype(np.float64)
            lead_i = inv[0, 0] * a + inv[0, 1] * b
            lead_ii = inv[1, 0] * a + inv[1, 1] * b
            for ld in limb_missing:
                ci, cii = _LIMB_COEF[ld]
                by_name[ld] = ci * lead_i + cii * lead_ii
            flags["derived"] += 1
            missing = [ld for ld in LEADS if ld not in by_name]
    if missing:
        msg = f"{record_id}: missing leads {' '.join(missing)}"
        if unknown:
            msg += f" (unknown lead names: {' '.join(unknown)})"
        if any(ld in LIMB for ld in missing) and not opt.derive_limb_leads:
            msg += "; --derive-limb-leads can rebuild limb leads from two others"
        raise RecordError("unknown lead names" if unknown else "missing leads", msg)
    n = N_OUT
    if sig.shape[1] > math.ceil(n * fs / FS_OUT) + 1:   # longer than 10 s: the first 10 s are kept
        flags["cropped"] += 1
    if fs != FS_OUT:
        # resample at most what the output needs (plus a little for the filter's edge)
        need = int(math.ceil(n * fs / FS_OUT)) + int(fs)
        x = _resample(np.stack([by_name[ld][:need] for ld in LEADS]).astype(np.float64), fs, FS_OUT)
        flags["resampled"] += 1
    else:
        x = np.stack([by_name[ld][:n] for ld in LEADS])
    out = np.full((12, n), np.nan if opt.pad == "nan" else 0.0, dtype=np.float32)
    m = min(n, x.shape[1])
    out[:, :m] = x[:, :m]
    if m < n:
        flags["padded"] += 1
    peak = np.abs(out).max() if (all_finite and opt.pad != "nan") else np.nanmax(np.abs(out), initial=-1.0)
    if peak > 32.767:
        raise RecordError("out of range", f"{record_id}: amplitude {peak:.1f} mV is beyond "
                          "±32.767 mV (wrong units in the header?)")
    if peak < 0 or np.isnan(peak):
        raise RecordError("empty record", f"{record_id}: no valid samples")
    return out


@functools.lru_cache(maxsize=16)
def _resample_taps(up: int, down: int) -> np.ndarray:
    """The very filter ``resample_poly(x, up, down)`` designs on every call, designed once."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    return firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))


def _resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    taps = _resample_taps(up, down)
    nan = np.isnan(x)
    if nan.any():  # fill gaps for filtering, then put them back (nearest output sample)
        filled = np.where(nan, 0.0, x)
        y = resample_poly(filled, up, down, axis=1, window=taps)
        src = np.minimum((np.arange(y.shape[1]) * fs_in / fs_out).round().astype(int), x.shape[1] - 1)
        y[nan[:, src]] = np.nan
        return y
    return resample_poly(x, up, down, axis=1, window=taps)


def read_canonical(record: str | os.PathLike, *, record_id: str | None = None,
                   options: ImportOptions | None = None, flags: Counter | None = None) -> np.ndarray:
    """A WFDB record as canonical [12, 5000] float32 mV (raises RecordError)."""
    sig, names, fs, _ = read_wfdb(record, flags)
    rid = record_id or str(record)
    return canonicalize(sig, names, fs, record_id=rid, options=options, flags=flags)


def _work(args) -> tuple[int, np.ndarray | bytes | None, str | None, str | None, tuple]:
    """Worker: (index, signal or None, reason, message, flags).

    With ``encode`` the signal comes back as its stored bytes (:func:`formats.signals.encode_signal`):
    the compression then runs here, in parallel, rather than in the process writing the file.
    """
    i, record, rid, options, encode = args
    flags: Counter = Counter()
    try:
        x = read_canonical(record, record_id=rid, options=options, flags=flags)
        if encode:
            from ecgscan_cli.formats.signals import encode_signal

            try:
                x = encode_signal(x, rid)
            except EcgscanError as e:
                raise RecordError("out of range", str(e)) from None
        return i, x, None, None, tuple(flags.items())
    except RecordError as e:
        return i, None, e.reason, str(e), ()
    except Exception as e:  # anything unexpected in one file must not kill a long import
        return i, None, "unreadable signal", f"{rid}: {type(e).__name__}: {e}", ()


# --------------------------------------------------------------------------------------
# finding records and their labels


def is_ptbxl_root(path: str | os.PathLike) -> bool:
    return (Path(path) / "ptbxl_database.csv").is_file()


def find_records(folder: str | os.PathLike) -> list[Path]:
    """All ``.hea`` files under ``folder`` (recursive, hidden folders skipped), sorted, without suffix."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f[:-4] for f in files if f.endswith(".hea") and not f.startswith(".")]
    return sorted(out)


def read_scp_statements(root: str | os.PathLike):
    import pandas as pd

    path = Path(root) / "scp_statements.csv"
    if not path.is_file():
        raise EcgscanError(f"{root}: scp_statements.csv not found (needed for PTB-XL labels)")
    return pd.read_csv(path, index_col=0)


def ptbxl_classes(scp, label_set: str) -> list[str]:
    """Class names of a PTB-XL label set (sorted, as the benchmark's MultiLabelBinarizer)."""
    if label_set == "superclass":
        vals = scp.loc[scp.diagnostic == 1.0, "diagnostic_class"]
    elif label_set == "subclass":
        vals = scp.loc[scp.diagnostic == 1.0, "diagnostic_subclass"]
    elif label_set == "form":
        vals = scp.index[scp.form == 1.0].to_series()
    elif label_set == "rhythm":
        vals = scp.index[scp.rhythm == 1.0].to_series()
    else:
        raise EcgscanError(f"unknown PTB-XL label set {label_set!r}")
    return sorted({str(v) for v in vals if isinstance(v, str) and v})


def _scp_table(scp) -> dict[str, tuple]:
    """code → (diagnostic, diagnostic_class, diagnostic_subclass, form, rhythm)."""
    def s(v):
        return v if isinstance(v, str) and v else None

    return {str(code): (row.diagnostic == 1.0, s(row.diagnostic_class), s(row.diagnostic_subclass),
                        row.form == 1.0, row.rhythm == 1.0) for code, row in scp.iterrows()}


def ptbxl_labels(scp_codes: dict, scp, label_set: str, min_likelihood: float = 0.0) -> list[str]:
    """The benchmark's aggregation of one record's ``scp_codes`` into a label set.

    ``scp`` is scp_statements.csv as a DataFrame or as :func:`_scp_table`'s dict.
    """
    table = scp if isinstance(scp, dict) else _scp_table(scp)
    out = set()
    for code, likelihood in scp_codes.items():
        row = table.get(code)
        if row is None:
            continue
        diagnostic, cls, subcls, form, rhythm = row
        if label_set in ("superclass", "subclass"):
            if not diagnostic:
                continue
            if min_likelihood > 0 and float(likelihood or 0) < min_likelihood:
                continue
            c = cls if label_set == "superclass" else subcls
            if c:
                out.add(c)
        elif label_set == "form" and form:
            out.add(code)
        elif label_set == "rhythm" and rhythm:
            out.add(code)
    return sorted(out)


def parse_label_sets(spec: str | Sequence[str], *, ptbxl: bool, where: str = "") -> list[str]:
    """``superclass``, ``form,rhythm``, ``all``, ``auto``... → label set names (first = /label).

    ``[]`` for ``none``. ``auto`` is superclass for PTB-XL, dx otherwise; ``all`` is
    PTB-XL's four sets (dx otherwise).
    """
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    if names in (["auto"], []):
        names = ["superclass"] if ptbxl else ["dx"]
    elif names == ["all"]:
        names = list(PTBXL_LABEL_SETS) if ptbxl else ["dx"]
    for n in names:
        if n not in LABEL_SETS:
            raise EcgscanError(f"unknown label set {n!r} (choose from {', '.join(LABEL_SETS)}, all, auto; "
                               "several comma-separated)")
    if len(set(names)) != len(names):
        raise EcgscanError(f"label set listed twice: {','.join(names)}")
    if "none" in names:
        if len(names) > 1:
            raise EcgscanError("label set none cannot be combined with others")
        return []
    if ptbxl and "dx" in names:
        raise EcgscanError("PTB-XL has SCP codes, not Dx codes: use superclass, subclass, form, rhythm, all or none")
    if not ptbxl:
        bad = [n for n in names if n in PTBXL_LABEL_SETS]
        if bad:
            raise EcgscanError(f"{where or 'this source'} is not a PTB-XL root (no ptbxl_database.csv): label set "
                               f"{bad[0]!r} needs one; use dx or none")
    return names


def ptbxl_tasks(src, label_sets: Sequence[str] = ("superclass",), sampling_rate: int = 500,
                min_likelihood: float = 0.0, drop_unlabelled: bool = False) -> tuple[list[Task], dict]:
    """Tasks (record = the CSV's record path, e.g. ``records100/00000/00001_lr``) and label sets.

    ``src`` is a :class:`ptbxl_source.PtbxlSource`; label sets map name → (classes,
    [N, C] uint8). ``drop_unlabelled`` drops records without a label in the first set.
    """
    if sampling_rate not in (100, 500):
        raise EcgscanError(f"PTB-XL comes at 100 or 500 Hz, not {sampling_rate}")
    db = src.read_database()
    where = src.where("ptbxl_database.csv")
    col = "filename_hr" if sampling_rate == 500 else "filename_lr"
    for needed in (col, "scp_codes"):
        if needed not in db.columns:
            raise EcgscanError(f"{where}: no column {needed!r}; is this PTB-XL?")
    sets: dict[str, tuple[list[str], dict[str, int]]] = {}
    scp = None
    if label_sets:
        scp_df = src.read_statements()
        scp = _scp_table(scp_df)
        for name in label_sets:
            if name not in PTBXL_LABEL_SETS:
                raise EcgscanError(f"label set {name!r} is not one of PTB-XL's: {', '.join(PTBXL_LABEL_SETS)}, none")
            classes = ptbxl_classes(scp_df, name)
            sets[name] = (classes, {c: i for i, c in enumerate(classes)})
    tasks: list[Task] = []
    hot: dict[str, list[list[int]]] = {name: [] for name in sets}
    n = len(db)
    folds = db["strat_fold"] if "strat_fold" in db.columns else [-1] * n
    reports = db["report"] if "report" in db.columns else [""] * n
    for ecg_id, file_name, scp_codes, fold, report in zip(db.index, db[col], db["scp_codes"], folds, reports):
        if scp is not None:
            try:
                codes = ast.literal_eval(scp_codes) if isinstance(scp_codes, str) else {}
            except (ValueError, SyntaxError):
                codes = {}
            names = {name: ptbxl_labels(codes, scp, name, min_likelihood) for name in sets}
            if drop_unlabelled and not names[label_sets[0]]:
                continue
            for name, (_, index) in sets.items():
                hot[name].append([index[c] for c in names[name]])
        fold = int(fold) if isinstance(fold, (int, float, np.integer, np.floating)) and math.isfinite(fold) else -1
        report = report.strip() if isinstance(report, str) else ""
        tasks.append(Task(str(file_name), f"{int(ecg_id):05d}", report, fold))
    return tasks, {name: (classes, _multi_hot(hot[name], len(classes))) for name, (classes, _) in sets.items()}


def _multi_hot(rows: Sequence[Sequence[int]], n_classes: int) -> np.ndarray:
    out = np.zeros((len(rows), n_classes), np.uint8)
    for r, cols in enumerate(rows):
        out[r, list(cols)] = 1
    return out


def folder_tasks(folder: str | os.PathLike, label_set: str = "dx") -> tuple[list[Task], dict]:
    """Tasks for every WFDB record under ``folder`` and their ``dx`` label set (or none)."""
    folder = Path(folder)
    records = find_records(folder)
    if not records:
        raise EcgscanError(f"no WFDB records (.hea files) found in {folder}")
    dx = [_parse_dx(_header_comments(r)) for r in records]
    tasks = [Task(str(rec), rec.relative_to(folder).as_posix(), dx_report(codes), -1)
             for rec, codes in zip(records, dx)]
    return tasks, _dx_label_sets(dx, label_set)


def folder_tasks_single(record: Path, label_set: str = "dx") -> tuple[list[Task], dict]:
    codes = _parse_dx(_header_comments(record))
    return [Task(str(record), record.name, dx_report(codes), -1)], _dx_label_sets([codes], label_set)


def _dx_label_sets(dx: Sequence[Sequence[str]], label_set: str) -> dict:
    if label_set != "dx":
        return {}
    classes = sorted({c for codes in dx for c in codes}, key=lambda c: (len(c), c))
    index = {c: i for i, c in enumerate(classes)}
    return {"dx": (classes, _multi_hot([[index[c] for c in codes] for codes in dx], len(classes)))}


def _header_comments(record: Path) -> list[str]:
    path = str(record) + ".hea"
    if not os.path.isfile(path):   # a FIFO would block; parse_header skips it with its reason
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.strip()[1:].strip() for line in f.read(MAX_HEADER_BYTES).splitlines()
                    if line.lstrip().startswith("#")]
    except OSError:
        return []


# --------------------------------------------------------------------------------------
# the import


def _work_batch(jobs: list) -> list:
    return [_work(job) for job in jobs]


# Signals a terminal sends to the whole process group: the parent alone decides what they
# mean (stop, clean up, exit 130/129) and stops its workers itself.
_GROUP_SIGNALS = ("SIGINT", "SIGHUP")


def _exit_when_orphaned(parent_pid: int) -> None:
    """Worker watchdog: a parent killed outright (SIGKILL) cannot stop its workers, so they
    notice they were re-parented and exit within a quarter of a second."""
    import time

    while os.getppid() == parent_pid:
        time.sleep(0.25)
    os._exit(1)


def _worker_init(parent_pid: int | None = None) -> None:
    """Set up a reader process: ignore terminal signals, exit with the parent, tune malloc.

    Keep freed memory in the worker instead of handing it back to the OS after each record.
    With glibc's defaults a pool worker maps and unmaps its ~0.5 MB arrays on every
    record: about 500 page faults and 1 ms of system time per record, 30 % of the import.
    """
    import signal
    import threading

    signums = {getattr(signal, n) for n in _GROUP_SIGNALS if hasattr(signal, n)}
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held back by the parent while we started: now dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)
    if parent_pid is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 << 20)   # M_TRIM_THRESHOLD: keep up to 64 MB of free heap
        libc.mallopt(-3, 4 << 20)    # M_MMAP_THRESHOLD: arrays below 4 MB come from the heap
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


BATCH = 16


def _results(jobs: Iterable[tuple], options: ImportOptions, workers: int, *, encode: bool = False
             ) -> Iterator[tuple]:
    """Results of :func:`_work` for every ``(index, record, id)`` job, in job order.

    With several workers, batches of records go to a process pool with a bounded number
    in flight, so memory stays flat however slow the consumer (the HDF5 writer) is; the
    jobs themselves (records read out of an archive) are only drawn as batches go out.
    """
    jobs = ((i, record, rid, options, encode) for i, record, rid in jobs)
    if workers <= 1:
        for job in jobs:
            yield _work(job)
        return
    import itertools
    import multiprocessing
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    batches = iter(lambda: list(itertools.islice(jobs, BATCH)), [])
    others = set(multiprocessing.active_children())
    # spawned (not forked) workers: the parent may hold an open HDF5 file, and forking a
    # process with HDF5 state is unsafe; the start-up cost only matters for tiny folders
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    pending: deque = deque()
    finished = False
    try:
        with _terminal_signals_held():  # the workers start (and inherit the mask) in these first submits
            pending.extend(pool.submit(_work_batch, b) for b in itertools.islice(batches, 4 * workers))
        while pending:
            try:
                done = pending.popleft().result()
            except BrokenProcessPool:
                raise EcgscanFailure("a reader process stopped unexpectedly (out of memory?); "
                                     "try again with -j 1") from None
            nxt = next(batches, None)
            if nxt is not None:
                pending.append(pool.submit(_work_batch, nxt))
            yield from done
        finished = True
    finally:
        for fut in pending:
            fut.cancel()
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted, failed, or the consumer stopped early: stop the workers now
            _stop_workers(pool, others)


def _terminal_signals_held():
    """Hold back Ctrl-C and hang-ups while the worker processes start.

    The signal mask is inherited across exec, so a worker still importing never dies with
    a KeyboardInterrupt traceback; it ignores them once set up (:func:`_worker_init`). In
    the parent a signal that came meanwhile is delivered as soon as the mask is lifted."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def held():
        signums = {getattr(signal, n) for n in _GROUP_SIGNALS if hasattr(signal, n)}
        if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
            yield
            return
        before = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)

    return held()


STOP_GRACE_S = 3.0


def _stop_workers(pool: ProcessPoolExecutor, others: set) -> None:
    """Stop the pool's processes (not ``others``, children that existed before it).

    Queued batches are cancelled; a worker finishes the batch in hand (16 records) and
    exits. Killing it meanwhile could cut a result message in half and leave the pool's
    manager thread waiting for the rest forever (a hang at exit); only a worker still
    busy after :data:`STOP_GRACE_S` (a stuck read) is terminated.
    """
    import multiprocessing
    import time

    pool.shutdown(wait=False, cancel_futures=True)
    workers = [p for p in multiprocessing.active_children() if p not in others]
    deadline = time.monotonic() + STOP_GRACE_S
    for p in workers:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in workers:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def auto_workers(n: int) -> int:
    if n < 400:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass
class ImportPlan:
    source: Path
    tasks: list[Task]
    label_sets: dict          # name -> (classes, [len(tasks), C] uint8); the first goes to /label
    kind: str
    archives: list[Path] = field(default_factory=list)   # read out of these (task.record = path inside)
    hint: str = ""            # added to "no record found in the archive"

    @property
    def label_set(self) -> str:
        return next(iter(self.label_sets), "none")

    @property
    def classes(self) -> list[str]:
        return list(self.label_sets[self.label_set][0]) if self.label_sets else []

    def jobs(self) -> Iterator[tuple[int, str | RecordFiles, str]]:
        """``(task index, path or RecordFiles, id)`` for every task, in reading order."""
        if not self.archives:
            for i, t in enumerate(self.tasks):
                yield i, t.record, t.id
            return
        from ecgscan_cli.archives import iter_archive_records

        for i, files in iter_archive_records(self.archives, [t.record for t in self.tasks], hint=self.hint):
            yield i, files, self.tasks[i].id


def plan_import(source: str | os.PathLike, *, label_set: str | Sequence[str] = "auto", sampling_rate: int = 500,
                min_likelihood: float = 0.0, drop_unlabelled: bool = False,
                limit: int | None = None) -> ImportPlan:
    """Find the records of a PTB-XL copy (folder, archive), a WFDB folder or one ``.hea``, with their labels.

    ``label_set``: one name, several comma-separated, ``all`` or ``auto`` (see
    :func:`parse_label_sets`).
    """
    from ecgscan_cli.ptbxl_source import find_ptbxl, locate_records

    source = Path(source)
    if not source.exists():
        raise EcgscanError(f"no such file or folder: {source}")
    ptbxl = find_ptbxl(source)
    names = parse_label_sets(label_set, ptbxl=ptbxl is not None, where=str(source))
    archives: list[Path] = []
    hint = ""
    if ptbxl is not None:
        if sampling_rate not in (100, 500):
            raise EcgscanError(f"PTB-XL comes at 100 or 500 Hz, not {sampling_rate}")
        tasks, label_sets = ptbxl_tasks(ptbxl, names, sampling_rate, min_likelihood, drop_unlabelled)
        if tasks:
            folder, archives = locate_records(ptbxl, tasks[0].record, sampling_rate)
            if folder is not None:
                for t in tasks:
                    t.record = str(folder / t.record)
        col = "filename_hr" if sampling_rate == 500 else "filename_lr"
        hint = f"; --sampling-rate {sampling_rate} reads the {col} records, e.g. {tasks[0].record}" if tasks else ""
        kind = f"PTB-XL {'archive' if archives else 'folder'} ({sampling_rate} Hz, labels {','.join(names) or 'none'})"
    elif source.is_dir():
        tasks, label_sets = folder_tasks(source, names[0] if names else "none")
        kind = f"WFDB folder (labels {names[0] if names else 'none'})"
    elif source.suffix == ".hea":
        tasks, label_sets = folder_tasks_single(source.with_suffix(""), names[0] if names else "none")
        kind = "WFDB record"
    else:
        raise EcgscanError(f"{source} is neither a folder of WFDB records, a PTB-XL archive nor a .hea file")
    if limit is not None:
        tasks = tasks[: max(0, int(limit))]
        label_sets = {k: (c, m[: len(tasks)]) for k, (c, m) in label_sets.items()}
    if not tasks:
        raise EcgscanError(f"no records to import in {source}")
    return ImportPlan(source, tasks, label_sets, kind, archives, hint)


def run_import(plan: ImportPlan, output: str | os.PathLike, *, derive_limb_leads: bool = False,
               pad: str = "zero", workers: int = 0, strict: bool = False, overwrite: bool = False,
               progress: Callable[[int], None] | None = None) -> tuple[Path, ImportStats]:
    """Read, canonicalise and write the records of ``plan``; bad records skipped and counted.

    Rows follow the order of ``plan.tasks`` (the CSV's for PTB-XL) whatever the order
    records are read in. Workers return compressed chunks; the writer only stores them and
    writes the metadata of all records at the end, one call per dataset.
    """
    from ecgscan_cli.atomic import check_output_path
    from ecgscan_cli.formats.signals import SignalsWriter

    check_output_path(output, overwrite, kind="signals")
    if pad not in ("zero", "nan"):
        raise EcgscanError(f"pad must be zero or nan, not {pad!r}")
    tasks = plan.tasks
    options = ImportOptions(derive_limb_leads=derive_limb_leads, pad=pad)
    stats = ImportStats(found=len(tasks))
    n_workers = auto_workers(len(tasks)) if workers <= 0 else workers
    log.info("importing %d records from %s: %s, %d worker(s)", len(tasks),
             ", ".join(a.name for a in plan.archives) if plan.archives else plan.source, plan.kind, n_workers)
    writer = SignalsWriter(output, fs=FS_OUT, n_samples=N_OUT, classes=plan.classes, overwrite=overwrite,
                           source=str(plan.source.resolve()), expected_rows=len(tasks), label_set=plan.label_set,
                           attrs={"import_kind": plan.kind, "label_set": plan.label_set})
    kept: list[int] = []
    with writer as w:
        for i, chunk, reason, message, flags in _results(plan.jobs(), options, n_workers, encode=True):
            if chunk is None:
                if strict:
                    raise EcgscanError(f"{message} (import stopped: --strict)")
                stats.skip(reason, message, tasks[i].id)
            else:
                w.write_encoded(i, chunk)
                kept.append(i)
                stats.imported += 1
                f = dict(flags)
                stats.resampled += bool(f.get("resampled"))
                stats.padded += bool(f.get("padded"))
                stats.derived += bool(f.get("derived"))
                stats.cropped += bool(f.get("cropped"))
                stats.header_shorter += bool(f.get("header_shorter"))
            if progress:
                progress(1)
        if stats.imported == 0:
            first = next(iter(stats.examples.values()), "")
            raise EcgscanError(f"none of the {stats.found} records could be imported (first problem: {first})")
        rows = np.sort(np.asarray(kept))
        label_sets = [(name, classes, matrix[rows]) for name, (classes, matrix) in plan.label_sets.items()]
        w.keep_rows(rows, [tasks[r].id for r in rows], [tasks[r].report for r in rows],
                    label_sets[0][2] if label_sets else None, [tasks[r].fold for r in rows])
        for name, classes, matrix in label_sets[1:]:
            w.add_label_set(name, classes, matrix)
    return Path(output), stats


def import_records(source: str | os.PathLike, output: str | os.PathLike, *, label_set: str | Sequence[str] = "auto",
                   sampling_rate: int = 500, derive_limb_leads: bool = False, pad: str = "zero",
                   min_likelihood: float = 0.0, drop_unlabelled: bool = False, workers: int = 0,
                   strict: bool = False, limit: int | None = None, overwrite: bool = False,
                   progress: Callable[[int], None] | None = None) -> tuple[Path, ImportStats]:
    """Import a PTB-XL copy (folder or archive), a WFDB folder or one ``.hea`` record into a signals file."""
    from ecgscan_cli.atomic import check_output_path

    check_output_path(output, overwrite, kind="signals")
    plan = plan_import(source, label_set=label_set, sampling_rate=sampling_rate, min_likelihood=min_likelihood,
                       drop_unlabelled=drop_unlabelled, limit=limit)
    return run_import(plan, output, derive_limb_leads=derive_limb_leads, pad=pad, workers=workers,
                      strict=strict, overwrite=overwrite, progress=progress)


def iter_signals(path: str | os.PathLike, *, derive_limb_leads: bool = False, workers: int = 0,
                 ) -> tuple[int, Iterator[tuple[str, np.ndarray]], ImportStats | None]:
    """(count, iterator of (id, [12, T] mV), stats) from a signals file or WFDB records.

    WFDB records (a folder, a PTB-XL copy at 500 Hz, one ``.hea``) go through the same
    canonical form as ``import`` (500 Hz, 10 s); bad ones are skipped and counted in
    ``stats`` (None for a signals file).
    """
    from ecgscan_cli.archives import is_archive
    from ecgscan_cli.formats.signals import SignalsFile

    path = Path(path)
    if path.is_dir() or path.suffix == ".hea" or is_archive(path):
        if path.suffix == ".hea" and not path.exists():
            raise EcgscanError(f"no such file: {path}")
        plan = plan_import(path, label_set="none")
        tasks = plan.tasks
        stats = ImportStats(found=len(tasks))
        options = ImportOptions(derive_limb_leads=derive_limb_leads)
        n_workers = auto_workers(len(tasks)) if workers <= 0 else workers

        def gen():
            for i, x, reason, message, _flags in _results(plan.jobs(), options, n_workers):
                if x is None:
                    stats.skip(reason, message, tasks[i].id)
                    yield tasks[i].id, None
                    continue
                stats.imported += 1
                yield tasks[i].id, x

        return len(tasks), gen(), stats
    f = SignalsFile(path)

    def gen_file():
        try:
            for i in range(len(f)):
                yield f.ids[i], f.signal(i)
        finally:
            f.close()

    return len(f), gen_file(), None
