"""Where a copy of PTB-XL keeps its two tables and its record files.

Layouts understood (``SOURCE`` is what the user names):

* an unpacked folder: ``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/``,
  ``records500/`` (PhysioNet's layout);
* a folder with the CSVs and the records in archives beside them, e.g.
  ``records100-folds1-8.tar.xz`` (archives named for the other sampling rate are left out);
* an archive (.zip, .tar, .tar.gz/.bz2/.xz) of records with the CSVs beside it or inside
  it, such as PhysioNet's ``ptb-xl-...-1.0.3.zip`` (one top folder holding everything).

Records are read straight out of archives (:mod:`ecgscan_cli.archives`), never unpacked.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ecgscan_cli.archives import find_archives, is_archive, read_named_files
from ecgscan_cli.errors import EcgscanError

DATABASE = "ptbxl_database.csv"
STATEMENTS = "scp_statements.csv"


@dataclass
class PtbxlSource:
    path: Path                          # as given
    database: Path | bytes              # ptbxl_database.csv (a file, or its bytes from an archive)
    statements: Path | bytes | None     # scp_statements.csv
    folder: Path | None = None          # where unpacked record folders (records100/...) would be
    archives: list[Path] = field(default_factory=list)

    def read_database(self):
        return _read_csv(self.database, self.where(DATABASE), index_col="ecg_id")

    def read_statements(self):
        if self.statements is None:
            raise EcgscanError(f"{self.path}: {STATEMENTS} not found (needed for PTB-XL labels)")
        return _read_csv(self.statements, self.where(STATEMENTS), index_col=0)

    def where(self, name: str) -> str:
        value = self.database if name == DATABASE else self.statements
        return str(value) if isinstance(value, Path) else f"{self.path} ({name} inside)"


def is_ptbxl_root(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an unpacked PTB-XL folder (it holds ptbxl_database.csv)."""
    return (Path(path) / DATABASE).is_file()


def _read_csv(data: Path | bytes, where: str, index_col):
    import pandas as pd

    try:
        return pd.read_csv(io.BytesIO(data) if isinstance(data, bytes) else data, index_col=index_col)
    except Exception as e:
        raise EcgscanError(f"{where}: cannot read ({e})") from None


def find_ptbxl(path: str | os.PathLike) -> PtbxlSource | None:
    """The PTB-XL copy at ``path``, or None when ``path`` is a folder without ``ptbxl_database.csv``.

    An archive that is not PTB-XL (no ptbxl_database.csv inside it or beside it) is an error.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / DATABASE).is_file():
            return None
        statements = path / STATEMENTS
        return PtbxlSource(path, path / DATABASE, statements if statements.is_file() else None,
                           folder=path, archives=find_archives(path))
    if not is_archive(path):
        return None
    beside = path.parent / DATABASE
    if beside.is_file():
        statements = path.parent / STATEMENTS
        return PtbxlSource(path, beside, statements if statements.is_file() else None, archives=[path])
    inside = read_named_files(path, [DATABASE, STATEMENTS])
    if DATABASE not in inside:
        raise EcgscanError(f"{path}: not a PTB-XL archive (no {DATABASE} inside it or beside it); "
                           "plain archives of WFDB records are not read: unpack them")
    return PtbxlSource(path, inside[DATABASE], inside.get(STATEMENTS), archives=[path])


def _named_for(archive: Path, records_dir: str) -> bool:
    """``records500-x.tar.xz`` is named for records500 (digits must not run on: records5000)."""
    return re.search(re.escape(records_dir) + r"(?!\d)", archive.name) is not None


def locate_records(src: PtbxlSource, first_key: str, sampling_rate: int) -> tuple[Path | None, list[Path]]:
    """(folder the CSV's record paths are relative to, or None; archives to read instead).

    ``first_key`` is a record path from the CSV (``records100/00000/00001_lr``): its first
    component names the records folder. Raises a clear error when neither is there.
    """
    top = first_key.split("/")[0] if "/" in first_key else ""
    if src.folder is not None and (not top or (src.folder / top).is_dir()):
        return src.folder, []
    other = f"records{500 if sampling_rate == 100 else 100}"
    archives = [a for a in src.archives if not _named_for(a, other)]
    if archives:
        return None, archives
    other_rate = 500 if sampling_rate == 100 else 100
    has_other = [a.name for a in src.archives] + ([f"{other}/"] if src.folder and (src.folder / other).is_dir()
                                                  else [])
    if has_other:
        raise EcgscanError(f"{src.path} has no {top or 'record'} files for --sampling-rate {sampling_rate} "
                           f"(only {', '.join(has_other)}): use --sampling-rate {other_rate}")
    raise EcgscanError(f"{src.path}: no {top + '/' if top else 'records'} folder and no archive of records "
                       f"(.zip, .tar.xz, ...) beside {DATABASE}")
