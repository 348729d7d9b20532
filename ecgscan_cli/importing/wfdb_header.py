"""WFDB headers (``.hea``): parsing, and the checks that keep a hostile header harmless.

A header may name a FIFO, a device, or a signal file outside its folder (``/etc/...``,
``../../x``), or be megabytes long: each is refused with a :class:`RecordError` before
anything is opened or read.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from ecgscan_cli.importing.errors import RecordError


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


def check_regular_file(path: str, what: str) -> None:
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


def signal_file_inside(folder: str, file_name: str) -> str:
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
    check_regular_file(path, "header")
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
