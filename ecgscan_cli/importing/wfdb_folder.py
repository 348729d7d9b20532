"""Folders of WFDB records (searched recursively for ``.hea``) and their ``# Dx:`` labels.

``# Dx:`` SNOMED CT codes in the header comments become the labels (classes = the codes
found, sorted) and a short report naming them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from ecgscan_cli.errors import EcgscanError
from ecgscan_cli.importing.tasks import Task, multi_hot
from ecgscan_cli.importing.wfdb_header import MAX_HEADER_BYTES

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


def find_records(folder: str | os.PathLike) -> list[Path]:
    """All ``.hea`` files under ``folder`` (recursive, hidden folders skipped), sorted, without suffix."""
    folder = Path(folder)
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f[:-4] for f in files if f.endswith(".hea") and not f.startswith(".")]
    return sorted(out)


def _parse_dx(comments: Iterable[str]) -> list[str]:
    codes: list[str] = []
    for c in comments:
        m = re.match(r"\s*#?\s*dx\s*:\s*(.*)$", c, flags=re.IGNORECASE)
        if m:
            codes += [x.strip() for x in re.split(r"[,;\s]+", m.group(1)) if x.strip()]
    return list(dict.fromkeys(codes))


def dx_report(codes: Sequence[str]) -> str:
    """A readable report naming the SNOMED CT codes (``snomed <code>`` for unnamed ones)."""
    return "; ".join(SNOMED_NAMES.get(c, f"snomed {c}") for c in codes)


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
    """The task of one record (path without ``.hea``) and its ``dx`` label set (or none)."""
    codes = _parse_dx(_header_comments(record))
    return [Task(str(record), record.name, dx_report(codes), -1)], _dx_label_sets([codes], label_set)


def _dx_label_sets(dx: Sequence[Sequence[str]], label_set: str) -> dict:
    if label_set != "dx":
        return {}
    classes = sorted({c for codes in dx for c in codes}, key=lambda c: (len(c), c))
    index = {c: i for i, c in enumerate(classes)}
    return {"dx": (classes, multi_hot([[index[c] for c in codes] for codes in dx], len(classes)))}


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

