"""WFDB record files straight out of .zip and .tar(.gz/.bz2/.xz) archives, never unpacked.

PTB-XL ships as a zip (PhysioNet: one top folder holding the CSVs, ``records100/`` and
``records500/``) and, in this project, as ``records100-folds1-8.tar.xz`` beside its CSVs.
A record is asked for by its *key*, its path without suffix as the CSV names it
(``records100/00000/00001_lr``). An archive member matches a key by its last path
components, so any top folder inside the archive is fine.

* zip: random access; records come out in the order asked for.
* tar: one streaming pass (an xz stream cannot seek); records come out in the archive's
  member order, each as soon as its header and signal files have been seen. The signal
  files a header names must share the header's folder and name stem (as in PTB-XL);
  others count as missing.

Records asked for but not found come out last, with the files that were found (maybe
none), so that the reader reports them as missing.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import posixpath
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ecgscan_cli.errors import EcgscanError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# stop a tar pass that has seen this many headers without one the caller wants: wrong
# archive or wrong sampling rate, no need to decompress gigabytes to say so
NO_MATCH_AFTER = 2000
# what a damaged archive raises while read (bad tar headers, corrupt compressed data, early end)
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, OSError, EOFError)


@dataclass
class RecordFiles:
    """One record's files in memory: ``files`` maps a file name (no folder) to its bytes."""

    key: str
    files: dict[str, bytes] = field(default_factory=dict)
    archive: str = ""

    @property
    def header_name(self) -> str:
        return posixpath.basename(self.key) + ".hea"


def is_archive(path: str | os.PathLike) -> bool:
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith(ARCHIVE_SUFFIXES)


def find_archives(folder: str | os.PathLike) -> list[Path]:
    """The archives directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith(".") and is_archive(p))


def header_signal_files(text: bytes | str) -> list[str]:
    """The signal file names a WFDB header lists (first field of each signal line), in order."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or len(lines[0]) < 2 or not lines[0][1].isdigit():
        return []
    n_sig = int(lines[0][1])
    return list(dict.fromkeys(ln[0] for ln in lines[1:n_sig + 1]))


def _key_of(member: str, depth: int) -> str:
    """The last ``depth`` components of a member path without its suffix."""
    stem = posixpath.splitext(member)[0]
    return "/".join(stem.split("/")[-depth:])


def _decompressed(path: Path):
    """``path`` opened as a plain tar stream, decompressed on the fly (by magic bytes, not name)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path)
    if magic.startswith(b"\x1f\x8b"):
        import gzip

        return gzip.open(path)
    if magic.startswith(b"BZh"):
        import bz2

        return bz2.open(path)
    return open(path, "rb")


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    # tarfile's own stream decompression ("r|xz") re-copies its whole read-ahead buffer on
    # every small read: over 3x slower in total than handing it a decompressed file
    with _decompressed(path) as stream:
        try:
            tf = tarfile.open(fileobj=stream, mode="r|")
        except READ_ERRORS as e:
            raise EcgscanError(f"{path}: cannot read archive ({e})") from None
        with tf:
            yield tf


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except READ_ERRORS as e:
        raise EcgscanError(f"{path}: cannot read archive ({e})") from None


def read_named_files(archive: str | os.PathLike, names: Sequence[str]) -> dict[str, bytes]:
    """Files of the given base names inside ``archive`` (the shallowest of each; absent ones left out).

    A tar is read until all are found, so CSVs at its start cost nothing.
    """
    archive = Path(archive)
    wanted = set(names)
    found: dict[str, bytes] = {}
    try:
        if archive.name.lower().endswith(".zip"):
            with _open_zip(archive) as zf:
                for info in sorted(zf.infolist(), key=lambda i: (i.filename.count("/"), i.filename)):
                    base = posixpath.basename(info.filename)
                    if base in wanted and base not in found and not info.is_dir():
                        found[base] = zf.read(info)
            return found
        with _open_tar(archive) as tf:
            for m in tf:
                base = posixpath.basename(m.name)
                if m.isfile() and base in wanted and base not in found:
                    found[base] = tf.extractfile(m).read()
                    if len(found) == len(wanted):
                        break
    except READ_ERRORS as e:
        raise EcgscanError(f"{archive}: cannot read archive ({e})") from None
    return found


def _no_match(archive: Path, example: str | None, hint: str) -> EcgscanError:
    what = f"it holds e.g. {example}" if example else "it holds no WFDB header (.hea)"
    return EcgscanError(f"{archive}: holds none of the records listed in the CSV ({what}){hint}")


def iter_archive_records(archives: Sequence[str | os.PathLike], keys: Sequence[str], *,
                         hint: str = "") -> Iterator[tuple[int, RecordFiles]]:
    """``(index in keys, RecordFiles)`` for every key, found ones first, missing ones last.

    An archive holding none of the keys stops the import with an error (``hint`` is
    appended to its message); so does an archive that cannot be read.
    """
    wanted: dict[str, int] = {}
    for i, k in enumerate(keys):
        wanted.setdefault(k, i)
    depth = max((k.count("/") + 1 for k in wanted), default=1)
    partial: dict[str, RecordFiles] = {}
    done: set[str] = set()
    for archive in map(Path, archives):
        if len(done) == len(wanted):
            break
        reader = _zip_records if archive.name.lower().endswith(".zip") else _tar_records
        for key, rec in reader(archive, wanted, done, partial, depth, hint):
            done.add(key)
            partial.pop(key, None)
            yield wanted[key], rec
    for i, k in enumerate(keys):
        if k not in done and wanted[k] == i:
            yield i, partial.get(k) or RecordFiles(k, {}, ", ".join(Path(a).name for a in archives))
    for i, k in enumerate(keys):  # a key listed twice: the second copy is a missing record
        if wanted[k] != i:
            yield i, RecordFiles(k, {}, "duplicate")


def _complete(rec: RecordFiles) -> bool:
    header = rec.files.get(rec.header_name)
    return header is not None and all(n in rec.files for n in header_signal_files(header))


def _tar_records(archive: Path, wanted: Mapping[str, int], done: set, partial: dict, depth: int,
                 hint: str) -> Iterator[tuple[str, RecordFiles]]:
    headers_seen, listed, example = 0, 0, None
    try:
        with _open_tar(archive) as tf:
            for m in tf:
                if len(done) == len(wanted):  # all found: no need to read the rest
                    break
                if not m.isfile():
                    continue
                is_header = m.name.endswith(".hea")
                key = _key_of(m.name, depth)
                if is_header:
                    headers_seen += 1
                    example = example or m.name
                    listed += key in wanted
                if key not in wanted or key in done:
                    if headers_seen >= NO_MATCH_AFTER and listed == 0:
                        raise _no_match(archive, example, hint)
                    continue
                rec = partial.setdefault(key, RecordFiles(key, {}, archive.name))
                rec.files[posixpath.basename(m.name)] = tf.extractfile(m).read()
                if _complete(rec):
                    yield key, rec
    except READ_ERRORS as e:
        raise EcgscanError(f"{archive}: cannot read archive ({e})") from None
    if listed == 0 and not any(r.archive == archive.name for r in partial.values()):
        raise _no_match(archive, example, hint)


def _zip_records(archive: Path, wanted: Mapping[str, int], done: set, partial: dict, depth: int,
                 hint: str) -> Iterator[tuple[str, RecordFiles]]:
    with _open_zip(archive) as zf:
        names = set(zf.namelist())
        stems: dict[str, str] = {}   # key -> member path of its header, without .hea
        for name in sorted(names):
            if name.endswith(".hea"):
                stems.setdefault(_key_of(name, depth), name[:-4])
        if not any(k in stems for k in wanted):
            example = next((s + ".hea" for s in sorted(stems.values())), None)
            raise _no_match(archive, example, hint)
        todo = sorted((i, k) for k, i in wanted.items() if k in stems and k not in done)
        try:
            for _, key in todo:
                stem = stems[key]
                header = zf.read(stem + ".hea")
                rec = RecordFiles(key, {posixpath.basename(stem) + ".hea": header}, archive.name)
                folder = posixpath.dirname(stem)
                for file_name in header_signal_files(header):
                    member = posixpath.join(folder, file_name)
                    if member in names:
                        rec.files[file_name] = zf.read(member)
                yield key, rec
        except READ_ERRORS as e:
            raise EcgscanError(f"{archive}: cannot read archive ({e})") from None
