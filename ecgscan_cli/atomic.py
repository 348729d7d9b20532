"""Write outputs under a temporary name and rename them only when complete.

An interrupted command (Ctrl-C, SIGTERM, crash, full disk) therefore never leaves a file
or folder that looks finished: the partial output keeps its ``.NAME.partial-PID-HOST-RAND``
name and is removed on the way out whenever Python gets the chance. A process that
could not clean up (SIGKILL, power loss) leaves it behind; the next command writing the
same output removes it once its process (``PID`` on this host ``HOST``) is gone.

``--overwrite`` replaces only what ecgscan itself wrote (:func:`output_kind`): an
ecgscan HDF5 file of the same kind, a folder carrying ecgscan's marker file, a checkpoint
or run folder, a render folder of images with their ``.json`` sidecars, or a plain file
for plain-file outputs (CSV, PNG). Anything else is refused in one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Iterator

from ecgscan_cli.errors import EcgscanError, EcgscanFailure

# Folders that carry no self-describing file of their own get this marker (a small JSON
# object naming their kind), written by atomic_output(directory=True, kind=...).
MARKER = ".ecgscan-output"
MARKED_KINDS = ("benchmark", "demo", "wfdb", "overlays", "digitizer")
H5_KINDS = ("signals", "images", "embeddings")
DESCRIPTION = {
    "signals": "ecgscan signals file", "images": "ecgscan images file", "embeddings": "ecgscan embeddings file",
    "render": "ecgscan render folder (images with .json sidecars)", "benchmark": "ecgscan benchmark folder",
    "demo": "ecgscan demo report folder", "wfdb": "ecgscan WFDB folder", "overlays": "ecgscan overlay folder",
    "digitizer": "ecgscan digitiser run folder", "run": "ecgscan run folder", "checkpoint": "ecgscan checkpoint folder", "file": "plain file",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<what>partial|old)-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}$")


# ------------------------------------------------------------------ what is at a path


def _render_folder(path: Path) -> bool:
    """Images each with its ``.json`` sidecar (id + layout), and nothing else."""
    stems: dict[str, set[str]] = {}
    for p in path.iterdir():
        if p.name.startswith("."):
            continue
        if not p.is_file() or p.suffix.lower() not in (*IMAGE_SUFFIXES, ".json"):
            return False
        stems.setdefault(p.stem, set()).add(".json" if p.suffix.lower() == ".json" else "image")
    if not stems or any(kinds != {".json", "image"} for kinds in stems.values()):
        return False
    sidecar = next(p for p in path.iterdir() if p.suffix.lower() == ".json" and not p.name.startswith("."))
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "layout" in meta and "id" in meta


# what checkpoint.py writes; not imported from there, which would import torch (~12 s)
CHECKPOINT_META = "ecgscan_checkpoint.json"
CHECKPOINT_FORMAT = "ecgscan-checkpoint/"


def _is_checkpoint(folder: Path) -> bool:
    try:
        meta = json.loads((folder / CHECKPOINT_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith(CHECKPOINT_FORMAT)


def output_kind(path: str | os.PathLike) -> str | None:
    """What ecgscan wrote at ``path``: a kind of :data:`DESCRIPTION`, ``"empty"`` for an
    empty folder, ``"file"`` for a plain (non-HDF5) file, None for anything else (never raises)."""
    path = Path(path)
    try:
        if path.is_symlink():
            return None
        if path.is_file():
            import h5py

            from ecgscan_cli.formats.common import file_kind

            if h5py.is_hdf5(path):
                return file_kind(path)  # None for an HDF5 file ecgscan did not write
            return "file"
        if not path.is_dir():
            return None
        if (path / MARKER).is_file():
            kind = json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind")
            return kind if kind in DESCRIPTION else None
        if (path / CHECKPOINT_META).is_file():
            return "checkpoint" if _is_checkpoint(path) else None
        if (path / "run.json").is_file() or any(_is_checkpoint(path / sub) for sub in ("best", "last")):
            return "run"
        if (path / "results.json").is_file() and (path / "table.md").is_file():
            return "benchmark"  # written before the marker existed
        if not any(path.iterdir()):
            return "empty"
        return "render" if _render_folder(path) else None
    except (OSError, ValueError, AttributeError):
        return None


def _acceptable(found: str | None, kinds: tuple[str, ...]) -> bool:
    if not kinds:  # any output ecgscan recognises as its own, or a plain file
        return found is not None
    if found == "empty":  # an empty folder: nothing to lose
        return not set(kinds) & {"file", *H5_KINDS}
    return found in kinds


def _check_replaceable(path: Path, kind: str | tuple[str, ...] | None) -> None:
    import time

    kinds = (kind,) if isinstance(kind, str) else tuple(kind or ())
    for attempt in range(3):
        found = output_kind(path)
        if _acceptable(found, kinds) or not os.path.lexists(path):
            return  # ecgscan's own, or moved away meanwhile (another writer's swap)
        if found is not None:
            break
        time.sleep(0.05 * (attempt + 1))  # maybe caught in the middle of another writer's swap
    wanted = " or ".join(DESCRIPTION.get(k, k) for k in kinds) if kinds else "ecgscan output"
    if found is None:
        what = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else \
            "a file ecgscan did not write" if path.is_file() else "a special file"
    else:
        what = "an empty folder" if found == "empty" else _a(DESCRIPTION.get(found, found))
    raise EcgscanError(f"--overwrite: {path} is {what}, not {_a(wanted)}; refusing to replace it")


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


# ------------------------------------------------------------------ temporary names


def _temp_name(path: Path, what: str) -> Path:
    return path.with_name(f".{path.name}.{what}-{os.getpid()}-{_HOST}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove ``.NAME.partial-*`` / ``.NAME.old-*`` left next to ``path`` by dead processes of
    this host; an ``.old-*`` whose swap never finished is renamed back to ``path``.

    Temporaries of live processes, of other hosts or without a process id are kept.
    Returns what was removed or restored.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    done = []
    try:
        candidates = sorted(parent.glob(f".{_glob_escape(path.name)}.*-*"))
    except OSError:
        return done
    for p in candidates:
        m = _TEMP.match(p.name)
        if m is None or m["name"] != path.name or m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        try:
            if m["what"] == "old" and not os.path.lexists(path):
                os.rename(p, path)   # the previous output: its replacement never arrived
            else:
                _remove(p)
            done.append(p)
        except OSError:
            pass
    return done


def _glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


# ------------------------------------------------------------------ checks and writing


def check_output_path(path: str | os.PathLike, overwrite: bool = False,
                      kind: str | tuple[str, ...] | None = None) -> Path:
    """Validate an output path before any work starts: folder exists, no clobbering.

    ``kind`` says what will be written (see :data:`DESCRIPTION`); with ``overwrite`` an
    existing ``path`` must be that kind of ecgscan output (None: any ecgscan output).
    Stale temporaries of dead processes next to ``path`` are removed on the way.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise EcgscanError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise EcgscanError(f"output folder is not writable: {parent}")
    remove_stale_temporaries(path)
    if os.path.lexists(path):
        if not overwrite:
            raise EcgscanError(f"output exists: {path} (use --overwrite to replace it)")
        _check_replaceable(path, kind)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(exc: BaseException) -> bool:
    """A full disk (or quota), however it is wrapped: OSError, h5py's errors, safetensors'."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28," in text or "Disk quota exceeded" in text


def real_name(name: str | os.PathLike) -> str:
    """The output a temporary stands for (``dir/.x.h5.partial-…`` → ``dir/x.h5``)."""
    p = Path(name)
    m = _TEMP.match(p.name) or re.match(r"^\.(?P<name>.+)\.(partial|old)-[0-9a-f]{8}$", p.name)
    return str(p.with_name(m["name"])) if m else str(p)


class DiskFullError(EcgscanFailure, OSError):
    """A full disk while writing an output: one line for the user (exit 1), and still an
    OSError with errno ENOSPC for code that handles those (a checkpoint save)."""

    def __init__(self, path: str | os.PathLike):
        OSError.__init__(self, errno.ENOSPC, "No space left on device", real_name(path))
        self.message = f"no space left on device writing {real_name(path)}"

    def __str__(self) -> str:
        return self.message


def disk_full_error(path: str | os.PathLike) -> DiskFullError:
    return DiskFullError(path)


def _write_marker(folder: Path, kind: str) -> None:
    from ecgscan_cli import __version__

    (folder / MARKER).write_text(json.dumps({"kind": kind, "ecgscan_version": __version__}) + "\n")


def _swap_in(tmp: Path, path: Path, overwrite: bool, kind) -> None:
    """Rename ``tmp`` to ``path``; an existing folder is moved aside first, then removed.

    Concurrent writers of the same output each finish (the last rename wins); if our
    rename fails for another reason, the previous output is put back.
    """
    if not tmp.is_dir():
        if os.path.lexists(path) and not overwrite:
            raise EcgscanError(f"output exists: {path} (use --overwrite to replace it)")
        os.replace(tmp, path)   # a file: atomic whatever was there
        return
    olds: list[Path] = []
    try:
        for _attempt in range(20):
            if os.path.lexists(path):
                if not overwrite:  # appeared while we worked
                    raise EcgscanError(f"output exists: {path} (use --overwrite to replace it)")
                if not (path.is_dir() and not path.is_symlink()):  # a folder never replaces a file
                    if not os.path.lexists(path) or path.is_dir():
                        continue  # caught in the middle of another writer's swap: look again
                    raise EcgscanError(f"--overwrite: {path} is not a folder; refusing to replace it")
                old = _temp_name(path, "old")
                try:
                    os.rename(path, old)
                except FileNotFoundError:  # another writer moved it first: look again
                    continue
                olds.append(old)
            try:
                os.rename(tmp, path)
                return
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not os.path.lexists(path) and olds:
                    os.rename(olds.pop(), path)   # put the previous output back
                    raise
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # another writer's output arrived between our two renames: move it aside too
        raise EcgscanFailure(f"could not replace {path}: other processes keep writing it")
    finally:
        for old in olds:
            _remove(old)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False, directory: bool = False,
                  kind: str | tuple[str, ...] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    With ``directory=True`` the temporary path is created as an empty folder (holding
    ecgscan's marker for the kinds in :data:`MARKED_KINDS`). On any exception
    (KeyboardInterrupt and SIGTERM included) the temporary output is deleted and an
    existing ``path`` is left untouched; a full disk becomes one :class:`DiskFullError`.
    """
    path = check_output_path(path, overwrite, kind)
    tmp = _temp_name(path, "partial")
    try:
        if directory:
            tmp.mkdir()
            if isinstance(kind, str) and kind in MARKED_KINDS:
                _write_marker(tmp, kind)
        yield tmp
    except BaseException as e:
        _remove(tmp)
        if is_disk_full(e):
            raise disk_full_error(path) from None
        raise
    try:
        _swap_in(tmp, path, overwrite, kind)
    except BaseException as e:
        _remove(tmp)
        if is_disk_full(e):
            raise disk_full_error(path) from None
        raise


def temporary_name(path: str | os.PathLike, what: str = "partial") -> Path:
    """A unique hidden sibling of ``path`` (``.NAME.partial-PID-HOST-RAND``) for output written
    over a longer time than one ``with`` block (a training run); stale ones are removed by
    :func:`remove_stale_temporaries` once their process is gone."""
    return _temp_name(Path(path), what)


def swap_in(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Rename the finished ``tmp`` to ``path`` (an existing folder is moved aside, then removed)."""
    _swap_in(Path(tmp), Path(path), overwrite, None)
